#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

namespace sluice {

struct Batch {
  at::Tensor inputs;    // [B, T] int64
  at::Tensor targets;   // [B, T] int64: inputs shifted by one token
  at::Tensor segments;  // [B, T] int64 document index within each window (data.respect_documents), else undefined
};

// The batch on `device` (asynchronous copies; the source should be pinned for overlap).
Batch to_device(const Batch& b, const c10::Device& device);

}  // namespace sluice
