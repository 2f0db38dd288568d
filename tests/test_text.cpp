// Torch-free data code: UTF-8, tokenizers, shards (writer, reader, corruption), `data prepare`
// (all on generated text). Links sluice_text only, so it also runs under ASan+UBSan
// (scripts/sanitize.sh).
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "data/byte_tokenizer.h"
#include "data/cached_encoder.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "data/utf8.h"
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

}  // namespace
}  // namespace sluice
