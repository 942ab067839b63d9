// SPDX-License-Identifier: Apache-2.0
#include "ocr_command.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <mutex>
#include <sstream>
#include <thread>

#include "cpm/v1/ocr.grpc.pb.h"
#include "grpc_code_name.h"
#include "train/latex_metrics.h"

namespace cpmctl {
namespace {

namespace fs = std::filesystem;

// One image to recognize: where it came from and, with --eval, its reference text.
struct Input {
  std::string name;
  std::string bytes;
  std::string reference;
};

struct Result {
  grpc::Status status;
  cpm::v1::RecognizeResponse response;
};

bool is_image_name(const fs::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".webp" || ext == ".bmp" ||
         ext == ".tif" || ext == ".tiff";
}

bool read_file(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  out->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return !in.bad();
}

// Splits one CSV file into rows, RFC 4180 style: quoted fields may hold commas, quotes ("") and
// newlines.
std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false;
  bool any = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field += c;
      }
    } else if (c == '"') {
      quoted = true;
      any = true;
    } else if (c == ',') {
      row.push_back(std::move(field));
      field.clear();
      any = true;
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      if (any || !field.empty()) row.push_back(std::move(field));
      if (!row.empty()) rows.push_back(std::move(row));
      row.clear();
      field.clear();
      any = false;
    } else {
      field += c;
      any = true;
    }
  }
  if (any || !field.empty()) row.push_back(std::move(field));
  if (!row.empty()) rows.push_back(std::move(row));
  return rows;
}

// The images to recognize, or an error line. Directories give their images sorted by name.
bool collect_inputs(const OcrOptions& options, std::vector<Input>* inputs, std::string* error) {
  if (!options.eval_labels.empty()) {
    std::string text;
    if (!read_file(options.eval_labels, &text)) {
      *error = "cannot read " + options.eval_labels;
      return false;
    }
    const auto rows = parse_csv(text);
    const fs::path base = fs::path(options.eval_labels).parent_path();
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto& row = rows[i];
      if (i == 0 && row.size() >= 2 && row[0] == "image_path") continue;  // header
      if (row.size() != 2) {
        *error = options.eval_labels + ": row " + std::to_string(i + 1) + " has " +
                 std::to_string(row.size()) + " fields, want image_path,text";
        return false;
      }
      fs::path image = row[0];
      if (image.is_relative()) image = base / image;
      Input input{row[0], "", row[1]};
      if (!read_file(image.string(), &input.bytes)) {
        *error = options.eval_labels + ": cannot read image " + image.string();
        return false;
      }
      inputs->push_back(std::move(input));
    }
    if (inputs->empty()) {
      *error = options.eval_labels + " has no labels";
      return false;
    }
    return true;
  }
  for (const std::string& arg : options.inputs) {
    if (arg == "-") {
      if (options.inputs.size() != 1) {
        *error = "'-' (an image on stdin) cannot be combined with other inputs";
        return false;
      }
      std::ostringstream buffer;
      buffer << std::cin.rdbuf();
      inputs->push_back({"-", buffer.str(), ""});
      return true;
    }
    std::error_code ec;
    if (fs::is_directory(arg, ec)) {
      std::vector<fs::path> images;
      for (const auto& entry : fs::directory_iterator(arg, ec)) {
        if (entry.is_regular_file() && is_image_name(entry.path())) images.push_back(entry.path());
      }
      std::sort(images.begin(), images.end());
      if (images.empty()) {
        *error = arg + " holds no images (.png, .jpg, .jpeg, .webp, .bmp, .tif, .tiff)";
        return false;
      }
      for (const auto& image : images) {
        Input input{image.string(), "", ""};
        if (!read_file(image.string(), &input.bytes)) {
          *error = "cannot read " + image.string();
          return false;
        }
        inputs->push_back(std::move(input));
      }
      continue;
    }
    Input input{arg, "", ""};
    if (!read_file(arg, &input.bytes)) {
      *error = "cannot read " + arg + ": " + (fs::exists(arg, ec) ? "permission denied" : "no such file");
      return false;
    }
    inputs->push_back(std::move(input));
  }
  return true;
}

cpm::v1::RecognizeRequest make_request(const OcrOptions& options, const std::string& image) {
  cpm::v1::RecognizeRequest request;
  request.set_image(image);
  request.set_adapter(options.adapter);
  if (options.prompt) request.set_prompt(*options.prompt);
  auto* d = request.mutable_decoding();
  if (options.sample) {
    d->set_strategy(cpm::v1::DECODING_STRATEGY_SAMPLING);
  } else if (options.num_beams) {
    d->set_strategy(cpm::v1::DECODING_STRATEGY_BEAM);
  }
  if (options.max_new_tokens) d->set_max_new_tokens(*options.max_new_tokens);
  if (options.temperature) d->set_temperature(*options.temperature);
  if (options.top_k) d->set_top_k(*options.top_k);
  if (options.top_p) d->set_top_p(*options.top_p);
  if (options.seed) d->set_seed(*options.seed);
  if (options.num_beams) d->set_num_beams(*options.num_beams);
  if (options.repetition_penalty) d->set_repetition_penalty(*options.repetition_penalty);
  return request;
}

