// `sluice data prepare`: text files -> token shards + manifest.json, streaming with bounded
// memory: a reader thread cuts the input into <= 1 MiB chunks (after a newline), worker
// threads tokenize them, and the writer appends them in input order to the shards.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace sluice {

struct PrepareOptions {
  std::string tokenizer;            // "byte", a tokenizer directory or a .model file
  std::vector<std::string> inputs;  // files or folders (recursive, sorted, hidden entries skipped)
  std::string out_dir;              // must not exist or be empty
  double val_fraction = 0.0;        // every round(1/F)-th document goes to the val split
  int workers = 0;                  // tokenizer threads; 0 = all cores
  std::string documents = "files";  // "files": one document per file; "blank-lines": blocks between empty lines
  uint64_t shard_tokens = 100000000;  // a new shard starts at the first document boundary past this
  bool progress = true;             // progress line on stderr
};

struct PrepareSummary {
  uint64_t bytes = 0;
  uint64_t train_tokens = 0, val_tokens = 0;
  uint64_t train_documents = 0, val_documents = 0;
  size_t shards = 0;
  double seconds = 0.0;
};

// Throws InputError (bad arguments, unreadable or invalid UTF-8 input: file and byte offset)
// and leaves no output behind on any failure.
PrepareSummary prepare_shards(const PrepareOptions& opts);

// The files `inputs` expand to, in processing order. Throws InputError for missing paths.
std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs);

}  // namespace sluice
