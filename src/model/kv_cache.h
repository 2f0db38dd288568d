// The key/value cache for incremental decoding (CausalLM::forward_cached). Per layer it holds
// keys and values exactly as the attention core consumes them: after gates, QK-norm and
// positions (RoPE-rotated keys; CoCA's K_eff), once per KV head ([B, KV, S, D], never repeated
// to the query heads). Cached keys keep the rotation of their absolute position; new tokens
// are rotated at theirs (offset = tokens already processed), and since every mask and bias of
// the core depends on i - j only, the core needs nothing but "queries are the last T of S keys".
// Sliding-window layers keep only the last `window` positions. Inference only: the buffers are
// written in place (CausalLM::forward_cached runs without autograd).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "sluice/config.h"

namespace sluice {

class LayerKVCache {
 public:
  // window 0: keep every position; w > 0: keep the last w. `reserve`: positions to allocate
  // for up front (0: grow by doubling).
  explicit LayerKVCache(int64_t window = 0, int64_t reserve = 0);

  // Appends this forward's keys and values k, v [B, KV, T, D] and returns every cached
  // position the new queries may attend, new ones last: [B, KV, S, D] views of the buffers,
  // valid until the next append. For a window layer S <= window + T.
  std::pair<at::Tensor, at::Tensor> append(const at::Tensor& k, const at::Tensor& v);

  at::Tensor keys() const;    // the kept positions [B, KV, size(), D] (undefined when empty)
  at::Tensor values() const;
  int64_t size() const { return end_ - begin_; }  // positions kept (<= window for a window layer)
  int64_t capacity() const { return k_.defined() ? k_.size(2) : 0; }  // positions allocated
  int64_t window() const { return window_; }
  int64_t bytes() const;  // allocated bytes of both buffers

 private:
  int64_t window_, reserve_;
  at::Tensor k_, v_;  // [B, KV, capacity, D]; positions begin_..end_-1 are live
  int64_t begin_ = 0, end_ = 0;
};

class KVCache {
 public:
  // One layer cache per block, with the block's sliding window. `reserve`: the total length
  // expected (prompt + new tokens), so full-attention layers allocate once.
  explicit KVCache(const ModelConfig& cfg, int64_t reserve = 0);

  LayerKVCache& layer(int64_t i) { return layers_.at(static_cast<size_t>(i)); }
  const LayerKVCache& layer(int64_t i) const { return layers_.at(static_cast<size_t>(i)); }
  int64_t n_layers() const { return static_cast<int64_t>(layers_.size()); }
  // Tokens processed so far: the absolute position of the next token.
  int64_t length() const { return length_; }
  // Called by the decoder once a forward over `n` new tokens has gone through every layer.
  void advance(int64_t n) { length_ += n; }
  int64_t bytes() const;

 private:
  std::vector<LayerKVCache> layers_;
  int64_t length_ = 0;
};

}  // namespace sluice
