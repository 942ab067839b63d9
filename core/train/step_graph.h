// SPDX-License-Identifier: Apache-2.0
//
// CUDA graphs for the training step. A LoRA step of the recipe launches about 10,000 small
// kernels; launched one by one from the host they take longer than the GPU needs to run them, so
// the step is bound by the host. Captured once and replayed, the same kernels run back to back.
//
// A captured graph replays fixed device addresses: the step reads its inputs from buffers that
// outlive the graph, writes gradients into persistent buffers and its results into tensors made
// before the capture, and does nothing on the host (no reads of device values, no uploads). Every
// graph of one StepGraphs shares one memory pool, which is safe because nothing a graph allocates
// outlives its replay.
//
// Built with CUDA only; elsewhere available() is false and the class does nothing else.
#pragma once

#include <c10/core/Device.h>

#include <functional>
#include <memory>

namespace cpm::core::train {

class StepGraphs {
 public:
  class Graph {
   public:
    ~Graph();
    void replay();

   private:
    friend class StepGraphs;
    struct Impl;
    explicit Graph(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
  };

  // `device`: the trainer's; graphs are available on CUDA devices of a CUDA build.
  explicit StepGraphs(c10::Device device);
  ~StepGraphs();
  bool available() const { return impl_ != nullptr; }

  // Runs fn with the trainer's own stream current, after the work already queued on the caller's
  // stream and before anything the caller queues next. Eager steps run there too, so that what
  // CUDA libraries set up lazily per stream (cuBLAS workspaces) exists before a capture.
  void on_stream(const std::function<void()>& fn);
  // Records fn's device work (it does not run) into a graph. Call inside on_stream(). Throws what
  // fn or the capture throws, with the stream usable again.
  std::unique_ptr<Graph> capture(const std::function<void()>& fn);

 private:
  // Tells the allocator that a failed capture no longer allocates from this object's pool.
  void stop_pool_capture();

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cpm::core::train
