// SPDX-License-Identifier: Apache-2.0
//
// What the engine knows about its LoRA adapters: names, folders, states, sizes, use, pinning, and
// the device-memory budget they share with its least-recently-used eviction. Bookkeeping only: the
// adapters' tensors live on the engine thread (runtime/engine.h), never here.
//
// States (the engine drives them):
//
//   (register) -> kRegistered --load--> kLoading --ok--> kLoaded --evict/unload--> kRegistered
//                                           |                 \--load of a new folder--> kLoading
//                                           \--error--> kFailed (no version on the device)
//                                           \--error, an older version on the device--> kLoaded
//
// While kLoading with device_bytes > 0, the previous version keeps serving; it is replaced only
// when the new one is on the device. Not thread-safe: the engine guards it with its mutex.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cpm::core::runtime {

enum class AdapterState {
  kRegistered,  // known (a PEFT folder), not on the device: never loaded, evicted or unloaded
  kLoading,     // a load is in progress
  kLoaded,      // on the device; requests can use it
  kFailed,      // the last load failed and no version is on the device; see AdapterInfo::error
};

// "REGISTERED", "LOADING", "LOADED", "FAILED".
const char* adapter_state_name(AdapterState state);

struct AdapterInfo {
  std::string name;
  std::string path;  // the PEFT folder of the version on the device, else the registered one
  AdapterState state = AdapterState::kRegistered;
  std::string loading_path;  // kLoading: the folder being loaded

  // From the version's adapter_config.json (zero / empty until first loaded).
  int64_t r = 0;
  double lora_alpha = 0;
  bool use_rslora = false;
  std::vector<std::string> target_modules;  // the module names that carry LoRA, resolved
  std::vector<std::string> modules_to_save;
  std::string base_model_name_or_path;

  int64_t size_bytes = 0;    // the PEFT files on disk
  int64_t device_bytes = 0;  // tensors of its own on the device (LoRA matrices, module copies)
  bool pinned = false;       // never evicted (unload still frees it)
  std::chrono::system_clock::time_point register_time{}, load_time{}, last_used_time{};
  std::chrono::nanoseconds load_duration{0};
  int64_t requests_served = 0;
  std::string error;  // why the last load failed; cleared by a successful one
};

// 1 to 64 characters of [A-Za-z0-9._-], else INVALID_ARGUMENT.
absl::Status check_adapter_name(const std::string& name);

class AdapterRegistry {
 public:
  // budget_bytes: what loaded adapters may hold on the device together; 0 means no limit.
  explicit AdapterRegistry(int64_t budget_bytes) : budget_bytes_(budget_bytes) {}

  // nullptr when unknown. Pointers stay valid until the adapter is erased.
  AdapterInfo* find(const std::string& name);
  const AdapterInfo* find(const std::string& name) const;
  // A new kRegistered entry. REQUIRES: find(name) == nullptr.
  AdapterInfo& add(const std::string& name, const std::string& path);
  // Records use by `requests` requests (least-recently-used order, last_used_time, count).
  void touch(const std::string& name, int64_t requests);
  // A version was just put on the device: it counts as the most recently used.
  void mark_loaded(const std::string& name);

  // In name order.
  std::vector<AdapterInfo> list() const;
  int64_t device_bytes_used() const;
  int64_t budget_bytes() const { return budget_bytes_; }

  // Which adapters to evict, least recently used first, so that `name` can hold `needed` bytes:
  // its own current version is not counted (the new one replaces it), pinned adapters and those
  // for which `busy` is true stay. RESOURCE_EXHAUSTED saying what holds the budget when even
  // evicting every candidate is not enough.
  absl::StatusOr<std::vector<std::string>> plan_eviction(
      const std::string& name, int64_t needed,
      const std::function<bool(const std::string&)>& busy) const;

 private:
  struct Entry {
    AdapterInfo info;
    uint64_t last_use = 0;  // a counter, so ordering does not depend on clock resolution
  };
  int64_t budget_bytes_;
  uint64_t use_clock_ = 0;
  std::map<std::string, Entry> entries_;
};

}  // namespace cpm::core::runtime
