// SPDX-License-Identifier: Apache-2.0
#include "runtime/engine.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/guard.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "model/adapter.h"
#include "runtime/ocr_batch.h"
#include "runtime/text_stream.h"
#include "serve/answer_text.h"
#include "train/dataset.h"

namespace cpm::core::runtime {
namespace {

using std::chrono::nanoseconds;

std::vector<int32_t> stop_ids_of(const model::LoadedModel& m) {
  std::vector<int32_t> ids(m.configs.generation.eos_token_ids.begin(),
                           m.configs.generation.eos_token_ids.end());
  if (!ids.empty()) return ids;
  for (const char* stop : {"<|im_end|>", "<|endoftext|>"}) {
    if (const auto id = m.tokenizer->token_to_id(stop)) ids.push_back(*id);
  }
  return ids;
}

// Bytes of the PEFT files directly in `dir`.
int64_t folder_bytes(const std::string& dir) {
  int64_t bytes = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.is_regular_file(ec)) bytes += static_cast<int64_t>(entry.file_size(ec));
  }
  return bytes;
}

// Device bytes `adapter` will take once applied (model/adapter.h): LoRA matrices in `precision`,
// module copies in the base's dtype.
int64_t device_bytes_needed(const model::Parameters& base, const io::PeftAdapter& adapter,
                            model::LoraPrecision precision) {
  const int64_t model_element =
      static_cast<int64_t>(base.get("llm.model.embed_tokens.weight").element_size());
  const int64_t lora_element = precision == model::LoraPrecision::kFloat32 ? 4 : model_element;
  int64_t bytes = 0;
  for (const auto& [key, t] : adapter.tensors) {
    const bool lora =
        key.find(".lora_A.") != std::string::npos || key.find(".lora_B.") != std::string::npos;
    const int64_t copy_element =
        static_cast<int64_t>(base.contains(key) ? base.get(key).element_size() : t.element_size());
    bytes += t.numel() * (lora ? lora_element : copy_element);
  }
  return bytes;
}

void describe(AdapterInfo& info, const io::PeftLoraConfig& config,
              std::vector<std::string> targets) {
  info.r = config.r;
  info.lora_alpha = config.lora_alpha;
  info.use_rslora = config.use_rslora;
  info.target_modules = std::move(targets);
  info.modules_to_save = config.modules_to_save;
  info.base_model_name_or_path = config.base_model_name_or_path;
}

}  // namespace

struct Engine::Pending {
  uint64_t id = 0;
  OcrRequest request;  // the image bytes are dropped once prepared
  OcrCallback done;
  ResolvedDecoding decoding;
  OcrInput input;
  Clock::time_point arrival;
  Clock::time_point ready;     // when it entered the queue
  nanoseconds preparation{0};  // decoding, slicing, prompt
  nanoseconds time_to_first_token{0};
};

Engine::Engine(std::unique_ptr<model::LoadedModel> model, EngineOptions options)
    : model_(std::move(model)),
      options_(std::move(options)),
      device_(model_->params.get("llm.model.embed_tokens.weight").device()),
      stop_ids_(stop_ids_of(*model_)),
      lifeline_(std::make_shared<Lifeline>()),
      registry_(options_.adapter_budget_bytes),
      mixer_(model_->model->llm()) {
  lifeline_->engine = this;
}

Engine::~Engine() {
  stop(StopMode::kFailQueued);
  std::unique_lock<std::mutex> lock(lifeline_->mu);
  lifeline_->engine = nullptr;
  lifeline_->idle.wait(lock, [this] { return lifeline_->active == 0; });
}

absl::Status Engine::start() {
  std::lock_guard<std::mutex> stopping(stop_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ != EngineState::kCreated)
      return absl::FailedPreconditionError("engine: already started");
  }
  // The pool exists before any request can be admitted; it goes only after the engine stopped.
  pool_ = std::make_unique<WorkerPool>(options_.prepare_threads);
  {
    std::lock_guard<std::mutex> lock(mu_);
    state_ = EngineState::kRunning;
  }
  thread_ = std::thread([this] { loop(); });
  return absl::OkStatus();
}

void Engine::stop(StopMode mode) {
  std::lock_guard<std::mutex> stopping(stop_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ == EngineState::kStopped) return;
    if (state_ == EngineState::kCreated) {
      state_ = EngineState::kStopped;
      return;
    }
    state_ = EngineState::kStopping;
    drain_ = mode == StopMode::kDrain;
    ++changes_;
  }
  cv_.notify_all();
  thread_.join();
  // Requests still being prepared find the engine stopped and fail with UNAVAILABLE.
  pool_.reset();
}

