// Running out of memory in the middle of a run: recognising LibTorch's and the C++ runtime's
// allocation failures, and saying what to do about them.
#pragma once
#include <cstdint>
#include <exception>
#include <optional>
#include <string>

#include "sluice/config.h"

namespace sluice {

// A CUDA or CPU allocation failure: c10::OutOfMemoryError (CUDA caching allocator), LibTorch's
// CPU allocator's "can't allocate memory" error, or std::bad_alloc.
bool is_out_of_memory(const std::exception& e);

// The ResourceError message for an out-of-memory failure in `phase` of `step`: the failure, the
// config keys that drive memory with their values, the pre-flight estimate, and the last
// checkpoint (which a failed step never touches).
std::string out_of_memory_message(const Config& cfg, const std::string& phase, int64_t step, const std::string& what,
                                  const std::string& estimate, const std::optional<std::string>& last_checkpoint,
                                  const std::string& run_dir);

// Test hook: SLUICE_TEST_ADDRESS_SPACE_HEADROOM_MB=N limits the process's address space
// (RLIMIT_AS) to what it maps now plus N MiB, so that a test makes a step run out of memory
// for real on any machine. No-op without the variable.
void apply_test_address_space_headroom();

}  // namespace sluice
