// SPDX-License-Identifier: Apache-2.0
#include "yaml_json.h"

#include <yaml-cpp/yaml.h>

#include <cstdlib>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace cpmctl {
namespace {

using Json = nlohmann::ordered_json;

Json scalar(const YAML::Node& node) {
  const std::string& text = node.Scalar();
  if (node.Tag() == "!") return text;  // quoted: a string whatever it reads like
  const std::string lower = absl::AsciiStrToLower(text);
  if (lower == "true" || lower == "yes" || lower == "on") return true;
  if (lower == "false" || lower == "no" || lower == "off") return false;
  if (lower == "null" || lower == "~" || text.empty()) return nullptr;
  char* end = nullptr;
  const long long integer = std::strtoll(text.c_str(), &end, 10);
  if (end != text.c_str() && *end == '\0') return integer;
  const double number = std::strtod(text.c_str(), &end);
  if (end != text.c_str() && *end == '\0') return number;
  return text;
}

Json convert(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map: {
      Json j = Json::object();
      for (const auto& kv : node) j[kv.first.as<std::string>()] = convert(kv.second);
      return j;
    }
    case YAML::NodeType::Sequence: {
      Json j = Json::array();
      for (const auto& item : node) j.push_back(convert(item));
      return j;
    }
    case YAML::NodeType::Scalar:
      return scalar(node);
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
  }
  return nullptr;
}

}  // namespace

absl::StatusOr<std::string> yaml_to_json(const std::string& yaml) {
  try {
    return convert(YAML::Load(yaml)).dump();
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("not valid YAML: ", e.what()));
  }
}

}  // namespace cpmctl
