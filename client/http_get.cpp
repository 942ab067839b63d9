// SPDX-License-Identifier: Apache-2.0
#include "http_get.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace cpmctl {
namespace {

using Clock = std::chrono::steady_clock;

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::max<int64_t>(0, left.count()));
}

// Waits until `fd` is ready for `events`; false on timeout or error.
bool wait_for(int fd, short events, Clock::time_point deadline) {
  pollfd p{fd, events, 0};
  int rc;
  do {
    rc = poll(&p, 1, remaining_ms(deadline));
  } while (rc < 0 && errno == EINTR);
  return rc > 0;
}

// A connected non-blocking socket, or -1 with `error` set.
int connect_to(const std::string& host, const std::string& port, Clock::time_point deadline,
               std::string* error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    *error = absl::StrCat("cannot resolve ", host, ": ", gai_strerror(rc));
    return -1;
  }
  int fd = -1;
  for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    if (connect(fd, a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
      *error = std::strerror(errno);
      close(fd);
      fd = -1;
      continue;
    }
    int so_error = 0;
    socklen_t len = sizeof so_error;
    if (!wait_for(fd, POLLOUT, deadline) || getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) != 0 ||
        so_error != 0) {
      *error = so_error != 0 ? std::strerror(so_error) : "timed out";
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(found);
  return fd;
}

}  // namespace

absl::Status split_host_port(const std::string& address, std::string* host, std::string* port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size()) {
    return absl::InvalidArgumentError(absl::StrCat("'", address, "' is not HOST:PORT"));
  }
  *host = address.substr(0, colon);
  *port = address.substr(colon + 1);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') *host = host->substr(1, host->size() - 2);
  return absl::OkStatus();
}

absl::StatusOr<std::string> http_get(const std::string& address, const std::string& path,
                                     const std::string& bearer, double timeout_seconds) {
  std::string host, port;
  if (absl::Status s = split_host_port(address, &host, &port); !s.ok()) return s;
  const auto deadline =
      Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000));
  std::string error;
  const int fd = connect_to(host, port, deadline, &error);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("http://", address, path, ": ", error));

  std::string request = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", address,
                                     "\r\nAccept: text/plain\r\nConnection: close\r\n");
  if (!bearer.empty()) absl::StrAppend(&request, "Authorization: Bearer ", bearer, "\r\n");
  request += "\r\n";
  std::string response;
  bool ok = true;
  for (size_t sent = 0; ok && sent < request.size();) {
    ok = wait_for(fd, POLLOUT, deadline);
    const ssize_t n = ok ? send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL) : -1;
    if (n > 0) sent += static_cast<size_t>(n);
    else if (n < 0 && errno != EAGAIN) ok = false;
  }
  char buffer[65536];
  while (ok) {
    ok = wait_for(fd, POLLIN, deadline);
    const ssize_t n = ok ? recv(fd, buffer, sizeof buffer, 0) : -1;
    if (n == 0) break;
    if (n > 0) response.append(buffer, static_cast<size_t>(n));
    else if (errno != EAGAIN) ok = false;
  }
  close(fd);
  if (!ok) return absl::UnavailableError(absl::StrCat("http://", address, path, ": no complete answer"));
  const size_t header_end = response.find("\r\n\r\n");
  const std::string status_line = response.substr(0, response.find("\r\n"));
  if (header_end == std::string::npos || status_line.find(" 200") == std::string::npos) {
    return absl::InternalError(absl::StrCat("http://", address, path, " answered '", status_line, "'"));
  }
  return response.substr(header_end + 4);
}

}  // namespace cpmctl