bool Engine::accepting_locked() const { return state_ == EngineState::kRunning; }

// ---- OCR requests -------------------------------------------------------------------------------

std::future<absl::StatusOr<OcrResult>> Engine::submit(OcrRequest request) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<OcrResult>>>();
  auto future = promise->get_future();
  submit(std::move(request),
         [promise](absl::StatusOr<OcrResult> result) { promise->set_value(std::move(result)); });
  return future;
}

void Engine::submit(OcrRequest request, OcrCallback done) {
  auto p = std::make_unique<Pending>();
  p->arrival = Clock::now();
  p->request = std::move(request);
  p->done = std::move(done);
  const std::string& adapter = p->request.adapter;
  auto decoding =
      resolve_decoding(p->request.decoding, model_->configs.generation, options_.decoding);
  if (!decoding.ok()) return finish(std::move(p), decoding.status());
  p->decoding = *decoding;
  if (!adapter.empty()) {
    if (absl::Status s = check_adapter_name(adapter); !s.ok()) return finish(std::move(p), s);
  }
  if (p->request.cancellation && p->request.cancellation->cancelled()) {
    return finish(std::move(p), absl::CancelledError("request cancelled before it was queued"));
  }
  if (p->request.deadline && *p->request.deadline <= p->arrival) {
    return finish(std::move(p),
                  absl::DeadlineExceededError("deadline passed before the request was queued"));
  }
  absl::Status refused;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const AdapterInfo* info = adapter.empty() ? nullptr : registry_.find(adapter);
    const int64_t waiting = preparing_ + static_cast<int64_t>(queue_.size());
    if (!accepting_locked()) {
      refused = absl::UnavailableError("engine: not serving (not started, or shutting down)");
    } else if (!adapter.empty() && info == nullptr) {
      refused = absl::NotFoundError(absl::StrCat("adapter ", adapter, " is not registered"));
    } else if (info != nullptr && info->state == AdapterState::kFailed) {
      refused = absl::FailedPreconditionError(
          absl::StrCat("adapter ", adapter, " failed to load: ", info->error));
    } else if (info != nullptr && info->state == AdapterState::kRegistered &&
               !options_.load_adapters_on_demand) {
      refused = absl::FailedPreconditionError(
          absl::StrCat("adapter ", adapter, " is not loaded; load it first"));
    } else if (waiting >= options_.max_queue) {
      refused = absl::ResourceExhaustedError(absl::StrCat("OCR queue full: ", waiting,
                                                          " requests waiting (limit ",
                                                          options_.max_queue, "); retry later"));
    } else {
      ++preparing_;
      p->id = next_id_++;
      // The pool runs every task it is given, so the request is always finished.
      pool_->post([this, raw = p.release()] { prepare(std::unique_ptr<Pending>(raw)); });
    }
  }
  if (!refused.ok()) finish(std::move(p), refused);
}

void Engine::prepare(std::unique_ptr<Pending> p) {
  absl::Status status;
  const OcrRequest& r = p->request;
  if (r.cancellation && r.cancellation->cancelled()) {
    status = absl::CancelledError("request cancelled before it was queued");
  } else if (r.deadline && *r.deadline <= Clock::now()) {
    status = absl::DeadlineExceededError("deadline passed while the image was being prepared");
  } else {
    const auto start = Clock::now();
    const PromptContext context{*model_->tokenizer, model_->chat_template,
                                model_->configs.preprocessor};
    auto input = prepare_ocr_input(context, r.image,
                                   r.prompt.value_or(std::string(train::kDefaultCsvPrompt)),
                                   r.max_slice_nums, options_.input);
    p->preparation = Clock::now() - start;
    status = input.status();
    if (input.ok()) {
      // Generation stays within the model's context.
      const int64_t prompt = static_cast<int64_t>(input->prompt.input_ids.size());
      const int64_t context_length = model_->configs.model.max_position_embeddings;
      if (prompt >= context_length) {
        status = absl::InvalidArgumentError(absl::StrCat(
            "the prompt has ", prompt, " tokens, the model's context only ", context_length));
      } else {
        p->decoding.max_new_tokens = static_cast<int>(
            std::min<int64_t>(p->decoding.max_new_tokens, context_length - prompt));
        p->input = *std::move(input);
      }
    }
    p->request.image = std::string();
  }
  const std::shared_ptr<CancellationToken> token = p->request.cancellation;
  const uint64_t id = p->id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    --preparing_;
    ++changes_;
    if (status.ok() && (accepting_locked() || (state_ == EngineState::kStopping && drain_))) {
      p->ready = Clock::now();
      queue_.push_back(std::move(p));
    } else if (status.ok()) {
      status = absl::UnavailableError("engine: shutting down");
    }
  }
  cv_.notify_all();
  if (p) return finish(std::move(p), status);
  if (token) {
    token->on_cancel([life = lifeline_, id] {
      Engine* engine = nullptr;
      {
        std::lock_guard<std::mutex> lock(life->mu);
        if (life->engine == nullptr) return;
        engine = life->engine;
        ++life->active;
      }
      engine->cancel_queued(id);
      std::lock_guard<std::mutex> lock(life->mu);
      if (--life->active == 0) life->idle.notify_all();
    });
  }
}

