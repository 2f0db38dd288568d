// TensorBoard event files without TensorFlow (train/tensorboard_events.h, tensorboard_writer.h):
// checksums and bytes against vectors from TensorBoard's own Python implementation
// (tensorboard 2.21: event_pb2.Event.SerializeToString, record_writer.RecordWriter,
// pywrap_tensorflow.masked_crc32c), reading back, and the cut-back a resumed run relies on.
// TensorBoard's reader itself reads a trained run's files in test_tensorboard.cpp.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "sluice/errors.h"
#include "test_util.h"
#include "train/tensorboard_events.h"
#include "train/tensorboard_writer.h"

namespace sluice {
namespace {

std::string unhex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

// Event(wall_time=1767225600.25, step=300) with scalars loss=2.5 and moe_load_cv/layer_1=-0.125
const char* kScalarEventHex =
    "09000010406e55da4110ac022a290a0b0a046c6f737315000020400a1a0a136d6f655f6c6f61645f63762f6c617965725f3115000000be";
// Event(wall_time=1.5, file_version="brain.Event:2"), and the same framed by RecordWriter
const char* kVersionEventHex = "09000000000000f83f1a0d627261696e2e4576656e743a32";
const char* kVersionRecordHex = "1800000000000000a37f4b2209000000000000f83f1a0d627261696e2e4576656e743a322a28646c";

TEST(TensorBoardEvents, Crc32cOfTheCheckString) {
  EXPECT_EQ(tb::crc32c("123456789"), 0xe3069283u);  // the CRC-32C check value
  EXPECT_EQ(tb::masked_crc32c("123456789"), 0xc78ab0e5u);
  EXPECT_EQ(tb::crc32c(""), 0u);
}

TEST(TensorBoardEvents, BytesEqualTensorBoardsOwn) {
  tb::Event e;
  e.wall_time = 1767225600.25;
  e.step = 300;
  e.scalars = {{"loss", 2.5f}, {"moe_load_cv/layer_1", -0.125f}};
  EXPECT_EQ(tb::encode_event(e), unhex(kScalarEventHex));
  tb::Event v;
  v.wall_time = 1.5;
  v.file_version = "brain.Event:2";
  EXPECT_EQ(tb::encode_event(v), unhex(kVersionEventHex));
  EXPECT_EQ(tb::frame_record(unhex(kVersionEventHex)), unhex(kVersionRecordHex));
}

TEST(TensorBoardEvents, DecodesTensorBoardsBytesAndRoundTrips) {
  const auto e = tb::decode_event(unhex(kScalarEventHex));
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->wall_time, 1767225600.25);
  EXPECT_EQ(e->step, 300);
  ASSERT_EQ(e->scalars.size(), 2u);
  EXPECT_EQ(e->scalars[1].tag, "moe_load_cv/layer_1");
  EXPECT_EQ(e->scalars[1].value, -0.125f);
  tb::Event neg;
  neg.step = -5;  // int64 as a 10-byte varint
  neg.scalars = {{"x", 1e-30f}};
  const auto back = tb::decode_event(tb::encode_event(neg));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->step, -5);
  EXPECT_EQ(back->scalars[0].value, 1e-30f);
}

TEST(TensorBoardEvents, MalformedEventsAreRefused) {
  const std::string good = unhex(kScalarEventHex);
  for (size_t cut = 1; cut < good.size(); ++cut) {
    // a prefix is either a whole event (cut between fields) or refused; never read past the end
    const auto e = tb::decode_event(good.substr(0, cut));
    if (e) EXPECT_LE(e->scalars.size(), 2u);
  }
  EXPECT_FALSE(tb::decode_event(unhex("0a")).has_value());          // wall_time with the wrong wire type, no bytes
  EXPECT_FALSE(tb::decode_event(unhex("10ffffffffffffffffffff01")).has_value());  // an 11-byte varint
  EXPECT_FALSE(tb::decode_event(unhex("2a05")).has_value());        // summary longer than the event
  EXPECT_FALSE(tb::decode_event(unhex("3b")).has_value());          // a group (field 7)
  EXPECT_TRUE(tb::decode_event(unhex("3801")).has_value());         // unknown field 7 varint: skipped
}

