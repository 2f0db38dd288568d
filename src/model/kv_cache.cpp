#include "model/kv_cache.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>

namespace sluice {

LayerKVCache::LayerKVCache(int64_t window, int64_t reserve) : window_(window), reserve_(reserve) {}

std::pair<at::Tensor, at::Tensor> LayerKVCache::append(const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(k.dim() == 4 && v.sizes() == k.sizes(), "KV cache: k and v must be [B, KV, T, D] alike");
  const int64_t T = k.size(2), live = end_ - begin_;
  if (k_.defined()) {
    TORCH_CHECK(k.size(0) == k_.size(0) && k.size(1) == k_.size(1) && k.size(3) == k_.size(3),
                "KV cache: batch, KV heads or head_dim changed between calls");
  }
  if (end_ + T > capacity()) {
    // A new buffer holding the live positions first. Window layers need at most window + T;
    // 2·window makes the copy of the live positions happen once per ~window tokens.
    const int64_t need = live + T;
    int64_t cap;
    if (window_ > 0) {
      cap = std::max(need, reserve_ > 0 ? std::min(2 * window_, reserve_) : 2 * window_);
    } else {
      cap = std::max({need, 2 * capacity(), reserve_});
    }
    std::vector<int64_t> shape = k.sizes().vec();
    shape[2] = cap;
    at::Tensor nk = at::empty(shape, k.options()), nv = at::empty(shape, v.options());
    if (live > 0) {
      nk.narrow(2, 0, live).copy_(k_.narrow(2, begin_, live));
      nv.narrow(2, 0, live).copy_(v_.narrow(2, begin_, live));
    }
    k_ = nk;
    v_ = nv;
    begin_ = 0;
    end_ = live;
  }
  k_.narrow(2, end_, T).copy_(k);
  v_.narrow(2, end_, T).copy_(v);
  end_ += T;
  std::pair<at::Tensor, at::Tensor> out{k_.narrow(2, begin_, end_ - begin_), v_.narrow(2, begin_, end_ - begin_)};
  if (window_ > 0) begin_ = std::max(begin_, end_ - window_);  // older keys are outside every later query's window
  return out;
}

at::Tensor LayerKVCache::keys() const { return k_.defined() ? k_.narrow(2, begin_, size()) : at::Tensor(); }
at::Tensor LayerKVCache::values() const { return v_.defined() ? v_.narrow(2, begin_, size()) : at::Tensor(); }

int64_t LayerKVCache::bytes() const {
  return k_.defined() ? static_cast<int64_t>(k_.nbytes() + v_.nbytes()) : 0;
}

KVCache::KVCache(const ModelConfig& cfg, int64_t reserve) {
  for (int64_t i = 0; i < cfg.n_layers; ++i) layers_.emplace_back(cfg.window_for_layer(i), reserve);
}

int64_t KVCache::bytes() const {
  int64_t n = 0;
  for (const LayerKVCache& l : layers_) n += l.bytes();
  return n;
}

}  // namespace sluice