void Engine::cancel_queued(uint64_t id) {
  std::unique_ptr<Pending> p;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it =
        std::find_if(queue_.begin(), queue_.end(), [id](const auto& q) { return q->id == id; });
    if (it == queue_.end()) return;  // running or finished: the cycle sees the token
    p = std::move(*it);
    queue_.erase(it);
    ++changes_;
  }
  cv_.notify_all();
  finish(std::move(p), absl::CancelledError("request cancelled while queued"));
}

void Engine::finish(std::unique_ptr<Pending> p, absl::StatusOr<OcrResult> result) {
  RequestEvent event;
  event.adapter = p->request.adapter;
  event.code = result.status().code();
  if (result.ok()) {
    event.timings = result->timings;
    event.prompt_tokens = result->prompt_tokens;
    event.generated_tokens = result->generated_tokens;
    event.batch_size = result->batch_size;
    event.time_to_first_token = p->time_to_first_token;
    event.time_per_output_token = result->timings.decode / std::max(result->generated_tokens, 1);
  } else {
    event.timings.total = Clock::now() - p->arrival;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++totals_.requests[{event.adapter, event.code}];
    totals_.prompt_tokens += event.prompt_tokens;
    totals_.generated_tokens += event.generated_tokens;
  }
  if (options_.observer) options_.observer->on_request(event);
  p->done(std::move(result));
}

// ---- The engine loop ----------------------------------------------------------------------------

void Engine::loop() {
  for (;;) {
    Work work = next_work();
    for (auto& [p, status] : work.dropped) finish(std::move(p), status);
    switch (work.kind) {
      case Work::Kind::kNothing:
        break;
      case Work::Kind::kTask:
        work.task.run();
        break;
      case Work::Kind::kBatch:
        run_cycle(std::move(work.batch));
        break;
      case Work::Kind::kBackground:
        run_background(work.background);
        break;
      case Work::Kind::kExit:
        shut_down();
        return;
    }
  }
}