TEST(TensorBoardEvents, ScanStopsAtATruncatedOrCorruptRecord) {
  const std::string a = tb::frame_record("first"), b = tb::frame_record("second");
  tb::RecordScan s = tb::scan_records(a + b);
  EXPECT_EQ(s.payloads, (std::vector<std::string>{"first", "second"}));
  EXPECT_EQ(s.valid_bytes, a.size() + b.size());
  EXPECT_TRUE(s.problem.empty());
  for (size_t cut = 0; cut < b.size(); ++cut) {
    s = tb::scan_records(a + b.substr(0, cut));
    EXPECT_EQ(s.payloads.size(), 1u) << cut;
    EXPECT_EQ(s.valid_bytes, a.size()) << cut;
    EXPECT_EQ(s.problem.empty(), cut == 0) << cut;
  }
  std::string flipped = a + b;
  flipped[a.size() + 14] ^= 1;  // a payload byte of the second record
  s = tb::scan_records(flipped);
  EXPECT_EQ(s.payloads.size(), 1u);
  EXPECT_EQ(s.problem, "a record with a wrong checksum");
  flipped = a + b;
  flipped[a.size()] = 'X';  // its length
  EXPECT_EQ(tb::scan_records(flipped).problem, "a record length with a wrong checksum");
}

TEST(TensorBoardEvents, RecordScalarsAreFlattenedToTags) {
  const nlohmann::json rec = {{"step", 40},        {"loss", 2.0},          {"val_loss", 2.5},
                              {"moe_layer", {1, 3}}, {"moe_load_cv", {0.1, 0.3}}, {"note", "text"},
                              {"flags", true},     {"extra", {{"a", 1}}},  {"list", {7, 8, 9}}};
  std::map<std::string, float> got;
  for (const tb::Scalar& s : tensorboard_scalars(rec)) got[s.tag] = s.value;
  const std::map<std::string, float> want = {{"loss", 2.0f},        {"val_loss", 2.5f}, {"moe_load_cv/layer_1", 0.1f},
                                             {"moe_load_cv/layer_3", 0.3f}, {"extra/a", 1.0f}, {"list/0", 7.0f},
                                             {"list/1", 8.0f},      {"list/2", 9.0f}};
  EXPECT_EQ(got, want);
}

TEST(TensorBoardEvents, EvaluationResultsAreTaggedByEvaluationAndLength) {
  const nlohmann::json ppl = {{"kind", "eval_ppl"},
                              {"settings", {{"overrides", nlohmann::json::array()}}},
                              {"results",
                               {{{"seq_len", 128}, {"stride", nullptr}, {"nll", 2.0}, {"ppl", 7.5}},
                                {{"seq_len", 512}, {"stride", 64}, {"nll", 3.0}, {"ppl", 20.0}}}}};
  std::map<std::string, float> got;
  for (const tb::Scalar& s : eval_tensorboard_scalars(ppl)) got[s.tag] = s.value;
  EXPECT_EQ(got, (std::map<std::string, float>{{"eval_ppl/len_128", 7.5f},
                                               {"eval_nll/len_128", 2.0f},
                                               {"eval_ppl/len_512_stride_64", 20.0f},
                                               {"eval_nll/len_512_stride_64", 3.0f}}));
  const nlohmann::json passkey = {{"kind", "eval_passkey"},
                                  {"settings", {{"overrides", {"model.rope.scaling=yarn"}}}},
                                  {"results", {{{"length", 2048}, {"accuracy", 0.25}}}}};
  got.clear();
  for (const tb::Scalar& s : eval_tensorboard_scalars(passkey)) got[s.tag] = s.value;
  EXPECT_EQ(got, (std::map<std::string, float>{{"eval_passkey[model.rope.scaling=yarn]/len_2048", 0.25f}}));
  const nlohmann::json stats = {{"kind", "stats_attention"},
                                {"sink", {{"mean", 0.5}, {"share_heads_over_half", 0.25}, {"per_layer", {0.4, nullptr}}}},
                                {"gates", {{"per_layer", {{{"mean", 0.1}}, nullptr}}}},
                                {"sparsity", nullptr},
                                {"activations", {{"per_layer", {{{"residual_max", 9.0}}, {{"residual_max", 12.0}}}}}}};
  got.clear();
  for (const tb::Scalar& s : eval_tensorboard_scalars(stats)) got[s.tag] = s.value;
  EXPECT_EQ(got, (std::map<std::string, float>{{"stats/sink/mean", 0.5f},
                                               {"stats/sink/share_heads_over_half", 0.25f},
                                               {"stats/sink/layer_0", 0.4f},
                                               {"stats/gate_mean/layer_0", 0.1f},
                                               {"stats/residual_max/layer_0", 9.0f},
                                               {"stats/residual_max/layer_1", 12.0f}}));
  EXPECT_TRUE(eval_tensorboard_scalars({{"kind", "something_else"}, {"results", {1}}}).empty());
}

