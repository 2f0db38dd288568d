// TensorBoard's event-file format, written and read without TensorFlow or protobuf: TFRecord
// framing with masked CRC-32C, and the few fields of the Event / Summary protos that scalars
// use. Debian (bookworm) packages neither a TensorBoard writer nor a CRC-32C library for C++.
//
// TFRecord, per record:  uint64 length | uint32 masked_crc32c(length) | payload | uint32 masked_crc32c(payload)
// Event proto fields:    1 wall_time (double), 2 step (int64), 3 file_version (string), 5 summary
// Summary:               1 value (repeated);  Summary.Value: 1 tag (string), 2 simple_value (float)
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::tb {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord uses it.
uint32_t crc32c(std::string_view data);
// TFRecord's mask: rotate right by 15 bits and add 0xa282ead8.
uint32_t masked_crc32c(std::string_view data);

// One payload in TFRecord framing.
std::string frame_record(std::string_view payload);

// The records of a TFRecord stream up to the first one that is incomplete or fails a checksum
// (a file a killed writer left behind); `valid_bytes` is where that record starts.
struct RecordScan {
  std::vector<std::string> payloads;
  size_t valid_bytes = 0;
  std::string problem;  // empty when the whole stream was read
};
RecordScan scan_records(std::string_view stream);

struct Scalar {
  std::string tag;
  float value = 0;
};

struct Event {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;     // "brain.Event:2" in a file's first event; empty otherwise
  std::vector<Scalar> scalars;  // Summary.value with simple_value
};

std::string encode_event(const Event& event);
// Decodes the fields above and skips every other field; nullopt when the bytes are not a
// well-formed Event (truncated varints or lengths, wrong wire types for known fields).
std::optional<Event> decode_event(std::string_view payload);

}  // namespace sluice::tb