Engine::Work Engine::next_work() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    Work work;
    if (!retired_.empty()) {
      work.retired.swap(retired_);
      return work;
    }
    if (!tasks_.empty()) {
      work.kind = Work::Kind::kTask;
      work.task = std::move(tasks_.front());
      tasks_.pop_front();
      return work;
    }
    if (state_ == EngineState::kStopping && !drain_) {
      work.kind = Work::Kind::kExit;
      return work;
    }
    const auto now = Clock::now();
    // Requests that leave without running: cancelled, expired, or their adapter is unusable.
    for (auto it = queue_.begin(); it != queue_.end();) {
      const Pending& p = **it;
      absl::Status drop;
      if (p.request.cancellation && p.request.cancellation->cancelled()) {
        drop = absl::CancelledError("request cancelled while queued");
      } else if (p.request.deadline && *p.request.deadline <= now) {
        drop = absl::DeadlineExceededError("deadline passed while the request was queued");
      } else if (!p.request.adapter.empty() && !device_adapters_.count(p.request.adapter)) {
        AdapterInfo* info = registry_.find(p.request.adapter);
        if (info->state == AdapterState::kFailed) {
          drop = absl::FailedPreconditionError(
              absl::StrCat("adapter ", info->name, " failed to load: ", info->error));
        } else if (info->state == AdapterState::kRegistered) {
          if (options_.load_adapters_on_demand) {
            start_load_locked(*info, info->path);
          } else {
            drop = absl::FailedPreconditionError(
                absl::StrCat("adapter ", info->name, " is not loaded"));
          }
        }
      }
      if (drop.ok()) {
        ++it;
      } else {
        work.dropped.emplace_back(std::move(*it), drop);
        it = queue_.erase(it);
      }
    }
    if (!work.dropped.empty()) return work;  // finished outside the lock; then look again

    std::vector<Pending*> ready;  // in arrival order
    std::optional<Clock::time_point> wake;
    for (const auto& p : queue_) {
      if (p->request.deadline)
        wake = std::min(wake.value_or(*p->request.deadline), *p->request.deadline);
      if (p->request.adapter.empty() || device_adapters_.count(p->request.adapter))
        ready.push_back(p.get());
    }
    const bool running = state_ == EngineState::kRunning;
    const int fairness = options_.max_ocr_cycles_per_background_step;
    const bool background_due =
        background_ && running && fairness > 0 && ocr_cycles_in_a_row_ >= fairness;
    if (!ready.empty() && !background_due) {
      const auto filled = ready.front()->ready + options_.max_wait;
      if (running && static_cast<int>(ready.size()) < options_.max_batch_size && now < filled) {
        wake = std::min(wake.value_or(filled), filled);
      } else {
        ready.resize(std::min<size_t>(ready.size(),
                                      static_cast<size_t>(std::max(options_.max_batch_size, 1))));
        const std::set<Pending*> taken(ready.begin(), ready.end());
        for (auto it = queue_.begin(); it != queue_.end();) {
          if (taken.count(it->get())) {
            work.batch.push_back(std::move(*it));
            it = queue_.erase(it);
          } else {
            ++it;
          }
        }
        running_ = static_cast<int64_t>(work.batch.size());
        ocr_cycles_in_a_row_ = background_ ? ocr_cycles_in_a_row_ + 1 : 0;
        work.kind = Work::Kind::kBatch;
        return work;
      }
    } else if (background_ && running) {
      ocr_cycles_in_a_row_ = 0;
      work.kind = Work::Kind::kBackground;
      work.background = background_;
      return work;
    } else if (state_ == EngineState::kStopping && queue_.empty() && preparing_ == 0 &&
               reads_in_flight_ == 0) {
      work.kind = Work::Kind::kExit;  // drained
      return work;
    }
    const uint64_t seen = changes_;
    const auto changed = [&] { return changes_ != seen; };
    if (wake) {
      cv_.wait_until(lock, *wake, changed);
    } else {
      cv_.wait(lock, changed);
    }
  }
}

