// Seed files for fuzz/corpus written by the real torch-free writers (fuzz/make_corpus.sh):
//   fuzz_seed_writer prepare OUT_DIR SHARD_TOKENS INPUT...   `sluice data prepare` with the byte tokenizer
//   fuzz_seed_writer shard32 OUT.bin                         ShardWriter with 4-byte tokens (vocabulary > 65536)
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "data/prepare.h"
#include "data/shard.h"

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "prepare" && argc >= 5) {
    sluice::PrepareOptions o;
    o.tokenizer = "byte";
    o.out_dir = argv[2];
    o.shard_tokens = std::strtoull(argv[3], nullptr, 10);
    for (int i = 4; i < argc; ++i) o.inputs.push_back(argv[i]);
    o.documents = "blank-lines";
    o.val_fraction = 0.2;
    o.workers = 1;
    o.progress = false;
    const auto s = sluice::prepare_shards(o);
    std::printf("%zu shards, %llu train tokens\n", s.shards, static_cast<unsigned long long>(s.train_tokens));
    return 0;
  }
  if (mode == "shard32" && argc == 3) {
    sluice::ShardWriter w(argv[2], 4, 0x5EEDu, 100000);
    for (int d = 0; d < 5; ++d) {
      w.begin_document();
      std::vector<int32_t> ids;
      for (int i = 0; i <= d * 7; ++i) ids.push_back((d * 65599 + i * 977) % 100000);
      ids.push_back(99999);  // the document's EOS
      w.append(ids.data(), ids.size());
    }
    w.finish();
    return 0;
  }
  std::fprintf(stderr, "usage: fuzz_seed_writer prepare OUT_DIR SHARD_TOKENS INPUT... | shard32 OUT.bin\n");
  return 2;
}