// The events of a file: step -> {tag: value}, and how many events had each step.
struct FileEvents {
  std::string version;
  std::map<int64_t, std::map<std::string, float>> scalars;
  std::map<int64_t, int> count;
};
FileEvents read_events(const std::string& path) {
  FileEvents out;
  const tb::RecordScan scan = tb::scan_records(testing::read_file(path));
  EXPECT_TRUE(scan.problem.empty()) << scan.problem;
  for (const std::string& p : scan.payloads) {
    const auto e = tb::decode_event(p);
    EXPECT_TRUE(e.has_value());
    if (!e) continue;
    if (!e->file_version.empty()) {
      out.version = e->file_version;
      continue;
    }
    ++out.count[e->step];
    for (const tb::Scalar& s : e->scalars) out.scalars[e->step][s.tag] = s.value;
  }
  return out;
}

TEST(TensorBoardWriter, ResumeCutsBackAndAppendsWithoutRepeatingSteps) {
  testing::TempDir dir;
  std::string path;
  {
    TensorBoardWriter w(dir.path(), 0);
    path = w.path();
    EXPECT_EQ(std::filesystem::path(path).parent_path().filename(), "tb");
    EXPECT_EQ(std::filesystem::path(path).filename().string().rfind("events.out.tfevents.", 0), 0u);
    for (int step = 1; step <= 5; ++step) w.write({{"step", step}, {"loss", 10.0 - step}});
  }
  testing::write_file(path, testing::read_file(path) + tb::frame_record("cut sh").substr(0, 9));  // killed mid-write
  {
    TensorBoardWriter w(dir.path(), 3);  // resumed from the checkpoint of step 3
    EXPECT_EQ(w.path(), path);           // the same file goes on
    for (int step = 4; step <= 6; ++step) w.write({{"step", step}, {"loss", 100.0 + step}});
  }
  const FileEvents f = read_events(path);
  EXPECT_EQ(f.version, "brain.Event:2");
  ASSERT_EQ(f.scalars.size(), 6u);
  for (int step = 1; step <= 6; ++step) {
    EXPECT_EQ(f.count.at(step), 1) << step;
    EXPECT_EQ(f.scalars.at(step).at("loss"), step <= 3 ? 10.0f - step : 100.0f + step) << step;
  }
  EXPECT_EQ(truncate_event_file(path, 2), 4u);  // steps 3..6
  EXPECT_EQ(read_events(path).scalars.size(), 2u);
  // one it cannot read is an error, not an empty file left uncut
  EXPECT_THROW(truncate_event_file(dir.path(), 2), ResourceError);
}

TEST(TensorBoardWriter, ARunWithoutEventsGetsItsMetricsRecordsFirst) {
  testing::TempDir dir;
  testing::write_file(dir.file("metrics.jsonl"), "{\"step\": 1, \"loss\": 3.0}\n{\"step\": 2, \"loss\": 2.0}\n"
                                                 "{\"step\": 3, \"loss\": 1.0}\n{\"step\": 4, \"lo");
  {
    TensorBoardWriter w(dir.path(), 2);
    w.write({{"step", 3}, {"loss", 0.5}});
  }
  const auto files = std::vector<std::filesystem::directory_entry>(
      std::filesystem::directory_iterator(dir.file("tb")), std::filesystem::directory_iterator());
  ASSERT_EQ(files.size(), 1u);
  const FileEvents f = read_events(files[0].path().string());
  ASSERT_EQ(f.scalars.size(), 3u);
  EXPECT_EQ(f.scalars.at(1).at("loss"), 3.0f);
  EXPECT_EQ(f.scalars.at(2).at("loss"), 2.0f);
  EXPECT_EQ(f.scalars.at(3).at("loss"), 0.5f);
}

TEST(TensorBoardWriter, AnEvaluationIsOneEventInItsOwnFile) {
  testing::TempDir dir;
  const std::string a = write_eval_event(dir.path(), 40, {{"eval_ppl/len_128", 7.5f}});
  const std::string b = write_eval_event(dir.path(), 40, {{"eval_passkey/len_128", 1.0f}});
  EXPECT_NE(a, b);
  EXPECT_EQ(std::filesystem::path(a).parent_path(), std::filesystem::path(dir.file("tb/eval")));
  const FileEvents f = read_events(a);
  EXPECT_EQ(f.version, "brain.Event:2");
  EXPECT_EQ(f.scalars.at(40).at("eval_ppl/len_128"), 7.5f);
  // a resumed training run cuts back tb/'s own files only
  TensorBoardWriter w(dir.path(), 0);
  EXPECT_EQ(read_events(a).scalars.size(), 1u);
}

}  // namespace
}  // namespace sluice