void Engine::run_cycle(std::vector<std::unique_ptr<Pending>> batch) {
  // Groups of one decoding kind, in order of their first request; within a group the rows of one
  // adapter are consecutive (one LoRA segment each), the base first, then adapters by name, so
  // that the same adapters with the same row counts make the same layout (runtime/mixed_adapters.h
  // keeps its model and so its decode graph).
  std::vector<std::vector<size_t>> groups;
  for (size_t i = 0; i < batch.size(); ++i) {
    auto same = [&](const std::vector<size_t>& g) {
      return batch[g.front()]->decoding.kind == batch[i]->decoding.kind;
    };
    auto it = std::find_if(groups.begin(), groups.end(), same);
    if (it == groups.end()) {
      groups.push_back({i});
    } else {
      it->push_back(i);
    }
  }
  for (std::vector<size_t>& group : groups) {
    std::stable_sort(group.begin(), group.end(),
                     [&](size_t a, size_t b) { return batch[a]->request.adapter < batch[b]->request.adapter; });
  }
  for (const std::vector<size_t>& group : groups) {
    // Keep the group's adapters alive while it runs.
    std::map<std::string, std::shared_ptr<const DeviceAdapter>> holders;
    for (const size_t i : group) {
      const std::string& adapter = batch[i]->request.adapter;
      if (!adapter.empty()) holders.emplace(adapter, device_adapters_.at(adapter));
    }
    // Tokens stream out as they are decoded; a request cancelled or past its deadline mid-way
    // stops its row at the next token.
    std::vector<std::unique_ptr<TextStreamer>> streamers(group.size());
    std::vector<BatchRow> rows;
    for (size_t k = 0; k < group.size(); ++k) {
      Pending* p = batch[group[k]].get();
      if (p->request.on_delta) streamers[k] = std::make_unique<TextStreamer>(*model_->tokenizer);
      const model::MiniCPMO* m =
          p->request.adapter.empty() ? model_->model.get() : holders.at(p->request.adapter)->model.get();
      rows.push_back({m, &p->input, &p->decoding, [this, p, streamer = streamers[k].get()](int32_t token) {
                        if (p->time_to_first_token == nanoseconds::zero()) {
                          p->time_to_first_token = Clock::now() - p->arrival;
                        }
                        if (streamer != nullptr) {
                          const bool stops = std::find(stop_ids_.begin(), stop_ids_.end(), token) != stop_ids_.end();
                          if (auto delta = streamer->push(token, stops); delta.ok()) p->request.on_delta(*delta);
                        }
                        const OcrRequest& r = p->request;
                        return !(r.cancellation && r.cancellation->cancelled()) &&
                               !(r.deadline && *r.deadline <= Clock::now());
                      }});
    }
    const auto start = Clock::now();
    std::vector<RowOutcome> outcomes =
        run_ocr_batch(mixer_, device_, rows, stop_ids_, options_.before_generation);
    BatchEvent event;
    event.kind = batch[group.front()]->decoding.kind;
    event.size = static_cast<int>(group.size());
    event.duration = Clock::now() - start;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++totals_.batches;
      totals_.batched_requests += event.size;
      for (const size_t i : group) {
        const std::string& adapter = batch[i]->request.adapter;
        event.adapters[adapter] += 1;
        if (!adapter.empty()) registry_.touch(adapter, 1);
      }
    }
    if (options_.observer) options_.observer->on_batch(event);

    // A request stops counting as running just before its answer goes out.
    const auto answer = [this](std::unique_ptr<Pending> p, absl::StatusOr<OcrResult> result) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        --running_;
      }
      finish(std::move(p), std::move(result));
    };
    for (size_t k = 0; k < group.size(); ++k) {
      std::unique_ptr<Pending> p = std::move(batch[group[k]]);
      RowOutcome& o = outcomes[k];
      const OcrRequest& r = p->request;
      if (!o.status.ok()) {
        if (o.status.code() == absl::StatusCode::kResourceExhausted) {
          log_warn("OCR request failed: device out of memory",
                   {{"error", std::string(o.status.message())}});
        }
        answer(std::move(p), o.status);
        continue;
      }
      if (r.cancellation && r.cancellation->cancelled()) {
        answer(std::move(p), absl::CancelledError("request cancelled while running"));
        continue;
      }
      if (r.deadline && *r.deadline <= Clock::now()) {
        answer(std::move(p),
               absl::DeadlineExceededError("deadline passed while the request was running"));
        continue;
      }
      auto text = serve::answer_text(*model_->tokenizer, o.generation);
      if (!text.ok()) {
        answer(std::move(p),
               absl::InternalError(absl::StrCat("answer text: ", text.status().message())));
        continue;
      }
      if (streamers[k]) {
        if (auto rest = streamers[k]->finish(); rest.ok() && !rest->text.empty()) r.on_delta(*rest);
      }
      const auto now = Clock::now();
      if (p->time_to_first_token == nanoseconds::zero()) p->time_to_first_token = now - p->arrival;
      OcrResult result;
      result.text = *std::move(text);
      result.finish = o.generation.finish;
      result.prompt_tokens = static_cast<int>(p->input.prompt.input_ids.size());
      result.generated_tokens = static_cast<int>(o.generation.tokens.size());
      result.num_image_slices = static_cast<int>(p->input.image.pixel_values.size());
      result.batch_size = o.batch_size;
      result.adapter = r.adapter;
      result.timings.queue = (start - p->arrival) - p->preparation;
      result.timings.prefill = p->preparation + o.prefill;
      result.timings.decode = o.decode;
      result.timings.total = now - p->arrival;
      answer(std::move(p), std::move(result));
    }
  }
}

void Engine::run_background(const BackgroundTask& task) {
  bool more = false;
  try {
    more = (*task)(*model_);
  } catch (const std::exception& e) {
    log_error("background task failed; detached", {{"error", e.what()}});
  } catch (...) {
    log_error("background task failed; detached", {{"error", "unknown exception"}});
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++totals_.background_steps;
    if (!more && background_ == task) {
      retired_.push_back(std::move(background_));
      background_ = nullptr;
    }
  }
  if (options_.observer) options_.observer->on_background_step();
}

