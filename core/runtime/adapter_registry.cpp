// SPDX-License-Identifier: Apache-2.0
#include "runtime/adapter_registry.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace cpm::core::runtime {

const char* adapter_state_name(AdapterState state) {
  switch (state) {
    case AdapterState::kRegistered:
      return "REGISTERED";
    case AdapterState::kLoading:
      return "LOADING";
    case AdapterState::kLoaded:
      return "LOADED";
    case AdapterState::kFailed:
      return "FAILED";
  }
  return "?";
}

absl::Status check_adapter_name(const std::string& name) {
  const bool ok =
      !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '.' || c == '_' || c == '-';
      });
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("adapter name \"", name.substr(0, 80),
                                                 "\": use 1 to 64 characters of [A-Za-z0-9._-]"));
}

AdapterInfo* AdapterRegistry::find(const std::string& name) {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second.info;
}

const AdapterInfo* AdapterRegistry::find(const std::string& name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second.info;
}

AdapterInfo& AdapterRegistry::add(const std::string& name, const std::string& path) {
  Entry& e = entries_[name];
  e.info.name = name;
  e.info.path = path;
  e.info.register_time = std::chrono::system_clock::now();
  return e.info;
}

void AdapterRegistry::touch(const std::string& name, int64_t requests) {
  auto it = entries_.find(name);
  if (it == entries_.end()) return;
  it->second.last_use = ++use_clock_;
  it->second.info.last_used_time = std::chrono::system_clock::now();
  it->second.info.requests_served += requests;
}

void AdapterRegistry::mark_loaded(const std::string& name) {
  auto it = entries_.find(name);
  if (it != entries_.end()) it->second.last_use = ++use_clock_;
}

std::vector<AdapterInfo> AdapterRegistry::list() const {
  std::vector<AdapterInfo> out;
  for (const auto& [name, e] : entries_) out.push_back(e.info);
  return out;
}

int64_t AdapterRegistry::device_bytes_used() const {
  int64_t used = 0;
  for (const auto& [name, e] : entries_) used += e.info.device_bytes;
  return used;
}

absl::StatusOr<std::vector<std::string>> AdapterRegistry::plan_eviction(
    const std::string& name, int64_t needed,
    const std::function<bool(const std::string&)>& busy) const {
  if (budget_bytes_ <= 0) return std::vector<std::string>{};
  int64_t used = 0;
  std::vector<const Entry*> candidates;
  for (const auto& [other, e] : entries_) {
    if (other == name) continue;
    used += e.info.device_bytes;
    if (e.info.device_bytes > 0 && !e.info.pinned && !busy(other)) candidates.push_back(&e);
  }
  std::sort(candidates.begin(), candidates.end(),
            [](const Entry* a, const Entry* b) { return a->last_use < b->last_use; });
  std::vector<std::string> evict;
  for (const Entry* e : candidates) {
    if (used + needed <= budget_bytes_) break;
    used -= e->info.device_bytes;
    evict.push_back(e->info.name);
  }
  if (used + needed <= budget_bytes_) return evict;
  return absl::ResourceExhaustedError(
      absl::StrCat("adapter ", name, " needs ", needed, " device bytes but the adapter budget is ",
                   budget_bytes_, " and pinned or busy adapters hold ", used,
                   " (unload one, or raise the budget)"));
}

}  // namespace cpm::core::runtime
