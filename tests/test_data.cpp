// Data pipeline, LibTorch side: corpus, loader, prefetcher (all on generated text). The torch-free
// parts (UTF-8, tokenizers, shards, `data prepare`) are in test_text.cpp.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "data/byte_tokenizer.h"
#include "data/cached_encoder.h"
#include "data/permutation.h"
#include "data/prefetcher.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "data/token_corpus.h"
#include "data/utf8.h"
#include "data/window_loader.h"
#include "data_fixtures.h"
#include "sluice/errors.h"
#include "sluice/tokenizer.h"
#include "test_util.h"

namespace sluice {
namespace {

using namespace data_test;
namespace fs = std::filesystem;
using testing::TempDir;
using testing::write_file;

// --- corpus over prepared shards -----------------------------------------------------

TEST_F(Prepare, BlankLineDocumentsValSplitAndShardRolling) {
  std::string text;
  for (int i = 0; i < 40; ++i) text += "paragraph " + std::to_string(i) + " line one\nline two\n\n\n";
  const std::string in = write_file(tmp.file("paras.txt"), text);
  PrepareOptions o = options("paras");
  o.inputs = {in};
  o.documents = "blank-lines";
  o.val_fraction = 0.1;   // every 10th document
  o.shard_tokens = 100;   // forces several train shards
  const PrepareSummary s = prepare_shards(o);
  EXPECT_EQ(s.train_documents + s.val_documents, 40u);
  EXPECT_EQ(s.val_documents, 4u);  // documents 9, 19, 29, 39
  EXPECT_GT(s.shards, 3u);
  const auto tok = load_tokenizer(tok_dir());
  const TokenCorpus val = TokenCorpus::open(tmp.file("paras"), "val", *tok, "test");
  std::vector<int64_t> first(val.segment(0).size());
  val.segment(0).copy(0, first.size(), first.data());
  std::vector<int32_t> expect = tok->encode("paragraph 9 line one\nline two\n");
  expect.push_back(tok->specials().eos);
  EXPECT_EQ(std::vector<int32_t>(first.begin(), first.begin() + expect.size()), expect);
}

TEST_F(Corrupt, OtherTokenizer) {
  EXPECT_NE(open_error(12345).find("written with tokenizer"), std::string::npos);
  const auto byte = load_tokenizer("byte");
  try {
    TokenCorpus::open(tmp.file("ds"), "train", *byte, "data.train");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("data.train: dataset"), std::string::npos) << e.what();
  }
}
TEST_F(Corrupt, ManifestDisagreesWithShard) {
  auto m = nlohmann::json::parse(testing::read_file(tmp.file("ds/manifest.json")));
  m["shards"][0]["tokens"] = 3;
  write_file(tmp.file("ds/manifest.json"), m.dump());
  const auto tok = load_tokenizer(tok_dir());
  EXPECT_THROW(TokenCorpus::open(tmp.file("ds"), "train", *tok, "data.train"), InputError);
  write_file(tmp.file("ds/manifest.json"), "{not json");
  EXPECT_THROW(TokenCorpus::open(tmp.file("ds"), "train", *tok, "data.train"), InputError);
}

// --- loader ---------------------------------------------------------------------------

TEST(Permutation, IsABijectionAndSeedDependent) {
  for (uint64_t n : {1, 2, 3, 10, 1000, 4097}) {
    RandomPermutation p(n, 42);
    std::set<uint64_t> seen;
    for (uint64_t i = 0; i < n; ++i) seen.insert(p(i));
    EXPECT_EQ(seen.size(), n);
    EXPECT_EQ(*seen.rbegin(), n - 1);
  }
  RandomPermutation a(1000, 1), b(1000, 2);
  int same = 0;
  for (uint64_t i = 0; i < 1000; ++i) same += a(i) == b(i);
  EXPECT_LT(same, 20);
}

std::shared_ptr<const TokenCorpus> counting_corpus(std::vector<int> doc_lengths) {
  std::vector<std::vector<int32_t>> docs;
  int32_t next = 0;
  for (int len : doc_lengths) {
    std::vector<int32_t> d;
    for (int i = 0; i < len; ++i) d.push_back(next++);
    docs.push_back(d);
  }
  return std::make_shared<const TokenCorpus>(TokenCorpus::from_documents(docs, -1));
}

TEST(WindowLoader, WindowsAreShiftedPairsAndBatchesDeterministic) {
  auto corpus = counting_corpus({500});
  LoaderOptions o;
  o.seq_len = 16;
  o.batch = 4;
  o.seed = 3;
  WindowLoader a(corpus, o, "t"), b(corpus, o, "t");
  EXPECT_EQ(a.windows(), 500u / 16);  // 501 tokens (EOS included), windows need 17
  for (uint64_t k : {0, 1, 5, 40}) {
    const Batch x = a.batch(k), y = b.batch(k);
    EXPECT_TRUE(at::equal(x.inputs, y.inputs));
    EXPECT_TRUE(at::equal(x.targets.narrow(1, 0, 15), x.inputs.narrow(1, 1, 15)));
    EXPECT_EQ(x.inputs[0][0].item<int64_t>() % 16, 0);  // windows start at multiples of seq_len
  }
  o.seed = 4;
  EXPECT_FALSE(at::equal(a.batch(0).inputs, WindowLoader(corpus, o, "t").batch(0).inputs));
}

TEST(WindowLoader, RanksSeeDisjointWindowsCoveringTheEpoch) {
  auto corpus = counting_corpus({300, 170, 411});
  for (int64_t world = 1; world <= 4; ++world) {
    std::set<int64_t> all;
    uint64_t per_rank = 0;
    for (int64_t rank = 0; rank < world; ++rank) {
      LoaderOptions o;
      o.seq_len = 8;
      o.batch = 2;
      o.rank = rank;
      o.world = world;
      WindowLoader l(corpus, o, "t");
      per_rank = l.windows_per_rank();
      for (uint64_t k = 0; k < l.batches_per_epoch(); ++k) {
        const at::Tensor first = l.batch(k).inputs.select(1, 0);
        for (int64_t i = 0; i < first.size(0); ++i) EXPECT_TRUE(all.insert(first[i].item<int64_t>()).second);
      }
      EXPECT_EQ(l.batches_per_epoch(), l.windows_per_rank() / 2);
    }
    EXPECT_EQ(all.size(), static_cast<size_t>(world) * (per_rank / 2 * 2)) << "world " << world;
  }
}

TEST(WindowLoader, EpochsReshuffle) {
  auto corpus = counting_corpus({400});
  LoaderOptions o;
  o.seq_len = 8;
  o.batch = 49;  // 50 windows: one batch per epoch
  WindowLoader l(corpus, o, "t");
  ASSERT_EQ(l.batches_per_epoch(), 1u);
  EXPECT_FALSE(at::equal(l.batch(0).inputs, l.batch(1).inputs));
}

TEST(WindowLoader, SegmentsNumberDocumentsInsideEachWindow) {
  auto corpus = counting_corpus({5, 3, 20});  // docs with EOS: [0,6) [6,10) [10,31)
  LoaderOptions o;
  o.seq_len = 12;
  o.batch = 1;
  o.shuffle = false;
  o.segments = true;
  WindowLoader l(corpus, o, "t");
  const Batch b = l.batch(0);  // window 0: inputs 0..11, targets 1..12
  // each input position takes its target's document: the EOS at 5 opens the second document
  const std::vector<int64_t> expect = {0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2};
  EXPECT_EQ(std::vector<int64_t>(b.segments.data_ptr<int64_t>(), b.segments.data_ptr<int64_t>() + 12), expect);
  const Batch c = l.batch(1);  // window 1: tokens 12..23, all in the third document
  EXPECT_EQ(c.segments.max().item<int64_t>(), 0);
}

TEST(WindowLoader, TooLittleDataIsBadInput) {
  LoaderOptions o;
  o.seq_len = 64;
  EXPECT_THROW(WindowLoader(counting_corpus({20}), o, "data.train"), InputError);
}

TEST(Prefetcher, ResumingAtABatchIndexGivesTheSameBatches) {
  auto corpus = counting_corpus({2000});
  LoaderOptions o;
  o.seq_len = 10;
  o.batch = 3;
  auto loader = std::make_shared<WindowLoader>(corpus, o, "t");
  auto make = [loader](uint64_t k) { return loader->batch(k); };
  std::vector<at::Tensor> straight;
  {
    Prefetcher p(make, 0, 3, at::kCPU);
    for (int i = 0; i < 12; ++i) straight.push_back(p.next().inputs);
  }
  Prefetcher first(make, 0, 2, at::kCPU);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(at::equal(first.next().inputs, straight[i]));
  const uint64_t state = first.next_index();  // what a checkpoint stores
  EXPECT_EQ(state, 5u);
  Prefetcher resumed(make, state, 0, at::kCPU);  // synchronous mode gives the same stream
  for (int i = 5; i < 12; ++i) EXPECT_TRUE(at::equal(resumed.next().inputs, straight[i]));
}

TEST(Prefetcher, PropagatesErrors) {
  Prefetcher p([](uint64_t k) -> Batch {
    if (k == 2) throw std::runtime_error("boom");
    return {at::zeros({1}), at::zeros({1}), {}};
  }, 0, 2, at::kCPU);
  p.next();
  p.next();
  EXPECT_THROW(p.next(), std::runtime_error);
}

TEST(TokenCorpus, TextFileSplitsTailAndRejectsInvalidUtf8) {
  TempDir tmp;
  const auto tok = load_tokenizer("byte");
  const TokenCorpus c = TokenCorpus::open(write_file(tmp.file("a.txt"), std::string(1000, 'x')), "train", *tok, "k");
  EXPECT_EQ(c.tokens(), 1001u);  // + EOS
  const auto [head, tail] = c.split_tail(0.1);
  EXPECT_EQ(tail.tokens(), 100u);
  EXPECT_EQ(head.tokens(), 901u);
  try {
    TokenCorpus::open(write_file(tmp.file("b.txt"), "ok\xFF"), "train", *tok, "data.train");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("byte offset 2"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace sluice