absl::Status Engine::set_background_task(BackgroundStep step) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!accepting_locked())
      return absl::UnavailableError("engine: not serving (not started, or shutting down)");
    if (background_) retired_.push_back(std::move(background_));
    background_ = step ? std::make_shared<BackgroundStep>(std::move(step)) : nullptr;
    ++changes_;
  }
  cv_.notify_all();
  return absl::OkStatus();
}

void Engine::shut_down() {
  std::deque<std::unique_ptr<Pending>> queued;
  std::deque<Task> tasks;
  std::map<std::string, std::vector<std::promise<absl::StatusOr<AdapterInfo>>>> waiters;
  BackgroundTask background;
  std::vector<BackgroundTask> retired;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queued.swap(queue_);
    tasks.swap(tasks_);
    waiters.swap(load_waiters_);
    background.swap(background_);
    retired.swap(retired_);
    for (const auto& [name, adapter] : device_adapters_) {
      AdapterInfo* info = registry_.find(name);
      info->state = AdapterState::kRegistered;
      info->device_bytes = 0;
    }
    state_ = EngineState::kStopped;
    ++changes_;
  }
  for (auto& p : queued)
    finish(std::move(p), absl::UnavailableError("engine: stopped before the request ran"));
  for (Task& t : tasks) t.abandon();
  for (auto& [name, list] : waiters) {
    for (auto& w : list)
      w.set_value(absl::UnavailableError("engine: stopped before the adapter was loaded"));
  }
  // The device tensors of the adapters and of the background task go with this thread.
  device_adapters_.clear();
  mixer_.prune();
  background.reset();
  retired.clear();
}

// ---- Adapters -----------------------------------------------------------------------------------

absl::StatusOr<AdapterInfo> Engine::register_adapter(const std::string& name,
                                                     const std::string& path) {
  CPM_RETURN_IF_ERROR(check_adapter_name(name));
  const std::string config_path = (std::filesystem::path(path) / "adapter_config.json").string();
  CPM_ASSIGN_OR_RETURN(const std::string text, io::read_file(config_path));
  CPM_ASSIGN_OR_RETURN(const io::PeftLoraConfig config, io::parse_peft_config(text, config_path));
  CPM_ASSIGN_OR_RETURN(std::vector<std::string> targets,
                       model::resolve_lora_targets(model_->configs.model, config));
  const int64_t size = folder_bytes(path);
  std::lock_guard<std::mutex> lock(mu_);
  AdapterInfo* info = registry_.find(name);
  if (info != nullptr && info->path == path) return *info;
  if (info != nullptr && (info->device_bytes > 0 || info->state == AdapterState::kLoading)) {
    return absl::AlreadyExistsError(absl::StrCat("adapter ", name, " is loaded from ", info->path,
                                                 "; load it with the new folder to replace it"));
  }
  if (info == nullptr) info = &registry_.add(name, path);
  info->path = path;
  info->state = AdapterState::kRegistered;
  info->error.clear();
  info->size_bytes = size;
  describe(*info, config, std::move(targets));
  return *info;
}

std::future<absl::StatusOr<AdapterInfo>> Engine::load_adapter(const std::string& name,
                                                              const std::string& path, bool pin) {
  std::promise<absl::StatusOr<AdapterInfo>> promise;
  auto future = promise.get_future();
  if (absl::Status s = check_adapter_name(name); !s.ok()) {
    promise.set_value(s);
    return future;
  }
  std::lock_guard<std::mutex> lock(mu_);
  AdapterInfo* info = registry_.find(name);
  const std::string folder = !path.empty() ? path : info != nullptr ? info->path : std::string();
  if (!accepting_locked()) {
    promise.set_value(
        absl::UnavailableError("engine: not serving (not started, or shutting down)"));
  } else if (folder.empty()) {
    promise.set_value(
        absl::NotFoundError(absl::StrCat("adapter ", name, " is not registered; give its folder")));
  } else if (info != nullptr && info->state == AdapterState::kLoaded && info->path == folder) {
    info->pinned = pin;
    promise.set_value(*info);
  } else if (info != nullptr && info->state == AdapterState::kLoading &&
             info->loading_path != folder) {
    promise.set_value(absl::FailedPreconditionError(
        absl::StrCat("adapter ", name, " is being loaded from ", info->loading_path,
                     "; retry when that is done")));
  } else {
    if (info == nullptr) info = &registry_.add(name, folder);
    info->pinned = pin;
    load_waiters_[name].push_back(std::move(promise));
    if (info->state != AdapterState::kLoading) start_load_locked(*info, folder);
  }
  return future;
}

