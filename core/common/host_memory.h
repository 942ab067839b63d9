// SPDX-License-Identifier: Apache-2.0
//
// glibc's malloc hands every block above its mmap threshold (at most 32 MiB) to a fresh mapping
// and unmaps it on free, and trims the heap's free top back to the kernel. A model on the CPU
// allocates and frees the same tens-of-MB tensors (activations, gradients, logits) every step, so
// each step page-faults them in anew: on the tiny model's training, 15.9 M minor faults and twice
// as much system time as user time.
#pragma once

namespace cpm::core {

// Serves large blocks from the heap and keeps freed memory there for reuse (up to 1 GiB of free
// heap top before trimming). For processes that run the model on the CPU; call before the model
// is loaded. No effect outside glibc.
void keep_freed_memory_for_reuse();

}  // namespace cpm::core
