// Torch-free readers of checkpoint files (train/safetensors_header.h, train/checkpoint_meta.h)
// and the in-memory shard check (validate_shard): valid input parses to what it holds, every
// kind of bad input is an InputError naming the file and the problem. The cases marked
// "fuzz:" are what the readers before sluice_formats got wrong (a crash, undefined behaviour or
// an exception other than InputError), found by fuzzing those readers or by review while
// writing the targets: docs/fuzzing.md, "Found and fixed".
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "data/shard.h"
#include "sluice/errors.h"
#include "test_util.h"
#include "train/checkpoint_meta.h"
#include "train/safetensors_header.h"

namespace sluice {
namespace {

using nlohmann::json;

// A safetensors file: 8-byte little-endian length, `header` JSON, `data_bytes` zero bytes.
std::string st_file(const std::string& header, size_t data_bytes) {
  std::string f(8, '\0');
  for (int i = 0; i < 8; ++i) f[i] = static_cast<char>((uint64_t{header.size()} >> (8 * i)) & 0xFF);
  return f + header + std::string(data_bytes, '\0');
}
std::string st_file(const json& header, size_t data_bytes) { return st_file(header.dump(), data_bytes); }

// The error message of parsing `file`, or "" when it parses.
std::string st_error(const std::string& file) {
  try {
    parse_safetensors(file, "x.safetensors");
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

json entry(const char* dtype, json shape, uint64_t b, uint64_t e) {
  return {{"dtype", dtype}, {"shape", std::move(shape)}, {"data_offsets", {b, e}}};
}

TEST(SafetensorsHeader, ParsesTensorsOffsetsAndMetadata) {
  const json h = {{"__metadata__", {{"format", "pt"}}},
                  {"b", entry("BF16", {2, 3}, 16, 28)},
                  {"a", entry("F32", {4}, 0, 16)},
                  {"empty", entry("I64", {0, 5}, 28, 28)},
                  {"scalar", entry("U8", json::array(), 28, 29)}};
  const std::string file = st_file(h, 29);
  const SafetensorsHeader p = parse_safetensors(file, "x");
  EXPECT_EQ(p.json_bytes, h.dump().size());
  EXPECT_EQ(p.data_offset(), 8 + h.dump().size());
  EXPECT_EQ(p.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ(p.tensors.size(), 4u);
  EXPECT_EQ(p.tensors[0].name, "a");  // name order
  EXPECT_EQ(p.tensors[0].dtype, "F32");
  EXPECT_EQ(p.tensors[0].element_bytes, 4);
  EXPECT_EQ(p.tensors[0].shape, (std::vector<int64_t>{4}));
  EXPECT_EQ(p.tensors[1].name, "b");
  EXPECT_EQ(p.tensors[1].element_bytes, 2);
  EXPECT_EQ(p.tensors[1].begin, 16u);
  EXPECT_EQ(p.tensors[1].end, 28u);
  EXPECT_EQ(p.tensors[2].shape, (std::vector<int64_t>{0, 5}));
  EXPECT_TRUE(p.tensors[3].shape.empty());
  EXPECT_EQ(safetensors_dtype_bytes("F64"), 8);
  EXPECT_EQ(safetensors_dtype_bytes("BOOL"), 1);
  EXPECT_EQ(safetensors_dtype_bytes("F8_E4M3"), 0);
}

TEST(SafetensorsHeader, RefusesBadLengthJsonAndEntries) {
  EXPECT_NE(st_error("1234567").find("truncated: 7 bytes"), std::string::npos);
  std::string f = st_file(json::object(), 0);
  f[0] = '\x7F';
  EXPECT_NE(st_error(f).find("bad header length 127"), std::string::npos);
  EXPECT_NE(st_error(st_file(std::string("{\"a\":"), 0)).find("header is not valid JSON"), std::string::npos);
  EXPECT_NE(st_error(st_file(json::array(), 0)).find("not a JSON object"), std::string::npos);
  EXPECT_NE(st_error(st_file(json{{"t", {{"dtype", "F32"}}}}, 0)).find("tensor 't': entry lacks"), std::string::npos);
  EXPECT_NE(st_error(st_file(json{{"t", entry("F7", {1}, 0, 4)}}, 4)).find("unknown dtype \"F7\""), std::string::npos);
  EXPECT_NE(st_error(st_file(json{{"t", entry("F32", {-1}, 0, 4)}}, 4)).find("bad shape [-1]"), std::string::npos);
  EXPECT_NE(st_error(st_file(json{{"t", entry("F32", {1.5}, 0, 4)}}, 4)).find("bad shape"), std::string::npos);
  EXPECT_NE(st_error(st_file(json{{"t", entry("F32", {2}, 0, 8)}}, 7)).find("outside the 7 data bytes"), std::string::npos);
  EXPECT_NE(st_error(st_file(json{{"t", entry("F32", {2}, 4, 0)}}, 8)).find("outside"), std::string::npos);
  EXPECT_NE(st_error(st_file(json{{"t", entry("F32", {3}, 0, 8)}}, 12)).find("8 bytes of data for shape [3] of F32 (12 expected)"),
            std::string::npos);
  EXPECT_NE(st_error(st_file(json{{"t", entry("F32", {2}, 0, 8)}, {"u", entry("F32", {2}, 4, 12)}}, 12)).find("ranges overlap"),
            std::string::npos);
  json offsets = entry("F32", {1}, 0, 4);
  offsets["data_offsets"] = {-1, 4};
  EXPECT_NE(st_error(st_file(json{{"t", offsets}}, 4)).find("bad data_offsets"), std::string::npos);
  EXPECT_EQ(st_error(st_file(json{{"t", entry("F32", {1}, 0, 4)}}, 4)), "");
}

// fuzz: a shape whose element count overflows int64 (signed overflow in numel x bytes before).
TEST(SafetensorsHeader, ShapeProductOverflowIsRefused) {
  const std::string msg = st_error(st_file(json{{"t", entry("F32", {uint64_t{1} << 32, uint64_t{1} << 32}, 0, 0)}}, 0));
  EXPECT_NE(msg.find("tensor 't': shape [4294967296,4294967296] of F32 is too large"), std::string::npos) << msg;
  const std::string big = st_error(st_file(json{{"t", entry("U8", {uint64_t{1} << 63}, 0, 0)}}, 0));
  EXPECT_NE(big.find("bad shape"), std::string::npos) << big;
}

// fuzz: a shape that is not a list (a number was read as a one-element shape, an object as its values).
TEST(SafetensorsHeader, ShapeMustBeAList) {
  EXPECT_NE(st_error(st_file(json{{"t", entry("F32", 1, 0, 4)}}, 4)).find("bad shape 1"), std::string::npos);
  EXPECT_NE(st_error(st_file(json{{"t", entry("F32", {{"a", 1}}, 0, 4)}}, 4)).find("bad shape"), std::string::npos);
}

// fuzz: __metadata__ that is not an object of strings (a string became metadata[""]).
TEST(SafetensorsHeader, MetadataMustMapStringsToStrings) {
  EXPECT_NE(st_error(st_file(json{{"__metadata__", "pt"}}, 0)).find("__metadata__ is not an object"), std::string::npos);
  EXPECT_NE(st_error(st_file(json{{"__metadata__", {{"n", 1}}}}, 0)).find("__metadata__ 'n' is not a string"),
            std::string::npos);
}

std::string index_error(const std::string& text) {
  try {
    parse_safetensors_index(text, "m.safetensors.index.json");
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(SafetensorsIndex, ParsesTheWeightMap) {
  const json j = {{"metadata", {{"total_size", 12}}},
                  {"weight_map", {{"w2", "m-00002-of-00002.safetensors"}, {"w1", "m-00001-of-00002.safetensors"},
                                  {"w3", "m-00002-of-00002.safetensors"}}}};
  const SafetensorsIndex idx = parse_safetensors_index(j.dump(2), "i");
  ASSERT_EQ(idx.weight_map.size(), 3u);
  EXPECT_EQ(idx.weight_map[0], (std::pair<std::string, std::string>{"w1", "m-00001-of-00002.safetensors"}));
  EXPECT_EQ(idx.files, (std::vector<std::string>{"m-00001-of-00002.safetensors", "m-00002-of-00002.safetensors"}));
}

// fuzz: a weight_map missing or not an object, or a file that is not a string, threw
// nlohmann::json::type_error (exit 1, no file named) instead of InputError.
TEST(SafetensorsIndex, RefusesMissingMapsNonStringsAndPathsOutsideTheDirectory) {
  EXPECT_NE(index_error("{").find("m.safetensors.index.json': not valid JSON"), std::string::npos);
  EXPECT_NE(index_error("[]").find("has no \"weight_map\""), std::string::npos);
  EXPECT_NE(index_error("5").find("has no \"weight_map\""), std::string::npos);  // the old reader's crash input
  EXPECT_NE(index_error("{\"weight_map\": 3}").find("has no \"weight_map\""), std::string::npos);
  EXPECT_NE(index_error("{\"weight_map\": {\"w\": 3}}").find("'w' is not a file name"), std::string::npos);
  for (const char* f : {"../x.safetensors", "/etc/passwd", "", ".."})
    EXPECT_NE(index_error(json{{"weight_map", {{"w", f}}}}.dump()).find("not a file beside the index"), std::string::npos) << f;
}

// trainer_state.json as save_checkpoint writes it (checkpoint.cpp, to_json).
const char* kState = R"({"step": 14, "tokens": 7168, "loader": {"next_batch": 28, "global_micro_batch": 4},
  "interval": {"loss_sum": 12.5, "finite_steps": 3, "steps": 4, "rank_loss_sums": [6.0, 6.5], "rank_finite_steps": [2, 1]},
  "skipped_steps": 1})";

std::string state_error(const std::string& text) {
  try {
    parse_training_state(text, "ck/trainer_state.json");
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(CheckpointMeta, ParsesTrainingState) {
  const TrainingState s = parse_training_state(kState, "t");
  EXPECT_EQ(s.step, 14);
  EXPECT_EQ(s.tokens, 7168);
  EXPECT_EQ(s.next_batch, 28u);
  EXPECT_EQ(s.global_micro_batch, 4u);
  EXPECT_EQ(s.interval_loss_sum, 12.5);
  EXPECT_EQ(s.interval_finite, 3);
  EXPECT_EQ(s.interval_steps, 4);
  EXPECT_EQ(s.rank_loss_sums, (std::vector<double>{6.0, 6.5}));
  EXPECT_EQ(s.rank_finite_steps, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(s.skipped_steps, 1);
  // Older checkpoints lack the optional keys.
  const TrainingState old = parse_training_state(
      R"({"step": 2, "tokens": 5, "loader": {"next_batch": 1}, "interval": {"loss_sum": 0, "finite_steps": 0, "steps": 0}})", "t");
  EXPECT_EQ(old.global_micro_batch, 0u);
  EXPECT_EQ(old.skipped_steps, 0);
  EXPECT_TRUE(old.rank_loss_sums.empty());
}

TEST(CheckpointMeta, TrainingStateProblemsNameFileAndKey) {
  EXPECT_NE(state_error("{").find("ck/trainer_state.json' is not valid JSON"), std::string::npos);
  json j = json::parse(kState);
  j.erase("tokens");
  EXPECT_NE(state_error(j.dump()).find("ck/trainer_state.json': tokens: missing"), std::string::npos);
  j = json::parse(kState);
  j["loader"]["next_batch"] = -1;
  EXPECT_NE(state_error(j.dump()).find("loader.next_batch: expected a non-negative integer, got -1"), std::string::npos);
  j = json::parse(kState);
  j["interval"]["rank_finite_steps"] = {1};
  EXPECT_NE(state_error(j.dump()).find("differ in length"), std::string::npos);
  j = json::parse(kState);
  j["step"] = "14";
  EXPECT_NE(state_error(j.dump()).find("step: expected an integer, got \"14\""), std::string::npos);
}

// fuzz: numbers the old reader converted with undefined behaviour (a double beyond int64
// cast to int64) or silently (-1 as uint64, 14.5 as 14), and non-objects where objects belong
// (nlohmann::json::type_error instead of InputError).
TEST(CheckpointMeta, TrainingStateOutOfRangeNumbersAndWrongShapes) {
  for (const char* v : {"1e300", "-1e300", "14.5", "9223372036854775808", "-3"}) {
    json j = json::parse(kState);
    j["step"] = json::parse(v);
    EXPECT_NE(state_error(j.dump()).find("ck/trainer_state.json': step: "), std::string::npos) << v;
  }
  EXPECT_NE(state_error("[1]").find("(top level): expected an object"), std::string::npos);
  json j = json::parse(kState);
  j["loader"] = 5;
  EXPECT_NE(state_error(j.dump()).find("loader: expected an object"), std::string::npos);
  j = json::parse(kState);
  j["interval"]["rank_loss_sums"] = "x";
  EXPECT_NE(state_error(j.dump()).find("interval.rank_loss_sums: expected a list"), std::string::npos);
}

std::string meta_error(const std::string& text) {
  try {
    check_checkpoint_meta(text, "ck", "ck/meta.json");
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(CheckpointMeta, MetaJson) {
  json meta = {{"format", "sluice-checkpoint"}, {"format_version", kCheckpointFormat}, {"sluice_version", "0.1.0"}};
  EXPECT_EQ(meta_error(meta.dump()), "");
  meta["format_version"] = 99;
  EXPECT_NE(meta_error(meta.dump()).find("checkpoint 'ck': format version 99 (written by sluice 0.1.0)"), std::string::npos);
  EXPECT_NE(meta_error("{}").find("not a sluice checkpoint's"), std::string::npos);
  EXPECT_NE(meta_error("nope").find("ck/meta.json' is not valid JSON"), std::string::npos);
}

// fuzz: "format" not a string, meta.json not an object, or format_version a huge double threw
// type_error or was undefined behaviour (double -> int) in the old reader.
TEST(CheckpointMeta, MetaJsonOfWrongTypes) {
  EXPECT_NE(meta_error("[]").find("not a sluice checkpoint's"), std::string::npos);
  EXPECT_NE(meta_error("8").find("not a sluice checkpoint's"), std::string::npos);  // the old reader's crash input
  EXPECT_NE(meta_error(R"({"format": 1})").find("not a sluice checkpoint's"), std::string::npos);
  for (const char* v : {"1e300", "1.0", "\"1\"", "null"}) {
    const std::string msg = meta_error(std::string(R"({"format": "sluice-checkpoint", "format_version": )") + v + "}");
    EXPECT_NE(msg.find("format version " + json::parse(v).dump()), std::string::npos) << v << ": " << msg;
  }
  EXPECT_EQ(meta_error(R"({"format": "sluice-checkpoint", "format_version": 1, "sluice_version": 3})"), "");
}

TEST(ShardMemory, ValidateShardSeesWhatTheWriterWrote) {
  testing::TempDir dir;
  const std::string path = dir.file("s.bin");
  ShardWriter w(path, 2, 0xABCDu, 300);
  const int32_t a[] = {5, 6, 7}, b[] = {299};
  w.begin_document();
  w.append(a, 3);
  w.begin_document();
  w.append(b, 1);
  w.finish();
  const std::string bytes = testing::read_file(path);
  std::vector<uint64_t> aligned((bytes.size() + 7) / 8);
  std::memcpy(aligned.data(), bytes.data(), bytes.size());
  const auto* p = reinterpret_cast<const unsigned char*>(aligned.data());
  const ShardHeader h = validate_shard(p, bytes.size(), path, 0xABCDu, true);
  EXPECT_EQ(h.token_count, 4u);
  EXPECT_EQ(h.doc_count, 2u);
  EXPECT_EQ(h.vocab_size, 300u);
  EXPECT_THROW(validate_shard(p, bytes.size(), path, 0x1234u, true), InputError);
  EXPECT_THROW(validate_shard(p, bytes.size() - 8, path, 0, false), InputError);
  aligned[8] ^= 1;  // a token: the checksum no longer matches
  EXPECT_THROW(validate_shard(p, bytes.size(), path, 0, true), InputError);
  EXPECT_NO_THROW(validate_shard(p, bytes.size(), path, 0, false));
}

// read_whole_file (sluice/fs.h), which the file readers of checkpoints, corpora, event files and
// imports share: every byte, NULs included, over several reads; nullopt, not an empty string,
// for what cannot be read.
TEST(ReadWholeFile, ReturnsEveryByteOrNulloptForWhatCannotBeRead) {
  testing::TempDir dir;
  std::string bytes(200000, '\0');  // > the 64 KiB read buffer
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7 % 256);
  testing::write_file(dir.file("f.bin"), bytes);
  testing::write_file(dir.file("empty"), "");
  EXPECT_EQ(read_whole_file(dir.file("f.bin")), bytes);
  EXPECT_EQ(read_whole_file(dir.file("empty")), std::string());
  EXPECT_EQ(read_whole_file(dir.file("missing")), std::nullopt);
  EXPECT_EQ(read_whole_file(dir.path()), std::nullopt);  // a directory opens but does not read
}

}  // namespace
}  // namespace sluice