void Engine::start_load_locked(AdapterInfo& info, const std::string& path) {
  info.state = AdapterState::kLoading;
  info.loading_path = path;
  ++reads_in_flight_;
  pool_->post([this, name = info.name, path, requested = Clock::now()] {
    absl::StatusOr<io::PeftAdapter> read = io::read_peft_adapter(path);
    const int64_t size = read.ok() ? folder_bytes(path) : 0;
    auto shared = std::make_shared<absl::StatusOr<io::PeftAdapter>>(std::move(read));
    Task task{[this, name, path, shared, size, requested] {
                install_adapter(name, path, std::move(*shared), size, requested);
              },
              [this, name] {
                complete_load(
                    name, absl::UnavailableError("engine: stopped before the adapter was loaded"));
              }};
    bool posted = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      --reads_in_flight_;
      ++changes_;
      posted = state_ != EngineState::kStopped;
      if (posted) tasks_.push_back(task);
    }
    cv_.notify_all();
    if (!posted) task.abandon();
  });
}

void Engine::install_adapter(const std::string& name, const std::string& path,
                             absl::StatusOr<io::PeftAdapter> read, int64_t size_bytes,
                             Clock::time_point requested) {
  absl::Status status = read.status();
  if (status.ok()) {
    absl::StatusOr<std::vector<std::string>> victims;
    {
      std::lock_guard<std::mutex> lock(mu_);
      // Adapters that queued requests name are busy: evicting them would only reload them.
      const auto busy = [this](const std::string& other) {
        return std::any_of(queue_.begin(), queue_.end(),
                           [&](const auto& p) { return p->request.adapter == other; });
      };
      victims = registry_.plan_eviction(
          name, device_bytes_needed(model_->params, *read, options_.lora_precision), busy);
    }
    status = victims.status();
    if (victims.ok()) {
      for (const std::string& victim : *victims) evict(victim);
    }
  }
  auto built = std::make_shared<DeviceAdapter>();
  std::vector<std::string> targets;
  int64_t own_bytes = 0;
  if (status.ok()) {
    status = classify_device_error(guarded(absl::StrCat("adapter ", name), [&]() -> absl::Status {
      at::NoGradGuard no_grad;
      CPM_ASSIGN_OR_RETURN(built->params,
                           model::apply_adapter(model_->params, model_->configs.model, *read,
                                                options_.lora_precision));
      CPM_ASSIGN_OR_RETURN(targets,
                           model::resolve_lora_targets(model_->configs.model, read->config));
      built->model =
          std::make_unique<model::MiniCPMO>(built->params, model_->configs.model,
                                            model::run_options(read->config, /*training=*/false));
      for (const auto& [key, t] : built->params.all()) {
        if (!model_->params.contains(key) || !t.is_same(model_->params.get(key)))
          own_bytes += t.nbytes();
      }
      return absl::OkStatus();
    }));
  }
  const nanoseconds elapsed = Clock::now() - requested;
  // The old version, if any, is freed here, on this thread, once the new one is on the device.
  if (status.ok()) {
    device_adapters_[name] = built;
    mixer_.prune();
  }
  absl::StatusOr<AdapterInfo> result;
  {
    std::lock_guard<std::mutex> lock(mu_);
    AdapterInfo& info = *registry_.find(name);
    info.loading_path.clear();
    if (status.ok()) {
      info.path = path;
      info.state = AdapterState::kLoaded;
      describe(info, read->config, std::move(targets));
      info.size_bytes = size_bytes;
      info.device_bytes = own_bytes;
      info.load_time = std::chrono::system_clock::now();
      info.load_duration = elapsed;
      info.error.clear();
      registry_.mark_loaded(name);
      ++totals_.adapter_loads;
      result = info;
    } else {
      info.state = device_adapters_.count(name) ? AdapterState::kLoaded : AdapterState::kFailed;
      info.error = std::string(status.message());
      ++totals_.adapter_load_failures;
      result = status;
    }
    ++changes_;
  }
  if (status.ok()) {
    log_info("adapter loaded", {{"adapter", name},
                                {"path", path},
                                {"device_bytes", own_bytes},
                                {"seconds", std::chrono::duration<double>(elapsed).count()}});
  } else {
    log_warn("adapter load failed",
             {{"adapter", name}, {"path", path}, {"error", std::string(status.message())}});
  }
  if (options_.observer) {
    AdapterEvent event;
    event.kind = status.ok() ? AdapterEvent::Kind::kLoaded : AdapterEvent::Kind::kLoadFailed;
    event.name = name;
    event.load_duration = elapsed;
    event.code = status.code();
    options_.observer->on_adapter(event);
  }
  complete_load(name, result);
}

