#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

namespace sluice {

struct Batch {
  at::Tensor inputs;    // [B, T] int64
  at::Tensor targets;   // [B, T] int64: inputs shifted by one token
  // [B, T] int64 (data.respect_documents, else undefined): per input position, the document of its
  // target (token t + 1), numbered from 0 within each window. A document's EOS is the input that
  // predicts the next document's first token, so it opens that document (as its BOS would) and
  // attention never crosses documents: AttentionMask::segments.
  at::Tensor segments;
};

// The batch on `device` (asynchronous copies; the source should be pinned for overlap).
Batch to_device(const Batch& b, const c10::Device& device);

}  // namespace sluice
