// Data pipeline: UTF-8, tokenizers, shards, corpus, loader, prefetcher (all on generated text).
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
#include "sluice/errors.h"
#include "sluice/tokenizer.h"
#include "test_util.h"

namespace sluice {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;
using testing::write_file;

// Strings that must survive encode/decode: empty lines, tabs, emoji, scripts, odd code points.
const std::vector<std::string> kTricky = {
    "",
    "\n",
    "\n\n\n",
    "a\tb\t\tc",
    "  leading and trailing spaces  ",
    "many     spaces",
    "emoji 😀👍🏽 and ZWJ 👩‍👩‍👧",
    "日本語のテキスト、中文字符。",
    "Ελληνικά και русский",
    "combining e\u0301 and BOM \xEF\xBB\xBF",
    "edges \xEF\xBF\xBF U+FFFF and \xF4\x8F\xBF\xBF U+10FFFF and \xC2\x80",
    "digits 12345 67890 3.14159",
    "mixed\r\nline\rendings\n",
    "trailing newline\n",
};

std::string corpus_text() {
  std::string s = testing::make_corpus(30000);
  for (const auto& t : kTricky) s += t + "\n";
  return s;
}

class Sp : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    const std::string text = write_file(dir_->file("train.txt"), corpus_text());
    TokenizerTrainingOptions o;
    o.inputs = {text};
    o.vocab_size = 400;
    o.out_dir = dir_->file("tok");
    o.threads = 1;
    train_tokenizer(o);
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string tok_dir() { return dir_->file("tok"); }
  static TempDir* dir_;
};
TempDir* Sp::dir_ = nullptr;

TEST(Utf8, AcceptsValidText) {
  for (const auto& t : kTricky) EXPECT_EQ(find_invalid_utf8(t), Utf8Validator::npos) << t;
}

TEST(Utf8, RejectsInvalidSequencesAtTheirOffset) {
  const std::vector<std::pair<std::string, uint64_t>> bad = {
      {"ab\x80", 2},                     // lone continuation byte
      {"x\xC0\x80", 1},                  // overlong NUL
      {"xy\xE0\x80\x80", 2},             // overlong 3-byte
      {"\xED\xA0\x80", 0},               // UTF-16 surrogate
      {"ok \xF4\x90\x80\x80", 3},        // above U+10FFFF
      {"abc\xE2\x82", 3},                // cut off at the end
      {"\xF8\x88\x80\x80\x80", 0},       // 5-byte form
      {"good \xC3\x28 bad", 5},          // lead byte followed by ASCII
  };
  for (const auto& [text, offset] : bad) EXPECT_EQ(find_invalid_utf8(text), offset) << ::testing::PrintToString(text);
}

TEST(Utf8, BlocksMayCutSequences) {
  const std::string text = "héllo 😀 wörld \xE2\x82\xAC";
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    Utf8Validator v;
    EXPECT_EQ(v.feed(text.substr(0, cut)), Utf8Validator::npos);
    EXPECT_EQ(v.feed(text.substr(cut)), Utf8Validator::npos);
    EXPECT_EQ(v.finish(), Utf8Validator::npos);
  }
  Utf8Validator v;  // offsets are counted over the whole stream
  EXPECT_EQ(v.feed("abc"), Utf8Validator::npos);
  EXPECT_EQ(v.feed("d\xFF"), 4u);
}

TEST(ByteTokenizer, RoundTripsAnyBytesAndHasSpecials) {
  ByteTokenizer tok;
  for (const auto& t : kTricky) EXPECT_EQ(tok.decode(tok.encode(t)), t);
  EXPECT_EQ(tok.vocab_size(), 259);
  EXPECT_EQ(tok.specials().eos, 257);
  EXPECT_EQ(tok.decode({104, 105, ByteTokenizer::kEos}), "hi");
  EXPECT_EQ(load_tokenizer("byte")->hash(), tok.hash());
}

TEST_F(Sp, TrainedTokenizerRoundTripsArbitraryUtf8) {
  const auto tok = load_tokenizer(tok_dir());
  EXPECT_EQ(tok->kind(), "sentencepiece");
  EXPECT_EQ(tok->vocab_size(), 400);
  for (const auto& t : kTricky) EXPECT_EQ(tok->decode(tok->encode(t)), t) << t;
  // characters never seen in training come back through byte fallback
  const std::string unseen = "Ѯ ᚠ 𝄞 ∮ ﷺ";
  EXPECT_EQ(tok->decode(tok->encode(unseen)), unseen);
  const auto json = nlohmann::json::parse(testing::read_file(tok_dir() + "/tokenizer.json"));
  EXPECT_EQ(json["vocab_size"], 400);
  EXPECT_EQ(json["eos_id"], 2);
  EXPECT_EQ(json["pad_id"], 3);
  EXPECT_EQ(json["hash"], hex64(tok->hash()));
  // the .model file loads the same way as its folder
  EXPECT_EQ(load_tokenizer(tok_dir() + "/tokenizer.model")->hash(), tok->hash());
}