double millis(const google::protobuf::Duration& d) { return d.seconds() * 1e3 + d.nanos() / 1e6; }

const char* finish_reason_word(cpm::v1::FinishReason reason) {
  switch (reason) {
    case cpm::v1::FINISH_REASON_STOP:
      return "stop";
    case cpm::v1::FINISH_REASON_LENGTH:
      return "length";
    default:
      return "unspecified";
  }
}

// One line of JSON for one image.
std::string json_line(const std::string& file, const cpm::v1::RecognizeResponse& r) {
  const auto& t = r.timings();
  nlohmann::json j = {
      {"file", file},
      {"text", r.text()},
      {"adapter", r.adapter()},
      {"prompt_tokens", r.prompt_tokens()},
      {"completion_tokens", r.completion_tokens()},
      {"finish_reason", finish_reason_word(r.finish_reason())},
      {"num_image_slices", r.num_image_slices()},
      {"batch_size", r.batch_size()},
      {"timings_ms",
       {{"queue", millis(t.queue())},
        {"prefill", millis(t.prefill())},
        {"decode", millis(t.decode())},
        {"total", millis(t.total())}}},
  };
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// The plain output is one line per image: newlines in the answer become spaces.
std::string one_line(std::string text) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  return text;
}

bool unreachable(const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::UNAVAILABLE;
}

int run_stream(const GlobalOptions& global, const OcrOptions& options, const Input& input) {
  const std::string& server = global.server;
  auto stub = make_stub<cpm::v1::Ocr>(global);
  if (!stub) return kExitUsage;
  auto context = make_context(global);
  auto reader = stub->RecognizeStream(context.get(), make_request(options, input.bytes));
  cpm::v1::RecognizeStreamResponse part;
  cpm::v1::RecognizeResponse done;
  bool printed = false;
  while (reader->Read(&part)) {
    if (part.has_delta() && !global.json) {
      std::fputs(one_line(part.delta().text()).c_str(), stdout);
      std::fflush(stdout);
      printed = true;
    } else if (part.has_done()) {
      done = part.done();
    }
  }
  const grpc::Status status = reader->Finish();
  if (printed) std::fputc('\n', stdout);
  if (!status.ok()) return report_error(status, server, "ocr of " + input.name);
  if (global.json) std::printf("%s\n", json_line(input.name, done).c_str());
  return kExitOk;
}

}  // namespace

CLI::App* add_ocr_command(CLI::App& app, OcrOptions& o) {
  CLI::App* cmd = app.add_subcommand("ocr", "Recognize LaTeX in images (files, a folder, or - for stdin)");
  cmd->add_option("inputs", o.inputs, "image files, one folder (its images, sorted), or - (stdin)");
  cmd->add_option("--adapter", o.adapter, "registered adapter to apply (default: the base model)");
  cmd->add_option("--prompt", o.prompt, "question sent with the image (default: the recipe's)");
  cmd->add_option("--max-new-tokens", o.max_new_tokens, "most tokens to generate (default 2048)")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--sample", o.sample, "sample (temperature, top-k, top-p) instead of greedy");
  cmd->add_option("--temperature", o.temperature, "sampling temperature (default 0.7)");
  cmd->add_option("--top-k", o.top_k, "sampling top-k (default 100)");
  cmd->add_option("--top-p", o.top_p, "sampling top-p (default 0.8)");
  cmd->add_option("--seed", o.seed, "sampling seed, for reproducible samples");
  cmd->add_option("--num-beams", o.num_beams, "beam search with this many beams")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--repetition-penalty", o.repetition_penalty,
                  "penalty on generated tokens (greedy default 1.0: off)");
  cmd->add_flag("--stream", o.stream, "print the text as it is produced (one image only)");
  cmd->add_option("--concurrency", o.concurrency, "requests in flight for many images (default 1)")
      ->check(CLI::Range(1, 256));
  cmd->add_option("--eval", o.eval_labels,
                  "image_path,text CSV (paths relative to it): recognize its images and report exact "
                  "match, normalized edit distance and BLEU-4 over LaTeX tokens");
  cmd->footer(
      "Output: one LaTeX line per image, as FILE<TAB>LATEX when there are several; --json gives one "
      "JSON object per line (text, tokens, finish reason, timings in ms, adapter).\n"
      "Examples:\n"
      "  cpmctl ocr formula.png\n"
      "  cpmctl ocr --adapter mine --concurrency 8 --json images/ > out.jsonl\n"
      "  cat formula.png | cpmctl ocr --stream -\n"
      "  cpmctl ocr --eval val/labels.csv --adapter mine");
  return cmd;
}

