# Third-party dependencies. LibTorch comes from the torch wheel in the project venv
# (scripts/setup.sh), or from any python3 with torch when SLUICE_PYTHON points at it.

if(NOT SLUICE_TORCH_FREE_ONLY)
  if(NOT DEFINED SLUICE_PYTHON)
    if(EXISTS "${PROJECT_SOURCE_DIR}/.venv/bin/python")
      set(SLUICE_PYTHON "${PROJECT_SOURCE_DIR}/.venv/bin/python")
    else()
      find_program(SLUICE_PYTHON NAMES python3 python REQUIRED)
    endif()
  endif()
  execute_process(
    COMMAND "${SLUICE_PYTHON}" -c "import torch; print(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE SLUICE_TORCH_PREFIX OUTPUT_STRIP_TRAILING_WHITESPACE
    ERROR_VARIABLE _torch_err RESULT_VARIABLE _torch_rc)
  if(NOT _torch_rc EQUAL 0)
    message(FATAL_ERROR "Cannot import torch with ${SLUICE_PYTHON}: run scripts/setup.sh first.\n${_torch_err}")
  endif()
  list(PREPEND CMAKE_PREFIX_PATH "${SLUICE_TORCH_PREFIX}")

  # Torch's CMake reads the architecture list from this variable, not CMAKE_CUDA_ARCHITECTURES.
  if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST} AND NOT TORCH_CUDA_ARCH_LIST)
    set(TORCH_CUDA_ARCH_LIST "8.0;9.0")
  endif()
  if(DEFINED ENV{TORCH_CUDA_ARCH_LIST} AND NOT TORCH_CUDA_ARCH_LIST)
    set(TORCH_CUDA_ARCH_LIST "$ENV{TORCH_CUDA_ARCH_LIST}")
  endif()
  set(TORCH_CUDA_ARCH_LIST "${TORCH_CUDA_ARCH_LIST}" CACHE STRING "CUDA architectures for kernels/")

  find_package(Torch REQUIRED)
endif()
find_package(yaml-cpp REQUIRED)
find_package(spdlog REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(CLI11 REQUIRED)
find_package(fmt REQUIRED)
find_package(Threads REQUIRED)

# SentencePiece ships no CMake config on Debian: find it by hand (also under /tmp/deps on the GPU machine).
find_path(SENTENCEPIECE_INCLUDE_DIR sentencepiece_processor.h REQUIRED)
find_library(SENTENCEPIECE_LIBRARY sentencepiece REQUIRED)
find_library(SENTENCEPIECE_TRAIN_LIBRARY sentencepiece_train REQUIRED)
add_library(sentencepiece::sentencepiece INTERFACE IMPORTED)
set_target_properties(sentencepiece::sentencepiece PROPERTIES
  INTERFACE_INCLUDE_DIRECTORIES "${SENTENCEPIECE_INCLUDE_DIR}"
  INTERFACE_LINK_LIBRARIES "${SENTENCEPIECE_TRAIN_LIBRARY};${SENTENCEPIECE_LIBRARY}")

if(SLUICE_TORCH_FREE_ONLY)
  message(STATUS "sluice: torch-free build (SLUICE_TORCH_FREE_ONLY): log, text, config, formats, their tests and fuzz targets")
  return()
endif()

# One interface target for LibTorch users. Torch ships fmt 12 headers; FMT_HEADER_ONLY makes
# fmt::format usable without linking a fmt library (Debian's libfmt is fmt 9, for spdlog only).
add_library(sluice_torch INTERFACE)
# SentencePiece must come before LibTorch in every binary's library search order. Both define a
# global FLAGS_minloglevel: libc10's is an int, Debian's libsentencepiece's a 24-byte
# absl::Flag<int>. When libc10's definition wins, sentencepiece's static constructor builds its
# Flag over libc10's int and the statics after it: c10's FLAGS_caffe2_use_fatal_for_enforce
# becomes true (an allocation failure in the CPU allocator then aborts instead of throwing) and
# a flag registry pointer is overwritten. Listed first, sentencepiece's own object wins and c10
# only reads an int out of it (tests/test_resources.cpp, OutOfMemory..., fails without this).
target_link_options(sluice_torch INTERFACE "LINKER:--push-state,--no-as-needed" "${SENTENCEPIECE_LIBRARY}"
                    "LINKER:--pop-state")
target_link_libraries(sluice_torch INTERFACE ${TORCH_LIBRARIES})
target_compile_definitions(sluice_torch INTERFACE FMT_HEADER_ONLY)
target_compile_options(sluice_torch INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-Wno-unused-parameter>)

# nvcc decides whether kernels/ is built; a GPU is not needed to compile.
set(SLUICE_HAVE_CUDA OFF)
if(SLUICE_WITH_CUDA)
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(SLUICE_HAVE_CUDA ON)
  endif()
endif()
message(STATUS "sluice: torch ${Torch_VERSION} from ${SLUICE_TORCH_PREFIX}; CUDA kernels: ${SLUICE_HAVE_CUDA} (${TORCH_CUDA_ARCH_LIST})")
