// SPDX-License-Identifier: Apache-2.0
#include "adapters_command.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>

#include "cpm/v1/adapters.grpc.pb.h"
#include "output.h"
#include "common/sha256.h"

namespace cpmctl {
namespace {

namespace fs = std::filesystem;
using cpm::v1::Adapter;

const char* state_word(cpm::v1::AdapterState state) {
  switch (state) {
    case cpm::v1::ADAPTER_STATE_REGISTERED:
      return "registered";
    case cpm::v1::ADAPTER_STATE_LOADING:
      return "loading";
    case cpm::v1::ADAPTER_STATE_LOADED:
      return "loaded";
    case cpm::v1::ADAPTER_STATE_FAILED:
      return "failed";
    default:
      return "unknown";
  }
}

// "4m 12s ago", or "never" for an unset timestamp.
std::string ago(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "never";
  const int64_t s = std::max<int64_t>(0, std::time(nullptr) - t.seconds());
  return human_duration(s) + " ago";
}

std::string summary(const Adapter& a) {
  std::string line = a.name() + ": " + state_word(a.state());
  if (a.state() == cpm::v1::ADAPTER_STATE_LOADED) line += ", " + human_bytes(a.device_bytes()) + " on device";
  if (a.pinned()) line += ", pinned";
  if (!a.error().empty()) line += " (" + a.error() + ")";
  return line;
}

std::string details(const Adapter& a) {
  std::string out;
  auto row = [&out](const char* key, const std::string& value) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%-16s", key);
    out += buf + value + "\n";
  };
  row("name", a.name());
  row("state", state_word(a.state()));
  if (!a.error().empty()) row("error", a.error());
  row("path", a.path());
  if (!a.job_id().empty()) row("job", a.job_id());
  char buf[96];
  std::snprintf(buf, sizeof buf, "%d (alpha %g%s)", a.r(), a.lora_alpha(), a.use_rslora() ? ", rsLoRA" : "");
  row("r", buf);
  std::string modules;
  for (const auto& m : a.target_modules()) modules += (modules.empty() ? "" : ", ") + m;
  row("target modules", modules);
  std::string saved;
  for (const auto& m : a.modules_to_save()) saved += (saved.empty() ? "" : ", ") + m;
  row("modules to save", saved.empty() ? "none" : saved);
  row("base model", a.base_model_name_or_path());
  row("size", human_bytes(a.size_bytes()));
  row("device bytes", human_bytes(a.device_bytes()));
  row("pinned", a.pinned() ? "yes" : "no");
  row("registered", ago(a.register_time()));
  row("loaded", ago(a.load_time()));
  row("last used", ago(a.last_used_time()));
  row("requests", std::to_string(a.requests_served()));
  return out;
}

int run_list(const GlobalOptions& global) {
  const std::string& server = global.server;
  auto stub = make_stub<cpm::v1::Adapters>(global);
  if (!stub) return kExitUsage;
  cpm::v1::ListAdaptersResponse all;
  cpm::v1::ListAdaptersRequest request;
  request.mutable_page()->set_page_size(1000);
  do {
    cpm::v1::ListAdaptersResponse page;
    auto context = make_context(global);
    const grpc::Status status = stub->ListAdapters(context.get(), request, &page);
    if (!status.ok()) return report_error(status, server, "listing adapters");
    for (auto& a : *page.mutable_adapters()) *all.add_adapters() = std::move(a);
    all.set_device_bytes_used(page.device_bytes_used());
    all.set_device_bytes_budget(page.device_bytes_budget());
    request.mutable_page()->set_page_token(page.next_page_token());
  } while (!request.page().page_token().empty());
  if (global.json) {
    std::fputs(to_json(all).c_str(), stdout);
    return kExitOk;
  }
  std::printf("%-24s %-10s %4s %10s %12s %14s %s\n", "NAME", "STATE", "R", "SIZE", "DEVICE", "LAST USED",
              "PINNED");
  for (const auto& a : all.adapters()) {
    std::printf("%-24s %-10s %4d %10s %12s %14s %s\n", a.name().c_str(), state_word(a.state()), a.r(),
                human_bytes(a.size_bytes()).c_str(), human_bytes(a.device_bytes()).c_str(),
                ago(a.last_used_time()).c_str(), a.pinned() ? "yes" : "no");
  }
  std::printf("device memory: %s of %s used by adapters\n", human_bytes(all.device_bytes_used()).c_str(),
              human_bytes(all.device_bytes_budget()).c_str());
  return kExitOk;
}

// Load, unload or get: one call returning an Adapter.
template <typename Call>
int run_single(const GlobalOptions& global, const std::string& what, bool detailed, Call call) {
  const std::string& server = global.server;
  auto stub = make_stub<cpm::v1::Adapters>(global);
  if (!stub) return kExitUsage;
  Adapter adapter;
  auto context = make_context(global);
  const grpc::Status status = call(*stub, context.get(), &adapter);
  if (!status.ok()) return report_error(status, server, what);
  if (global.json) {
    std::fputs(to_json(adapter).c_str(), stdout);
  } else {
    std::fputs(detailed ? details(adapter).c_str() : (summary(adapter) + "\n").c_str(), stdout);
  }
  return kExitOk;
}

// A path the server sent, checked to stay inside the export folder.
bool safe_relative(const std::string& path) {
  if (path.empty() || path[0] == '/') return false;
  for (const auto& part : fs::path(path)) {
    if (part == ".." || part == ".") return false;
  }
  return true;
}

int fail_export(const std::string& tmp, const std::string& message) {
  std::error_code ec;
  fs::remove_all(tmp, ec);
  std::fprintf(stderr, "cpmctl: export failed: %s\n", message.c_str());
  return kExitServerError;
}

// Streams the files into a fresh folder beside DIR, checks sizes and SHA-256, then renames it to
// DIR: DIR is either complete or absent.
int run_export(const GlobalOptions& global, const AdapterOptions& options) {
  const std::string& server = global.server;
  auto stub = make_stub<cpm::v1::Adapters>(global);
  if (!stub) return kExitUsage;
  const fs::path out = fs::path(options.out_dir).lexically_normal();
  std::error_code ec;
  if (fs::exists(out, ec) && !(fs::is_directory(out, ec) && fs::is_empty(out, ec))) {
    std::fprintf(stderr, "cpmctl: %s exists; export writes a new folder\n", out.c_str());
    return kExitUsage;
  }
  fs::path parent = out.parent_path();
  if (parent.empty()) parent = ".";
  std::string pattern = (parent / ("." + out.filename().string() + ".tmp-XXXXXX")).string();
  if (mkdtemp(pattern.data()) == nullptr) {
    std::fprintf(stderr, "cpmctl: cannot create a folder in %s: %s\n", parent.c_str(), std::strerror(errno));
    return kExitUsage;
  }
  const std::string tmp = pattern;

  auto context = make_stream_context(global);  // an adapter may be gigabytes
  cpm::v1::ExportAdapterRequest request;
  request.set_name(options.target);
  auto reader = stub->ExportAdapter(context.get(), request);

  struct Pending {
    cpm::v1::FileInfo info;
    std::unique_ptr<std::ofstream> out;
    std::unique_ptr<cpm::core::Sha256> hash;
    int64_t written = 0;
  };
  std::optional<Pending> current;
  int files = 0;
  int64_t bytes = 0;
  auto finish_file = [&]() -> std::string {
    if (!current) return "";
    current->out->close();
    if (!*current->out) return "cannot write " + current->info.path();
    if (current->written != current->info.size_bytes()) {
      return current->info.path() + ": got " + std::to_string(current->written) + " bytes, announced " +
             std::to_string(current->info.size_bytes());
    }
    const std::string digest = current->hash->hex_digest();
    if (digest != current->info.sha256()) {
      return current->info.path() + ": SHA-256 " + digest + " does not match the server's " +
             current->info.sha256();
    }
    ++files;
    bytes += current->written;
    current.reset();
    return "";
  };
  cpm::v1::ExportAdapterResponse part;
  std::string error;
  while (error.empty() && reader->Read(&part)) {
    if (part.has_file()) {
      error = finish_file();
      if (!error.empty()) break;
      if (!safe_relative(part.file().path())) {
        error = "the server sent an unsafe path " + part.file().path();
        break;
      }
      const fs::path target = fs::path(tmp) / part.file().path();
      fs::create_directories(target.parent_path(), ec);
      current.emplace();
      current->info = part.file();
      current->out = std::make_unique<std::ofstream>(target, std::ios::binary | std::ios::trunc);
      current->hash = std::make_unique<cpm::core::Sha256>();
      if (!*current->out) error = "cannot create " + target.string();
    } else if (part.has_chunk()) {
      const auto& chunk = part.chunk();
      if (!current || chunk.path() != current->info.path() || chunk.offset() != current->written) {
        error = "out-of-order chunk for " + chunk.path() + " at offset " + std::to_string(chunk.offset());
        break;
      }
      current->out->write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
      current->hash->update(chunk.data());
      current->written += static_cast<int64_t>(chunk.data().size());
    }
  }
  if (!error.empty()) {
    context->TryCancel();
    reader->Finish();
    return fail_export(tmp, error);
  }
  const grpc::Status status = reader->Finish();
  if (!status.ok()) {
    fs::remove_all(tmp, ec);
    return report_error(status, server, "export of " + options.target);
  }
  error = finish_file();
  if (!error.empty()) return fail_export(tmp, error);
  if (files == 0) return fail_export(tmp, "the server sent no files");
  if (fs::exists(out, ec)) fs::remove(out, ec);  // the empty folder checked above
  fs::rename(tmp, out, ec);
  if (ec) return fail_export(tmp, "cannot rename to " + out.string() + ": " + ec.message());
  if (global.json) {
    std::printf("{\"adapter\": \"%s\", \"dir\": \"%s\", \"files\": %d, \"bytes\": %lld}\n",
                options.target.c_str(), out.c_str(), files, static_cast<long long>(bytes));
  } else {
    std::printf("exported %s to %s (%d files, %s, SHA-256 verified)\n", options.target.c_str(), out.c_str(),
                files, human_bytes(bytes).c_str());
  }
  return kExitOk;
}

}  // namespace