TEST_F(Sp, CachedEncoderEqualsWholeTextEncoding) {
  const auto tok = load_tokenizer(tok_dir());
  CachedEncoder enc(*tok);
  EXPECT_TRUE(enc.segmenting());
  std::mt19937 rng(7);
  const std::vector<std::string> parts = {"the", " ", "  ", "cat", "\n", "\t", "😀", "12", "sat.", "mat", "日本", "   "};
  for (int trial = 0; trial < 200; ++trial) {
    std::string text;
    const int n = static_cast<int>(rng() % 40);
    for (int i = 0; i < n; ++i) text += parts[rng() % parts.size()];
    std::vector<int32_t> fast;
    enc.encode(text, fast);
    EXPECT_EQ(fast, tok->encode(text)) << ::testing::PrintToString(text);
  }
  for (const auto& t : kTricky) {
    std::vector<int32_t> fast;
    enc.encode(t, fast);
    EXPECT_EQ(fast, tok->encode(t)) << t;
  }
}

TEST_F(Sp, TrainingRefusesBadArguments) {
  TokenizerTrainingOptions o;
  o.inputs = {dir_->file("train.txt")};
  o.out_dir = tok_dir();
  EXPECT_THROW(train_tokenizer(o), InputError);  // already holds a tokenizer
  o.out_dir = dir_->file("too-big");
  o.vocab_size = 50000;  // far more pieces than the text has
  try {
    train_tokenizer(o);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("vocab"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir_->file("too-big")));
  o.inputs = {dir_->file("missing.txt")};
  EXPECT_THROW(train_tokenizer(o), InputError);
  EXPECT_THROW(load_tokenizer(dir_->file("nowhere")), InputError);
}

// --- shards ---------------------------------------------------------------------------

struct RawShard {
  ShardHeader h;
  std::vector<uint16_t> tokens;
  std::vector<uint64_t> starts;
};

// An independent reader: plain stdio, following the format description in shard_format.h.
RawShard read_raw(const std::string& path) {
  RawShard r{};
  FILE* f = std::fopen(path.c_str(), "rb");
  EXPECT_NE(f, nullptr);
  EXPECT_EQ(std::fread(&r.h, 64, 1, f), 1u);
  r.tokens.resize(r.h.token_count);
  EXPECT_EQ(std::fread(r.tokens.data(), 2, r.h.token_count, f), r.h.token_count);
  std::fseek(f, static_cast<long>(64 + (r.h.token_count * 2 + 7) / 8 * 8), SEEK_SET);
  r.starts.resize(r.h.doc_count);
  EXPECT_EQ(std::fread(r.starts.data(), 8, r.h.doc_count, f), r.h.doc_count);
  std::fclose(f);
  return r;
}

class Prepare : public Sp {
 protected:
  TempDir tmp;
  std::vector<std::string> docs = {"first document\nwith two lines\n", "second 😀\n", "", "third\tone",
                                   "fourth and last document\n"};
  std::string input_dir() {
    const std::string d = tmp.file("input");
    fs::create_directories(d);
    for (size_t i = 0; i < docs.size(); ++i) write_file(d + "/doc" + std::to_string(i) + ".txt", docs[i]);
    write_file(d + "/.hidden", "never read");
    return d;
  }
  PrepareOptions options(const std::string& out) {
    PrepareOptions o;
    o.tokenizer = tok_dir();
    o.inputs = {input_dir()};
    o.out_dir = tmp.file(out);
    o.progress = false;
    o.workers = 2;
    return o;
  }
};

TEST_F(Prepare, ShardsHoldEveryDocumentFollowedByEos) {
  const auto tok = load_tokenizer(tok_dir());
  const PrepareSummary s = prepare_shards(options("ds"));
  EXPECT_EQ(s.train_documents, docs.size());
  const RawShard r = read_raw(tmp.file("ds/train-00000.bin"));
  EXPECT_EQ(std::string(r.h.magic, 8), "SLUICETK");
  EXPECT_EQ(r.h.version, 1u);
  EXPECT_EQ(r.h.token_bytes, 2u);
  EXPECT_EQ(r.h.tokenizer_hash, tok->hash());
  EXPECT_EQ(r.h.vocab_size, 400u);
  EXPECT_EQ(fs::file_size(tmp.file("ds/train-00000.bin")), 64 + (r.h.token_count * 2 + 7) / 8 * 8 + r.h.doc_count * 8);
  std::vector<uint16_t> expect;
  std::vector<uint64_t> starts;
  for (const auto& d : docs) {  // files in sorted order; the hidden file is skipped
    starts.push_back(expect.size());
    for (int32_t id : tok->encode(d)) expect.push_back(static_cast<uint16_t>(id));
    expect.push_back(static_cast<uint16_t>(tok->specials().eos));
  }
  EXPECT_EQ(r.tokens, expect);
  EXPECT_EQ(r.starts, starts);
  const auto m = nlohmann::json::parse(testing::read_file(tmp.file("ds/manifest.json")));
  EXPECT_EQ(m["splits"]["train"]["tokens"], expect.size());
  EXPECT_EQ(m["tokenizer"]["hash"], hex64(tok->hash()));
  EXPECT_EQ(m["sources"].size(), docs.size());
  EXPECT_EQ(m["token_dtype"], "uint16");
}

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

