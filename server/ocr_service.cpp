// SPDX-License-Identifier: Apache-2.0
#include "ocr_service.h"

#include <chrono>
#include <deque>
#include <mutex>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "model_host.h"
#include "ocr_conversion.h"
#include "runtime/engine.h"
#include "serving_metrics.h"
#include "status_conversion.h"

namespace cpm::server {
namespace {

namespace runtime = core::runtime;
using cpm::v1::RecognizeStreamResponse;

// The call's deadline on the engine's clock; none when the client set none (or one past a year).
std::optional<runtime::Clock::time_point> engine_deadline(
    const grpc::CallbackServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return std::nullopt;
  const auto left = deadline - std::chrono::system_clock::now();
  if (left > std::chrono::hours(24 * 365)) return std::nullopt;
  return runtime::Clock::now() + std::chrono::duration_cast<runtime::Clock::duration>(left);
}

// The engine and the request it gets, or why there is none.
struct Admitted {
  runtime::Engine* engine = nullptr;
  runtime::OcrRequest request;
};

absl::StatusOr<Admitted> admit(const ModelHost& host, const grpc::CallbackServerContext& context,
                               const cpm::v1::RecognizeRequest& request,
                               std::shared_ptr<runtime::CancellationToken> token) {
  auto engine = host.engine();
  if (!engine.ok()) return engine.status();
  auto converted = to_ocr_request(request);
  if (!converted.ok()) return converted.status();
  Admitted admitted{*engine, *std::move(converted)};
  admitted.request.deadline = engine_deadline(context);
  admitted.request.cancellation = std::move(token);
  return admitted;
}

// The `adapter` label of cpm_ocr_requests_total: names the engine knows, so that clients sending
// made-up names cannot grow the series without bound.
std::string adapter_label(const runtime::Engine* engine, const std::string& adapter) {
  if (adapter.empty()) return adapter;
  if (engine != nullptr && engine->adapter(adapter).ok()) return adapter;
  return "(unregistered)";
}

// Recognize: finished by the engine's callback, which runs exactly once.
class RecognizeCall final : public grpc::ServerUnaryReactor {
 public:
  RecognizeCall(ServingMetrics& metrics, cpm::v1::RecognizeResponse* response)
      : metrics_(metrics), response_(response) {}

  void start(const ModelHost& host, const grpc::CallbackServerContext& context,
             const cpm::v1::RecognizeRequest& request) {
    adapter_ = request.adapter();
    auto admitted = admit(host, context, request, token_);
    if (!admitted.ok()) return finish(nullptr, admitted.status());
    runtime::Engine* engine = admitted->engine;
    engine->submit(std::move(admitted->request),
                   [this, engine](absl::StatusOr<runtime::OcrResult> result) {
                     if (result.ok()) to_proto(*result, response_);
                     finish(engine, result.status());
                   });
  }

  void OnCancel() override { token_->cancel(); }
  void OnDone() override { delete this; }

 private:
  void finish(const runtime::Engine* engine, const absl::Status& status) {
    const grpc::Status answer = to_grpc_status(status);
    metrics_.count_request("Recognize", adapter_label(engine, adapter_), answer.error_code());
    Finish(answer);  // the last use of `this`: OnDone may follow on another thread
  }

  ServingMetrics& metrics_;
  cpm::v1::RecognizeResponse* const response_;
  const std::shared_ptr<runtime::CancellationToken> token_ =
      std::make_shared<runtime::CancellationToken>();
  std::string adapter_;
};

// RecognizeStream: the engine hands over text deltas and then the result on its own thread,
// where nothing may block, so messages queue here and go out one write at a time; the call
// finishes once the queue has drained (or the client has gone).
class RecognizeStreamCall final : public grpc::ServerWriteReactor<RecognizeStreamResponse> {
 public:
  explicit RecognizeStreamCall(ServingMetrics& metrics) : metrics_(metrics) {}

  void start(const ModelHost& host, const grpc::CallbackServerContext& context,
             const cpm::v1::RecognizeRequest& request) {
    adapter_ = request.adapter();
    auto admitted = admit(host, context, request, token_);
    if (!admitted.ok()) return close(nullptr, admitted.status());
    runtime::Engine* engine = admitted->engine;
    admitted->request.on_delta = [this](const runtime::TextDelta& delta) {
      RecognizeStreamResponse message;
      to_proto(delta, message.mutable_delta());
      enqueue(std::move(message));
    };
    engine->submit(std::move(admitted->request),
                   [this, engine](absl::StatusOr<runtime::OcrResult> result) {
                     if (result.ok()) {
                       RecognizeStreamResponse message;
                       to_proto(*result, message.mutable_done());
                       enqueue(std::move(message));
                     }
                     close(engine, result.status());
                   });
  }

  void OnWriteDone(bool ok) override {
    std::unique_lock<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) {  // the client is gone: nothing more can be sent
      broken_ = true;
      pending_.clear();
    }
    pump(std::move(lock));
  }
  void OnCancel() override { token_->cancel(); }
  void OnDone() override { delete this; }

 private:
  void enqueue(RecognizeStreamResponse message) {
    std::unique_lock<std::mutex> lock(mu_);
    if (broken_) return;
    pending_.push_back(std::move(message));
    pump(std::move(lock));
  }

  // The engine's last word: the call ends with `status` once what is queued has been written.
  void close(const runtime::Engine* engine, const absl::Status& status) {
    const std::string label = adapter_label(engine, adapter_);
    std::unique_lock<std::mutex> lock(mu_);
    final_ = to_grpc_status(status);
    label_ = label;
    pump(std::move(lock));
  }

  // Starts the next write, or finishes the call when nothing is left to write. Called with mu_
  // held from the moment the caller changed the state: the engine thread is not a reaction, so
  // once a reaction may have finished the call, it must not touch `this` again.
  void pump(std::unique_lock<std::mutex> lock) {
    if (writing_ || finished_) return;
    if (!pending_.empty()) {
      current_ = std::move(pending_.front());
      pending_.pop_front();
      writing_ = true;
      lock.unlock();
      StartWrite(&current_);  // current_ stays untouched until OnWriteDone
      return;
    }
    if (!final_) return;
    finished_ = true;
    const grpc::Status status = *final_;
    const grpc::StatusCode code = broken_ ? grpc::StatusCode::CANCELLED : status.error_code();
    const std::string label = label_;
    lock.unlock();
    metrics_.count_request("RecognizeStream", label, code);
    Finish(status);  // the last use of `this`
  }

  ServingMetrics& metrics_;
  const std::shared_ptr<runtime::CancellationToken> token_ =
      std::make_shared<runtime::CancellationToken>();
  std::string adapter_;
  RecognizeStreamResponse current_;  // the message being written
  std::mutex mu_;
  std::deque<RecognizeStreamResponse> pending_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::Status> final_ ABSL_GUARDED_BY(mu_);
  std::string label_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

grpc::ServerUnaryReactor* OcrService::Recognize(grpc::CallbackServerContext* context,
                                                const cpm::v1::RecognizeRequest* request,
                                                cpm::v1::RecognizeResponse* response) {
  auto* call = new RecognizeCall(metrics_, response);
  call->start(host_, *context, *request);
  return call;
}

grpc::ServerWriteReactor<RecognizeStreamResponse>* OcrService::RecognizeStream(
    grpc::CallbackServerContext* context, const cpm::v1::RecognizeRequest* request) {
  auto* call = new RecognizeStreamCall(metrics_);
  call->start(host_, *context, *request);
  return call;
}

}  // namespace cpm::server
