// SPDX-License-Identifier: Apache-2.0
#include "serve/beam_search.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/full.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/topk.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "serve/sampling.h"

namespace cpm::core::serve {

namespace {

// HF's "very large negative" score that rules a candidate out, added in float32 as HF adds it.
constexpr float kRuledOut = -1.0e9f;

struct Beam {
  std::vector<int32_t> tokens;  // new tokens
  // Running beam: the sum of its (penalised) log-probs. Finished hypothesis: that sum divided by
  // length^length_penalty.
  float score = 0;
};

// Indices of the k highest scores, best first. torch.topk leaves the order of ties unspecified;
// here the lower index comes first (ties between real scores do not occur in practice, and ruled
// out entries are never returned).
std::vector<size_t> best_indices(const std::vector<float>& scores, size_t k) {
  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  order.resize(std::min(k, order.size()));
  return order;
}

// length^length_penalty: HF computes it as a Python float and divides float32 scores by it.
float length_divisor(int64_t length, double length_penalty) {
  return static_cast<float>(std::pow(static_cast<double>(length), length_penalty));
}

}  // namespace

BeamSearchResult generate_beam(const model::Qwen2ForCausalLM& llm, const at::Tensor& inputs_embeds,
                               const GreedyOptions& limits, const BeamSearchOptions& options) {
  TORCH_CHECK(options.num_beams >= 1, "beam search: num_beams must be at least 1, got ",
              options.num_beams);
  BeamSearchResult result;
  if (limits.max_new_tokens <= 0) return result;
  const auto beams = static_cast<size_t>(options.num_beams);
  // HF's beams_to_keep: enough continuations that num_beams remain running even if every beam's
  // best continuations are stop ids.
  const size_t keep = std::max<size_t>(2, 1 + limits.stop_ids.size()) * beams;
  const auto is_stop = [&](int32_t token) {
    return std::find(limits.stop_ids.begin(), limits.stop_ids.end(), token) !=
           limits.stop_ids.end();
  };
  const SamplingOptions penalty{.temperature = 1.0,
                                .top_k = 0,
                                .top_p = 1.0,
                                .repetition_penalty = options.repetition_penalty};

  const int64_t prompt = inputs_embeds.size(1);
  const auto long_options = inputs_embeds.options().dtype(at::kLong);
  model::KvCache cache;
  const at::Tensor hidden =
      llm.hidden_states(inputs_embeds, at::arange(prompt, long_options).unsqueeze(0), &cache);
  // HF decodes num_beams identical copies of the prompt; here the one row is decoded and viewed
  // num_beams times (the first reorder copies it).
  for (at::Tensor& k : cache.keys) k = k.expand({options.num_beams, -1, -1, -1});
  for (at::Tensor& v : cache.values) v = v.expand({options.num_beams, -1, -1, -1});
  at::Tensor logits = llm.logits(hidden.select(1, prompt - 1)).expand({options.num_beams, -1});

  std::vector<Beam> running(beams), finished(beams);
  // Only the first copy's continuations count at the first step.
  for (size_t b = 1; b < beams; ++b) running[b].score = kRuledOut;
  for (Beam& f : finished) f.score = kRuledOut;
  std::vector<bool> done(beams, false);  // HF's is_sent_finished: finished[i] holds a hypothesis
  bool improvable = true;                // HF's is_early_stop_heuristic_unsatisfied
  for (int64_t step = 0;; ++step) {
    // 1. Penalised log-probs of each running beam plus its score: [beams, vocab].
    at::Tensor log_probs = at::log_softmax(logits.to(at::kFloat), -1);
    if (options.repetition_penalty != 1.0) {
      std::vector<at::Tensor> rows;
      for (size_t b = 0; b < beams; ++b) {
        rows.push_back(
            process_scores(log_probs[static_cast<int64_t>(b)], running[b].tokens, penalty));
      }
      log_probs = at::stack(rows);
    }
    std::vector<float> running_scores;
    for (const Beam& r : running) running_scores.push_back(r.score);
    const at::Tensor scores =
        log_probs + at::tensor(running_scores, log_probs.options()).unsqueeze(1);
    const int64_t vocab = scores.size(1);

    // 2. The best `keep` continuations over all beams, best first; one copy to the host.
    const auto [top_scores, top_indices] = at::topk(scores.reshape(-1), static_cast<int64_t>(keep));
    const at::Tensor host_scores = top_scores.to(at::kCPU).contiguous();
    const at::Tensor host_indices = top_indices.to(at::kCPU).contiguous();
    std::vector<Beam> candidates(keep);
    std::vector<int64_t> parents(keep);
    std::vector<bool> stopped(keep);
    for (size_t c = 0; c < keep; ++c) {
      const int64_t flat = host_indices.data_ptr<int64_t>()[c];
      parents[c] = flat / vocab;
      const auto token = static_cast<int32_t>(flat % vocab);
      candidates[c].tokens = running[static_cast<size_t>(parents[c])].tokens;
      candidates[c].tokens.push_back(token);
      candidates[c].score = host_scores.data_ptr<float>()[c];
      stopped[c] = is_stop(token) || step + 1 >= limits.max_new_tokens;
    }

    // 3. The next running beams: the best that did not stop.
    std::vector<float> running_pick(keep);
    for (size_t c = 0; c < keep; ++c) {
      running_pick[c] = stopped[c] ? candidates[c].score + kRuledOut : candidates[c].score;
    }
    std::vector<Beam> next_running;
    std::vector<int64_t> next_parents;
    for (const size_t c : best_indices(running_pick, beams)) {
      next_running.push_back({candidates[c].tokens, running_pick[c]});
      next_parents.push_back(parents[c]);
    }

    // 4. Finished hypotheses: the best num_beams of those kept so far and the stopped
    // continuations that rank among the top num_beams of this step.
    const int64_t length = step + 1;  // new tokens, the stop token included
    const bool full = std::all_of(done.begin(), done.end(), [](bool d) { return d; });
    std::vector<Beam> merged = finished;
    std::vector<bool> merged_done = done;
    std::vector<float> merged_scores;
    for (const Beam& f : finished) merged_scores.push_back(f.score);
    for (size_t c = 0; c < keep; ++c) {
      float score = candidates[c].score / length_divisor(length, options.length_penalty);
      if (options.early_stopping == EarlyStopping::kWhenFull && full) score += kRuledOut;
      if (!improvable) score += kRuledOut;
      const bool accepted = stopped[c] && c < beams;
      if (!accepted) score += kRuledOut;
      merged.push_back({std::move(candidates[c].tokens), score});
      merged_done.push_back(accepted);
      merged_scores.push_back(score);
    }
    for (size_t i = 0; const size_t m : best_indices(merged_scores, beams)) {
      finished[i] = merged[m];
      done[i++] = merged_done[m];
    }

    // 5. Whether to go on. The heuristic: can the best running beam still beat the worst finished
    // hypothesis (an empty slot always can be filled)?
    if (improvable) {
      const int64_t best_length =
          options.early_stopping == EarlyStopping::kNever && options.length_penalty > 0
              ? limits.max_new_tokens
              : length;
      const float best_possible =
          next_running.front().score / length_divisor(best_length, options.length_penalty);
      float worst = finished.front().score;
      for (const Beam& f : finished) worst = std::min(worst, f.score);
      improvable = false;
      for (size_t i = 0; i < beams; ++i)
        improvable |= best_possible > (done[i] ? worst : kRuledOut);
    }
    const bool all_done = std::all_of(done.begin(), done.end(), [](bool d) { return d; });
    const bool all_stopped = std::all_of(stopped.begin(), stopped.end(), [](bool s) { return s; });
    if (!improvable || (options.early_stopping == EarlyStopping::kWhenFull && all_done) ||
        all_stopped) {
      break;
    }

    // The cache rows follow the new running beams' parents; then one step for their last tokens.
    running = std::move(next_running);
    const at::Tensor order = at::tensor(next_parents, long_options);
    for (at::Tensor& k : cache.keys) k = k.index_select(0, order);
    for (at::Tensor& v : cache.values) v = v.index_select(0, order);
    std::vector<int64_t> last;
    for (const Beam& r : running) last.push_back(r.tokens.back());
    const at::Tensor next = at::tensor(last, long_options).unsqueeze(1);  // [beams, 1]
    const at::Tensor position = at::full({options.num_beams, 1}, prompt + step, long_options);
    logits = llm.logits(llm.hidden_states(llm.embed(next), position, &cache).select(1, 0));
  }
  result.best.tokens = finished.front().tokens;
  result.best.finish = !result.best.tokens.empty() && is_stop(result.best.tokens.back())
                           ? FinishReason::kStop
                           : FinishReason::kLength;
  result.score = finished.front().score;
  return result;
}

}  // namespace cpm::core::serve