void Engine::complete_load(const std::string& name, const absl::StatusOr<AdapterInfo>& result) {
  std::vector<std::promise<absl::StatusOr<AdapterInfo>>> waiters;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = load_waiters_.find(name);
    if (it != load_waiters_.end()) {
      waiters = std::move(it->second);
      load_waiters_.erase(it);
    }
  }
  for (auto& w : waiters) w.set_value(result);
}

void Engine::drop_device_adapter(const std::string& name) {
  device_adapters_.erase(name);
  mixer_.prune();
}

void Engine::evict(const std::string& name) {
  drop_device_adapter(name);
  {
    std::lock_guard<std::mutex> lock(mu_);
    AdapterInfo* info = registry_.find(name);
    info->state = AdapterState::kRegistered;
    info->device_bytes = 0;
    ++totals_.adapter_evictions;
  }
  log_info("adapter evicted", {{"adapter", name}});
  if (options_.observer) {
    AdapterEvent event;
    event.kind = AdapterEvent::Kind::kEvicted;
    event.name = name;
    options_.observer->on_adapter(event);
  }
}

std::future<absl::StatusOr<AdapterInfo>> Engine::unload_adapter(const std::string& name) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<AdapterInfo>>>();
  auto future = promise->get_future();
  absl::Status refused;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const AdapterInfo* info = registry_.find(name);
    if (!accepting_locked()) {
      refused = absl::UnavailableError("engine: not serving (not started, or shutting down)");
    } else if (info == nullptr) {
      refused = absl::NotFoundError(absl::StrCat("adapter ", name, " is not registered"));
    } else {
      tasks_.push_back(Task{[this, name, promise] { promise->set_value(unload_now(name)); },
                            [promise] {
                              promise->set_value(
                                  absl::UnavailableError("engine: stopped before the unload ran"));
                            }});
      ++changes_;
    }
  }
  if (!refused.ok()) {
    promise->set_value(refused);
  } else {
    cv_.notify_all();
  }
  return future;
}

absl::StatusOr<AdapterInfo> Engine::unload_now(const std::string& name) {
  AdapterInfo info;
  {
    std::lock_guard<std::mutex> lock(mu_);
    AdapterInfo& entry = *registry_.find(name);
    if (entry.state == AdapterState::kLoading) {
      return absl::FailedPreconditionError(
          absl::StrCat("adapter ", name, " is loading; unload it when that is done"));
    }
    entry.state = AdapterState::kRegistered;
    entry.device_bytes = 0;
    entry.error.clear();
    info = entry;
  }
  const bool was_loaded = device_adapters_.count(name) > 0;
  drop_device_adapter(name);
  if (was_loaded && options_.observer) {
    AdapterEvent event;
    event.kind = AdapterEvent::Kind::kUnloaded;
    event.name = name;
    options_.observer->on_adapter(event);
  }
  return info;
}

absl::StatusOr<AdapterInfo> Engine::adapter(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  const AdapterInfo* info = registry_.find(name);
  if (info == nullptr)
    return absl::NotFoundError(absl::StrCat("adapter ", name, " is not registered"));
  return *info;
}

AdapterList Engine::adapters() const {
  std::lock_guard<std::mutex> lock(mu_);
  AdapterList out;
  out.adapters = registry_.list();
  out.device_bytes_used = registry_.device_bytes_used();
  out.device_bytes_budget = registry_.budget_bytes();
  return out;
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  EngineStats s = totals_;
  s.state = state_;
  s.preparing = preparing_;
  s.queued = static_cast<int64_t>(queue_.size());
  s.running = running_;
  s.max_queue = options_.max_queue;
  s.background_task = background_ != nullptr;
  for (const AdapterInfo& info : registry_.list())
    s.adapters_loaded += info.device_bytes > 0 ? 1 : 0;
  s.adapter_device_bytes = registry_.device_bytes_used();
  s.adapter_budget_bytes = registry_.budget_bytes();
  return s;
}

}  // namespace cpm::core::runtime
