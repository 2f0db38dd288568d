// The TensorBoard event-file reader (src/train/tensorboard_events.*) that a resumed run uses to
// cut RUN_DIR/tb/ back to its checkpoint's step. Properties: the scan never goes past the
// input and its records, framed again, are byte for byte the bytes it accepted; an event that
// decodes encodes to bytes that decode to the same fields.
#include <cstdint>
#include <cstring>
#include <string>

#include "fuzz_util.h"
#include "train/tensorboard_events.h"

using namespace sluice;

namespace {

bool same(const tb::Event& a, const tb::Event& b) {
  if (std::memcmp(&a.wall_time, &b.wall_time, 8) != 0 || a.step != b.step || a.file_version != b.file_version ||
      a.scalars.size() != b.scalars.size())
    return false;
  for (size_t i = 0; i < a.scalars.size(); ++i)
    if (a.scalars[i].tag != b.scalars[i].tag || std::memcmp(&a.scalars[i].value, &b.scalars[i].value, 4) != 0) return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view stream = fuzz::as_text(data, size);
  const tb::RecordScan scan = tb::scan_records(stream);
  fuzz::check(scan.valid_bytes <= size, "valid_bytes past the end");
  fuzz::check(scan.problem.empty() == (scan.valid_bytes == size), "problem set iff bytes are left");
  std::string reframed;
  for (const std::string& p : scan.payloads) reframed += tb::frame_record(p);
  fuzz::check(reframed == stream.substr(0, scan.valid_bytes), "framing the records again changes the bytes");
  // every record as an event; and the whole input as one (most inputs are not framed)
  auto check_event = [](std::string_view payload) {
    const auto e = tb::decode_event(payload);
    if (!e) return;
    const auto again = tb::decode_event(tb::encode_event(*e));
    fuzz::check(again.has_value() && same(*e, *again), "decode(encode(event)) differs");
  };
  for (const std::string& p : scan.payloads) check_event(p);
  check_event(stream);
  return 0;
}
