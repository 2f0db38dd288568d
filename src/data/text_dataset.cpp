#include "data/text_dataset.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "sluice/errors.h"

namespace sluice {

TokenSequence TokenSequence::from_text_file(const std::string& path, const std::string& key) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(key + ": cannot read '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string bytes = ss.str();
  at::Tensor t = at::empty({static_cast<int64_t>(bytes.size())}, at::kByte);
  std::memcpy(t.data_ptr<uint8_t>(), bytes.data(), bytes.size());
  return TokenSequence(t.to(at::kLong));
}

Batch TokenSequence::windows(const at::Tensor& starts, int64_t seq_len) const {
  const at::Tensor idx = starts.unsqueeze(1) + at::arange(seq_len + 1, at::kLong).unsqueeze(0);
  const at::Tensor w = tokens_.index_select(0, idx.reshape({-1})).view({starts.size(0), seq_len + 1});
  return {w.narrow(1, 0, seq_len).contiguous(), w.narrow(1, 1, seq_len).contiguous()};
}

RandomWindows::RandomWindows(TokenSequence seq, int64_t seq_len, uint64_t seed)
    : seq_(std::move(seq)), seq_len_(seq_len), gen_(at::make_generator<at::CPUGeneratorImpl>(seed)) {}

Batch RandomWindows::next(int64_t batch) {
  const int64_t n_starts = seq_.size() - seq_len_;  // windows need seq_len + 1 tokens
  const at::Tensor starts = at::randint(n_starts, {batch}, gen_, at::kLong);
  return seq_.windows(starts, seq_len_);
}

std::vector<Batch> evenly_spaced_batches(const TokenSequence& seq, int64_t seq_len, int64_t batch, int64_t count) {
  const int64_t n = batch * count;
  const int64_t last = seq.size() - seq_len - 1;
  const at::Tensor starts = n > 1 ? at::linspace(0, static_cast<double>(last), n, at::kDouble).floor().to(at::kLong)
                                  : at::zeros({1}, at::kLong);
  std::vector<Batch> out;
  for (int64_t i = 0; i < count; ++i) out.push_back(seq.windows(starts.narrow(0, i * batch, batch), seq_len));
  return out;
}

}  // namespace sluice
