// Fixtures shared by test_text (torch-free: tokenizers, shards, `data prepare`) and test_data
// (the LibTorch side of the data pipeline): a trained SentencePiece tokenizer, prepared shards.
#pragma once
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/prepare.h"
#include "data/shard.h"
#include "sluice/errors.h"
#include "sluice/tokenizer.h"
#include "test_util.h"

namespace sluice::data_test {

namespace fs = std::filesystem;
using testing::TempDir;
using testing::write_file;


// Strings that must survive encode/decode: empty lines, tabs, emoji, scripts, odd code points.
inline const std::vector<std::string> kTricky = {
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

inline std::string corpus_text() {
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
  static inline TempDir* dir_ = nullptr;
};

struct RawShard {
  ShardHeader h;
  std::vector<uint16_t> tokens;
  std::vector<uint64_t> starts;
};

// An independent reader: plain stdio, following the format description in shard_format.h.
inline RawShard read_raw(const std::string& path) {
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

}  // namespace sluice::data_test