TEST_F(Prepare, WorkerCountDoesNotChangeTheOutput) {
  std::string big;
  while (big.size() < 3'000'000) big += testing::make_corpus(100000) + "\n";  // > 1 MiB: several chunks
  PrepareOptions a = options("w1"), b = options("w3");
  a.inputs = b.inputs = {write_file(tmp.file("big.txt"), big)};
  a.workers = 1;
  b.workers = 3;
  prepare_shards(a);
  prepare_shards(b);
  EXPECT_EQ(testing::read_file(tmp.file("w1/train-00000.bin")), testing::read_file(tmp.file("w3/train-00000.bin")));
}

TEST_F(Prepare, InvalidUtf8NamesFileAndOffsetAndLeavesNothing) {
  PrepareOptions o = options("bad");
  o.inputs = {write_file(tmp.file("bad.txt"), "fine text\nthen \xC3\x28 broken")};
  try {
    prepare_shards(o);
    FAIL();
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("bad.txt"), std::string::npos) << msg;
    EXPECT_NE(msg.find("byte offset 15"), std::string::npos) << msg;
  }
  EXPECT_FALSE(fs::exists(tmp.file("bad")));
}

TEST_F(Prepare, RefusesBadArguments) {
  PrepareOptions o = options("x");
  o.out_dir = input_dir();  // not empty
  EXPECT_THROW(prepare_shards(o), InputError);
  o = options("x");
  o.inputs = {tmp.file("nope")};
  EXPECT_THROW(prepare_shards(o), InputError);
  o = options("x");
  o.tokenizer = tmp.file("no-tokenizer");
  EXPECT_THROW(prepare_shards(o), InputError);
  o = options("x");
  o.val_fraction = 0.5;  // 5 documents, every 2nd -> fine; but one document cannot be split
  o.inputs = {write_file(tmp.file("one.txt"), "just one document")};
  EXPECT_THROW(prepare_shards(o), InputError);
  EXPECT_FALSE(fs::exists(tmp.file("x")));
}

// Corruption cases: each must be an InputError naming the shard and the problem.
class Corrupt : public Prepare {
 protected:
  std::string shard;
  void SetUp() override {
    prepare_shards(options("ds"));
    shard = tmp.file("ds/train-00000.bin");
  }
  void patch(size_t offset, const std::string& bytes) {
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(offset));
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  std::string open_error(uint64_t hash = 0) {
    try {
      ShardReader r(shard, hash, true);
    } catch (const InputError& e) {
      return e.what();
    }
    return "";
  }
};

TEST_F(Corrupt, TruncatedFile) {
  fs::resize_file(shard, fs::file_size(shard) - 3);
  EXPECT_NE(open_error().find("truncated or corrupt"), std::string::npos);
  fs::resize_file(shard, 10);
  EXPECT_NE(open_error().find("smaller than the 64-byte header"), std::string::npos);
}
TEST_F(Corrupt, BadMagic) {
  patch(0, "NOTSLUIC");
  EXPECT_NE(open_error().find("bad magic"), std::string::npos);
}
TEST_F(Corrupt, FutureVersion) {
  patch(8, std::string("\x07\x00\x00\x00", 4));
  EXPECT_NE(open_error().find("format version 7"), std::string::npos);
}
TEST_F(Corrupt, BadTokenSize) {
  patch(12, std::string("\x03\x00\x00\x00", 4));
  EXPECT_NE(open_error().find("token size 3"), std::string::npos);
}
TEST_F(Corrupt, FlippedTokenFailsChecksum) {
  patch(64 + 2, "\x55");
  const std::string msg = open_error();
  EXPECT_NE(msg.find("checksum mismatch"), std::string::npos) << msg;
  EXPECT_NE(msg.find("train-00000.bin"), std::string::npos) << msg;
}
TEST_F(Corrupt, BrokenDocumentIndex) {
  const RawShard r = read_raw(shard);
  patch(64 + (r.h.token_count * 2 + 7) / 8 * 8 + 8, std::string(8, '\0'));  // second start = 0
  EXPECT_NE(open_error().find("corrupt document index at entry 1"), std::string::npos);
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