int run_ocr(const GlobalOptions& global, const OcrOptions& options) {
  if (options.inputs.empty() == options.eval_labels.empty()) {
    std::fprintf(stderr, "cpmctl: ocr needs image files, a folder or - (or --eval LABELS.csv alone); "
                         "see cpmctl ocr --help\n");
    return kExitUsage;
  }
  if (options.sample && options.num_beams) {
    std::fprintf(stderr, "cpmctl: --sample and --num-beams exclude each other\n");
    return kExitUsage;
  }
  std::vector<Input> inputs;
  std::string error;
  if (!collect_inputs(options, &inputs, &error)) {
    std::fprintf(stderr, "cpmctl: %s\n", error.c_str());
    return kExitUsage;
  }
  if (options.stream) {
    if (inputs.size() != 1 || !options.eval_labels.empty()) {
      std::fprintf(stderr, "cpmctl: --stream takes exactly one image\n");
      return kExitUsage;
    }
    return run_stream(global, options, inputs[0]);
  }

  const std::string& server = global.server;
  auto stub = make_stub<cpm::v1::Ocr>(global);
  if (!stub) return kExitUsage;
  std::vector<Result> results(inputs.size());
  std::vector<bool> finished(inputs.size(), false);
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<size_t> next{0};
  std::atomic<bool> stop{false};  // the daemon is unreachable: do not try the rest
  // Every index is claimed once; after an unreachable daemon the rest are skipped, not sent.
  auto worker = [&] {
    for (size_t i; (i = next++) < inputs.size();) {
      Result result;
      if (stop) {
        result.status = grpc::Status(grpc::StatusCode::UNAVAILABLE, "skipped");
      } else {
        auto context = make_context(global);
        result.status = stub->Recognize(context.get(), make_request(options, inputs[i].bytes),
                                        &result.response);
        if (unreachable(result.status)) stop = true;
      }
      std::lock_guard<std::mutex> lock(mu);
      results[i] = std::move(result);
      finished[i] = true;
      cv.notify_all();
    }
  };
  const size_t n_threads = std::min<size_t>(options.concurrency, inputs.size());
  std::vector<std::thread> threads;
  for (size_t t = 0; t < n_threads; ++t) threads.emplace_back(worker);

  // Print in input order as results arrive.
  const bool eval = !options.eval_labels.empty();
  const bool prefix = inputs.size() > 1;
  int exit_code = kExitOk;
  std::vector<std::string> predictions, references;
  for (size_t i = 0; i < inputs.size(); ++i) {
    Result result;
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return finished[i]; });
      result = std::move(results[i]);
    }
    if (!result.status.ok()) {
      const int rc = report_error(result.status, server, "ocr of " + inputs[i].name);
      exit_code = std::max(exit_code, rc);
      if (rc == kExitUnreachable) break;
      continue;
    }
    if (eval) {
      predictions.push_back(result.response.text());
      references.push_back(inputs[i].reference);
    } else if (global.json) {
      std::printf("%s\n", json_line(inputs[i].name, result.response).c_str());
    } else if (prefix) {
      std::printf("%s\t%s\n", inputs[i].name.c_str(), one_line(result.response.text()).c_str());
    } else {
      std::printf("%s\n", one_line(result.response.text()).c_str());
    }
    std::fflush(stdout);
  }
  stop = true;  // after a break: skip what is left
  for (auto& t : threads) t.join();
  if (eval && exit_code == kExitOk) {
    auto metrics = cpm::core::train::latex_metrics(predictions, references);
    if (!metrics.ok()) {
      std::fprintf(stderr, "cpmctl: eval: %s\n", std::string(metrics.status().message()).c_str());
      return kExitUsage;
    }
    if (global.json) {
      nlohmann::json j = {{"count", metrics->count},
                          {"exact_match", metrics->exact_match},
                          {"normalized_edit_distance", metrics->normalized_edit_distance},
                          {"bleu4", metrics->bleu4},
                          {"adapter", options.adapter}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("count %lld  exact_match %.4f  normalized_edit_distance %.4f  bleu4 %.4f\n",
                  static_cast<long long>(metrics->count), metrics->exact_match,
                  metrics->normalized_edit_distance, metrics->bleu4);
    }
  }
  return exit_code;
}

}  // namespace cpmctl
