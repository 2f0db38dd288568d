#include "train/tensorboard_events.h"

#include <array>
#include <cstring>

namespace sluice::tb {
namespace {

constexpr std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) != 0 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kCrc32cTable = make_crc32c_table();

void put_fixed32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put_fixed64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint32_t get_fixed32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}
uint64_t get_fixed64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

// --- protobuf wire format: the subset Event and Summary need ---
enum Wire : uint32_t { kVarint = 0, kFixed64 = 1, kBytes = 2, kFixed32 = 5 };

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void put_key(std::string& out, uint32_t field, Wire wire) { put_varint(out, (uint64_t{field} << 3) | wire); }
void put_bytes(std::string& out, uint32_t field, std::string_view bytes) {
  put_key(out, field, kBytes);
  put_varint(out, bytes.size());
  out.append(bytes);
}

class Reader {
 public:
  explicit Reader(std::string_view s) : s_(s) {}
  bool done() const { return pos_ == s_.size(); }
  bool varint(uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ == s_.size()) return false;
      const auto b = static_cast<unsigned char>(s_[pos_++]);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return true;
    }
    return false;  // more than 10 bytes
  }
  bool fixed32(uint32_t& v) {
    if (s_.size() - pos_ < 4) return false;
    v = get_fixed32(s_.data() + pos_);
    pos_ += 4;
    return true;
  }
  bool fixed64(uint64_t& v) {
    if (s_.size() - pos_ < 8) return false;
    v = get_fixed64(s_.data() + pos_);
    pos_ += 8;
    return true;
  }
  bool bytes(std::string_view& b) {
    uint64_t n = 0;
    if (!varint(n) || n > s_.size() - pos_) return false;
    b = s_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  // Skips a field of an unknown number; groups (wire types 3, 4) are not accepted.
  bool skip(uint32_t wire) {
    uint64_t u64 = 0;
    uint32_t u32 = 0;
    std::string_view b;
    switch (wire) {
      case kVarint: return varint(u64);
      case kFixed64: return fixed64(u64);
      case kBytes: return bytes(b);
      case kFixed32: return fixed32(u32);
      default: return false;
    }
  }

 private:
  std::string_view s_;
  size_t pos_ = 0;
};

bool decode_value(std::string_view bytes, Event& event) {
  Reader r(bytes);
  Scalar s;
  bool has_value = false;
  while (!r.done()) {
    uint64_t key = 0;
    if (!r.varint(key)) return false;
    const auto field = static_cast<uint32_t>(key >> 3), wire = static_cast<uint32_t>(key & 7);
    if (field == 1) {
      std::string_view tag;
      if (wire != kBytes || !r.bytes(tag)) return false;
      s.tag = std::string(tag);
    } else if (field == 2) {
      uint32_t bits = 0;
      if (wire != kFixed32 || !r.fixed32(bits)) return false;
      std::memcpy(&s.value, &bits, 4);
      has_value = true;
    } else if (!r.skip(wire)) {
      return false;
    }
  }
  if (has_value) event.scalars.push_back(std::move(s));  // images, histograms, ...: not scalars
  return true;
}

bool decode_summary(std::string_view bytes, Event& event) {
  Reader r(bytes);
  while (!r.done()) {
    uint64_t key = 0;
    if (!r.varint(key)) return false;
    const auto field = static_cast<uint32_t>(key >> 3), wire = static_cast<uint32_t>(key & 7);
    if (field == 1) {
      std::string_view value;
      if (wire != kBytes || !r.bytes(value) || !decode_value(value, event)) return false;
    } else if (!r.skip(wire)) {
      return false;
    }
  }
  return true;
}

}  // namespace

uint32_t crc32c(std::string_view data) {
  uint32_t c = 0xFFFFFFFFu;
  for (const char ch : data) c = kCrc32cTable[(c ^ static_cast<unsigned char>(ch)) & 0xff] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(std::string_view data) {
  const uint32_t c = crc32c(data);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::string frame_record(std::string_view payload) {
  std::string out, length;
  put_fixed64(length, payload.size());
  out.reserve(payload.size() + 16);
  out += length;
  put_fixed32(out, masked_crc32c(length));
  out.append(payload);
  put_fixed32(out, masked_crc32c(payload));
  return out;
}

RecordScan scan_records(std::string_view stream) {
  RecordScan scan;
  size_t pos = 0;
  while (pos < stream.size()) {
    const std::string_view rest = stream.substr(pos);
    if (rest.size() < 12) {
      scan.problem = "a record header cut short";
      break;
    }
    if (get_fixed32(rest.data() + 8) != masked_crc32c(rest.substr(0, 8))) {
      scan.problem = "a record length with a wrong checksum";
      break;
    }
    const uint64_t n = get_fixed64(rest.data());
    if (rest.size() < 16 || n > rest.size() - 16) {
      scan.problem = "a record cut short";
      break;
    }
    const std::string_view payload = rest.substr(12, n);
    if (get_fixed32(rest.data() + 12 + n) != masked_crc32c(payload)) {
      scan.problem = "a record with a wrong checksum";
      break;
    }
    scan.payloads.emplace_back(payload);
    pos += 16 + n;
  }
  scan.valid_bytes = pos;
  return scan;
}

std::string encode_event(const Event& event) {
  std::string out;
  uint64_t wall_bits = 0;
  std::memcpy(&wall_bits, &event.wall_time, 8);
  put_key(out, 1, kFixed64);
  put_fixed64(out, wall_bits);
  if (event.step != 0) {
    put_key(out, 2, kVarint);
    put_varint(out, static_cast<uint64_t>(event.step));
  }
  if (!event.file_version.empty()) put_bytes(out, 3, event.file_version);
  if (!event.scalars.empty()) {
    std::string summary;
    for (const Scalar& s : event.scalars) {
      std::string value;
      put_bytes(value, 1, s.tag);
      put_key(value, 2, kFixed32);
      uint32_t bits = 0;
      std::memcpy(&bits, &s.value, 4);
      put_fixed32(value, bits);
      put_bytes(summary, 1, value);
    }
    put_bytes(out, 5, summary);
  }
  return out;
}

std::optional<Event> decode_event(std::string_view payload) {
  Event event;
  Reader r(payload);
  while (!r.done()) {
    uint64_t key = 0;
    if (!r.varint(key)) return std::nullopt;
    const auto field = static_cast<uint32_t>(key >> 3), wire = static_cast<uint32_t>(key & 7);
    if (field == 1) {
      uint64_t bits = 0;
      if (wire != kFixed64 || !r.fixed64(bits)) return std::nullopt;
      std::memcpy(&event.wall_time, &bits, 8);
    } else if (field == 2) {
      uint64_t step = 0;
      if (wire != kVarint || !r.varint(step)) return std::nullopt;
      event.step = static_cast<int64_t>(step);
    } else if (field == 3) {
      std::string_view version;
      if (wire != kBytes || !r.bytes(version)) return std::nullopt;
      event.file_version = std::string(version);
    } else if (field == 5) {
      std::string_view summary;
      if (wire != kBytes || !r.bytes(summary) || !decode_summary(summary, event)) return std::nullopt;
    } else if (!r.skip(wire)) {
      return std::nullopt;
    }
  }
  return event;
}

}  // namespace sluice::tb
