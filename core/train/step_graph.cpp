// SPDX-License-Identifier: Apache-2.0
#include "train/step_graph.h"

#include <stdexcept>

#include "common/torch_compat.h"

#ifdef CPM_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace cpm::core::train {

#ifdef CPM_WITH_CUDA

struct StepGraphs::Impl {
  c10::cuda::CUDAStream stream;
  at::cuda::MempoolId_t pool;
};

struct StepGraphs::Graph::Impl {
  at::cuda::CUDAGraph graph;
};

StepGraphs::StepGraphs(c10::Device device) {
  if (!device.is_cuda()) return;
  const c10::cuda::CUDAGuard guard(device);
  impl_ = std::make_unique<Impl>(Impl{c10::cuda::getStreamFromPool(false, device.index()), at::cuda::graph_pool_handle()});
}

void StepGraphs::on_stream(const std::function<void()>& fn) {
  const c10::cuda::CUDAStream caller = c10::cuda::getCurrentCUDAStream(impl_->stream.device_index());
  at::cuda::CUDAEvent queued;
  queued.record(caller);
  queued.block(impl_->stream);
  // Whatever fn throws, the caller's stream waits for what fn queued.
  struct Rejoin {
    c10::cuda::CUDAStream side, caller;
    ~Rejoin() {
      try {
        at::cuda::CUDAEvent done;
        done.record(side);
        done.block(caller);
      } catch (...) {
        // A device error is already on its way to the caller (it reports the step as failed);
        // a destructor must not throw it again.
      }
    }
  } rejoin{impl_->stream, caller};
  const c10::cuda::CUDAStreamGuard guard(impl_->stream);
  fn();
}

std::unique_ptr<StepGraphs::Graph> StepGraphs::capture(const std::function<void()>& fn) {
  auto impl = std::make_unique<Graph::Impl>();
  impl->graph.capture_begin(impl_->pool);
  try {
    fn();
  } catch (...) {
    // End the capture so that the stream takes work again; the graph is discarded.
    try {
      impl->graph.capture_end();
    } catch (...) {
    }
    stop_pool_capture();
    throw;
  }
  try {
    impl->graph.capture_end();
  } catch (...) {
    // CUDAGraph::capture_end throws before it tells the allocator that the capture is over, which
    // would leave the allocator routing allocations through a dead graph's filter.
    stop_pool_capture();
    throw;
  }
  return std::unique_ptr<Graph>(new Graph(std::move(impl)));
}

void StepGraphs::stop_pool_capture() {
#if CPM_TORCH_VERSION_AT_LEAST(2, 3)
  try {
    c10::cuda::CUDACachingAllocator::endAllocateToPool(impl_->stream.device_index(), impl_->pool);
  } catch (...) {
    // Not recording to the pool: nothing to end.
  }
#endif
}

void StepGraphs::Graph::replay() { impl_->graph.replay(); }

#else

struct StepGraphs::Impl {};
struct StepGraphs::Graph::Impl {};

StepGraphs::StepGraphs(c10::Device) {}

void StepGraphs::stop_pool_capture() {}

void StepGraphs::on_stream(const std::function<void()>& fn) { fn(); }

std::unique_ptr<StepGraphs::Graph> StepGraphs::capture(const std::function<void()>&) {
  throw std::logic_error("CUDA graphs need a CUDA build");
}

void StepGraphs::Graph::replay() { throw std::logic_error("CUDA graphs need a CUDA build"); }

#endif

StepGraphs::~StepGraphs() = default;
StepGraphs::Graph::Graph(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
StepGraphs::Graph::~Graph() = default;

}  // namespace cpm::core::train