AdapterCommands add_adapter_commands(CLI::App& app, AdapterOptions& o) {
  AdapterCommands c;
  c.list = app.add_subcommand("adapters", "List the adapters cpmd knows: state, rank, sizes, use");
  c.list->footer("Example: cpmctl adapters --json");

  CLI::App* adapter = app.add_subcommand("adapter", "Load, unload, inspect or export one adapter");
  adapter->require_subcommand(1);
  adapter->footer("Example: cpmctl adapter load runs/latex-r64 --name latex --pin");

  c.load = adapter->add_subcommand(
      "load", "Load an adapter onto the device: a registered NAME, or a PEFT folder PATH (with a '/') "
              "under cpmd's adapter roots, registered under --name or its last component");
  c.load->add_option("adapter", o.target, "NAME or PATH")->required();
  c.load->add_option("--name", o.name, "name to register a PATH under");
  c.load->add_flag("--pin", o.pin, "never evict it (until unloaded)");
  c.load->footer("Examples:\n  cpmctl adapter load latex --pin\n  cpmctl adapter load ./latex-r64 --name latex");

  c.unload = adapter->add_subcommand("unload", "Free an adapter's device memory (it stays registered)");
  c.unload->add_option("name", o.target, "adapter name")->required();
  c.unload->footer("Example: cpmctl adapter unload latex");

  c.get = adapter->add_subcommand("get", "Details of one adapter");
  c.get->add_option("name", o.target, "adapter name")->required();
  c.get->footer("Example: cpmctl adapter get latex --json");

  c.export_ = adapter->add_subcommand(
      "export", "Download an adapter's PEFT files into a new folder (SHA-256 checked, written atomically)");
  c.export_->add_option("name", o.target, "adapter name")->required();
  c.export_->add_option("-o,--out", o.out_dir, "folder to create (must not exist, or be empty)")->required();
  c.export_->footer("Example: cpmctl adapter export latex -o ./latex-adapter");
  return c;
}

