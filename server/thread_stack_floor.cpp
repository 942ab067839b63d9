// SPDX-License-Identifier: Apache-2.0
//
// A floor under thread stack sizes, for the whole cpmd process.
//
// Debian's civetweb creates its threads with a fixed 100 KiB stack. glibc carves each thread's
// static TLS out of its stack, and a CUDA LibTorch process has more static TLS than that, so
// pthread_create fails with EINVAL and the /metrics endpoint cannot start ("Cannot create first
// worker thread"). This definition in the executable takes the place of libc's for every library
// in the process; it raises requests below the floor and passes the rest through unchanged. The
// memory is virtual until touched, so the larger reservation costs nothing.
#include <dlfcn.h>
#include <pthread.h>

#include <cstddef>

extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t size) noexcept {
  using Fn = int (*)(pthread_attr_t*, size_t);
  static const Fn libc_setstacksize =
      reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  constexpr size_t kFloor = size_t{4} << 20;
  return libc_setstacksize(attr, size < kFloor ? kFloor : size);
}