int run_adapter_command(const GlobalOptions& global, const AdapterCommands& c, const AdapterOptions& o) {
  if (c.list->parsed()) return run_list(global);
  if (c.load->parsed()) {
    cpm::v1::LoadAdapterRequest request;
    const bool is_path = o.target.find('/') != std::string::npos;
    if (is_path) {
      request.set_path(o.target);
      std::string name = o.name;
      if (name.empty()) name = fs::path(o.target).lexically_normal().filename().string();
      if (name.empty()) name = fs::path(o.target).lexically_normal().parent_path().filename().string();
      request.set_name(name);
    } else {
      if (!o.name.empty() && o.name != o.target) {
        std::fprintf(stderr, "cpmctl: --name is for loading a PATH (write it with a '/', e.g. ./%s)\n",
                     o.target.c_str());
        return kExitUsage;
      }
      request.set_name(o.target);
    }
    request.set_pin(o.pin);
    return run_single(global, "load of " + o.target, false,
                      [&](cpm::v1::Adapters::Stub& s, grpc::ClientContext* ctx, Adapter* a) {
                        return s.LoadAdapter(ctx, request, a);
                      });
  }
  if (c.unload->parsed()) {
    cpm::v1::UnloadAdapterRequest request;
    request.set_name(o.target);
    return run_single(global, "unload of " + o.target, false,
                      [&](cpm::v1::Adapters::Stub& s, grpc::ClientContext* ctx, Adapter* a) {
                        return s.UnloadAdapter(ctx, request, a);
                      });
  }
  if (c.get->parsed()) {
    cpm::v1::GetAdapterRequest request;
    request.set_name(o.target);
    return run_single(global, "get of " + o.target, true,
                      [&](cpm::v1::Adapters::Stub& s, grpc::ClientContext* ctx, Adapter* a) {
                        return s.GetAdapter(ctx, request, a);
                      });
  }
  if (c.export_->parsed()) return run_export(global, o);
  return kExitUsage;
}

}  // namespace cpmctl
