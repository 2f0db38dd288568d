#include "data/prepare.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "data/cached_encoder.h"
#include "data/hash.h"
#include "data/shard.h"
#include "data/utf8.h"
#include "sluice/errors.h"
#include "sluice/fs.h"
#include "sluice/log.h"
#include "sluice/tokenizer.h"

namespace sluice {

namespace fs = std::filesystem;

std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const auto& in : inputs) {
    std::error_code ec;
    if (fs::is_regular_file(in, ec)) {
      files.push_back(in);
    } else if (fs::is_directory(in, ec)) {
      std::vector<std::string> found;
      for (auto it = fs::recursive_directory_iterator(in, ec); it != fs::recursive_directory_iterator(); ++it) {
        const std::string name = it->path().filename().string();
        if (!name.empty() && name[0] == '.') {
          if (it->is_directory()) it.disable_recursion_pending();
          continue;
        }
        if (it->is_regular_file()) found.push_back(it->path().string());
      }
      std::sort(found.begin(), found.end());
      if (found.empty()) throw InputError("--input: folder '" + in + "' holds no files");
      files.insert(files.end(), found.begin(), found.end());
    } else {
      throw InputError("--input: '" + in + "' does not exist");
    }
  }
  if (files.empty()) throw InputError("--input: at least one text file or folder is required");
  return files;
}

namespace {

constexpr size_t kBlockBytes = 1 << 20;

struct Chunk {
  uint64_t seq = 0;
  uint64_t doc = 0;  // global document index
  bool first = false, last = false;
  std::string text;
  std::vector<int32_t> ids;
};

// A bounded FIFO with shutdown, shared by the reader, the workers and the writer.
template <class T>
class Channel {
 public:
  explicit Channel(size_t capacity) : capacity_(capacity) {}
  bool push(T item) {
    std::unique_lock<std::mutex> lock(mu_);
    not_full_.wait(lock, [&] { return closed_ || q_.size() < capacity_; });
    if (closed_) return false;
    q_.push_back(std::move(item));
    not_empty_.notify_one();
    return true;
  }
  std::optional<T> pop() {
    std::unique_lock<std::mutex> lock(mu_);
    not_empty_.wait(lock, [&] { return closed_ || !q_.empty(); });
    if (q_.empty()) return std::nullopt;
    T item = std::move(q_.front());
    q_.pop_front();
    not_full_.notify_one();
    return item;
  }
  std::optional<T> pop_for(std::chrono::milliseconds timeout, bool& timed_out) {
    std::unique_lock<std::mutex> lock(mu_);
    timed_out = !not_empty_.wait_for(lock, timeout, [&] { return closed_ || !q_.empty(); });
    if (q_.empty()) return std::nullopt;
    T item = std::move(q_.front());
    q_.pop_front();
    not_full_.notify_one();
    return item;
  }
  void close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    not_empty_.notify_all();
    not_full_.notify_all();
  }

 private:
  size_t capacity_;
  std::mutex mu_;
  std::condition_variable not_empty_, not_full_;
  std::deque<T> q_;
  bool closed_ = false;
};

// Cuts files into document chunks of at most ~kBlockBytes, each ending after a newline (or at
// the end of its document), validating UTF-8 on the way.
class Reader {
 public:
  Reader(const std::vector<std::string>& files, bool blank_line_docs, Channel<Chunk>& out,
         std::atomic<uint64_t>& bytes_read)
      : files_(files), blank_lines_(blank_line_docs), out_(out), bytes_read_(bytes_read) {}

  void run() {
    for (const auto& file : files_) {
      read_file(file);
      if (stop_) return;
    }
  }

 private:
  const std::vector<std::string>& files_;
  bool blank_lines_;
  Channel<Chunk>& out_;
  std::atomic<uint64_t>& bytes_read_;
  uint64_t seq_ = 0, doc_ = 0;
  bool doc_open_ = false;
  bool stop_ = false;

  void emit(std::string text, bool last) {
    Chunk c;
    c.seq = seq_++;
    c.doc = doc_;
    c.first = !doc_open_;
    c.last = last;
    c.text = std::move(text);
    doc_open_ = !last;
    if (last) ++doc_;
    if (!out_.push(std::move(c))) stop_ = true;
  }

  // Emits complete documents (blank-line mode) and newline-terminated pieces of long ones.
  void drain(std::string& buf, bool at_eof) {
    if (blank_lines_) {
      size_t start = 0;
      for (;;) {
        // a document ends at an empty line: "\n\n" (further empty lines are skipped)
        const size_t sep = buf.find("\n\n", start);
        if (sep == std::string::npos) break;
        std::string doc = buf.substr(start, sep + 1 - start);
        size_t next = sep + 1;
        while (next < buf.size() && buf[next] == '\n') ++next;
        if (next == buf.size() && !at_eof) break;  // more empty lines may follow in the next block
        if (doc.find_first_not_of('\n') != std::string::npos || doc_open_) emit(std::move(doc), true);
        start = next;
      }
      buf.erase(0, start);
    }
    if (at_eof) {
      // Files mode keeps every file verbatim (an empty file is an empty document: EOS only);
      // blank-line mode drops trailing empty lines that start no document.
      const bool only_newlines = buf.find_first_not_of('\n') == std::string::npos;
      if (!blank_lines_ || doc_open_ || !only_newlines) emit(std::move(buf), true);
      buf.clear();
      return;
    }
    if (buf.size() >= kBlockBytes) {
      const size_t nl = buf.rfind('\n');
      const size_t cut = nl == std::string::npos ? buf.size() : nl + 1;
      emit(buf.substr(0, cut), false);
      buf.erase(0, cut);
    }
  }

  void read_file(const std::string& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw InputError("--input: cannot read '" + file + "'");
    Utf8Validator utf8;
    std::string buf, block(kBlockBytes, '\0');
    while (!stop_) {
      in.read(block.data(), static_cast<std::streamsize>(block.size()));
      const auto n = static_cast<size_t>(in.gcount());
      if (n == 0) break;
      const std::string_view view(block.data(), n);
      const uint64_t bad = utf8.feed(view);
      if (bad != Utf8Validator::npos) {
        throw InputError(fmt::format("--input: '{}' is not valid UTF-8: invalid byte sequence at byte offset {}", file, bad));
      }
      buf.append(view);
      bytes_read_ += n;
      drain(buf, false);
    }
    if (const uint64_t bad = utf8.finish(); bad != Utf8Validator::npos) {
      throw InputError(fmt::format("--input: '{}' is not valid UTF-8: sequence cut off at byte offset {}", file, bad));
    }
    drain(buf, true);
  }
};

// Writes documents into rolling shards of one split.
class SplitWriter {
 public:
  SplitWriter(std::string dir, std::string split, uint32_t token_bytes, const Tokenizer& tok, uint64_t shard_tokens)
      : dir_(std::move(dir)), split_(std::move(split)), token_bytes_(token_bytes), tok_(tok), shard_tokens_(shard_tokens) {}

  void add(const Chunk& c) {
    if (c.first) {
      if (!cur_) open();
      cur_->begin_document();
      ++documents_;
    }
    cur_->append(c.ids.data(), c.ids.size());
    tokens_ += c.ids.size();
    if (c.last) {
      const int32_t eos = tok_.specials().eos;
      cur_->append(&eos, 1);
      ++tokens_;
      if (cur_->tokens() >= shard_tokens_) close();
    }
  }
  void close() {
    if (!cur_) return;
    cur_->finish();
    shards_.push_back({{"file", fs::path(cur_->path()).filename().string()},
                       {"split", split_},
                       {"tokens", cur_->tokens()},
                       {"documents", cur_->documents()},
                       {"checksum", hex64(cur_->checksum())}});
    cur_.reset();
  }
  uint64_t tokens() const { return tokens_; }
  uint64_t documents() const { return documents_; }
  const std::vector<nlohmann::json>& shards() const { return shards_; }

 private:
  std::string dir_, split_;
  uint32_t token_bytes_;
  const Tokenizer& tok_;
  uint64_t shard_tokens_;
  std::unique_ptr<ShardWriter> cur_;
  std::vector<nlohmann::json> shards_;
  uint64_t tokens_ = 0, documents_ = 0;

  void open() {
    const std::string name = fmt::format("{}-{:05}.bin", split_, shards_.size());
    cur_ = std::make_unique<ShardWriter>((fs::path(dir_) / name).string(), token_bytes_, tok_.hash(),
                                         static_cast<uint64_t>(tok_.vocab_size()));
  }
};

std::string progress_line(uint64_t done, uint64_t total, uint64_t tokens, double secs) {
  const double mb = static_cast<double>(done) / 1e6;
  return fmt::format("prepare: {:5.1f}% {:.1f}/{:.1f} MB | {:.2f} MB/s | {:.2f}M tokens/s", 100.0 * done / std::max<uint64_t>(total, 1),
                     mb, static_cast<double>(total) / 1e6, mb / std::max(secs, 1e-9),
                     static_cast<double>(tokens) / 1e6 / std::max(secs, 1e-9));
}

}  // namespace

PrepareSummary prepare_shards(const PrepareOptions& opts) {
  // --- validate everything before creating anything ---
  if (opts.documents != "files" && opts.documents != "blank-lines")
    throw InputError("--documents: expected files or blank-lines, got '" + opts.documents + "'");
  if (opts.val_fraction < 0.0 || opts.val_fraction > 0.5)
    throw InputError(fmt::format("--val-fraction: expected a number in [0, 0.5], got {}", opts.val_fraction));
  if (opts.out_dir.empty()) throw InputError("--out: an output folder is required");
  std::error_code ec;
  if (fs::exists(opts.out_dir, ec) && !(fs::is_directory(opts.out_dir, ec) && fs::is_empty(opts.out_dir, ec)))
    throw InputError("--out: '" + opts.out_dir + "' exists and is not an empty folder");
  const std::unique_ptr<Tokenizer> tok = load_tokenizer(opts.tokenizer, "--tokenizer");
  if (tok->specials().eos < 0) throw InputError("--tokenizer: '" + opts.tokenizer + "' has no EOS token");
  const std::vector<std::string> files = expand_inputs(opts.inputs);
  uint64_t total_bytes = 0;
  for (const auto& f : files) total_bytes += fs::file_size(f);
  const int workers = opts.workers > 0 ? opts.workers : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const uint64_t val_every = opts.val_fraction > 0 ? std::max<uint64_t>(2, std::llround(1.0 / opts.val_fraction)) : 0;
  const uint32_t token_bytes = tok->vocab_size() <= 65536 ? 2 : 4;

  const bool created = !fs::exists(opts.out_dir, ec);
  fs::create_directories(opts.out_dir);
  auto cleanup = [&] {
    if (created) {
      remove_tree(opts.out_dir);
    } else {
      for (const auto& e : fs::directory_iterator(opts.out_dir, ec)) remove_tree(e.path().string());
    }
  };

  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  Channel<Chunk> work(static_cast<size_t>(2 * workers + 2)), done(static_cast<size_t>(4 * workers + 4));
  std::atomic<uint64_t> bytes_read{0};
  std::exception_ptr failure;
  std::mutex failure_mu;
  auto record_failure = [&](std::exception_ptr e) {
    std::lock_guard<std::mutex> lock(failure_mu);
    if (!failure) failure = e;
    work.close();
    done.close();
  };

  Reader reader(files, opts.documents == "blank-lines", work, bytes_read);
  std::thread reader_thread([&] {
    try {
      reader.run();
    } catch (...) {
      record_failure(std::current_exception());
    }
    work.close();
  });
  std::atomic<int> workers_left{workers};
  std::vector<std::thread> pool;
  for (int w = 0; w < workers; ++w) {
    pool.emplace_back([&] {
      try {
        CachedEncoder enc(*tok);
        while (auto c = work.pop()) {
          c->ids.reserve(c->text.size() / 3);
          enc.encode(c->text, c->ids);
          c->text = std::string();
          if (!done.push(std::move(*c))) break;
        }
      } catch (...) {
        record_failure(std::current_exception());
      }
      if (--workers_left == 0) done.close();
    });
  }

  PrepareSummary summary;
  SplitWriter train(opts.out_dir, "train", token_bytes, *tok, opts.shard_tokens);
  SplitWriter val(opts.out_dir, "val", token_bytes, *tok, opts.shard_tokens);
  const bool tty = isatty(STDERR_FILENO);
  try {
    std::map<uint64_t, Chunk> pending;  // chunks finished out of order
    uint64_t next = 0;
    double last_report = 0.0;
    for (;;) {
      bool timed_out = false;
      auto c = done.pop_for(std::chrono::milliseconds(200), timed_out);
      if (!c && !timed_out) break;
      if (c) pending.emplace(c->seq, std::move(*c));
      for (auto it = pending.find(next); it != pending.end(); it = pending.find(next)) {
        const Chunk& ch = it->second;
        (val_every > 0 && ch.doc % val_every == val_every - 1 ? val : train).add(ch);
        pending.erase(it);
        ++next;
      }
      const double now = elapsed();
      if (opts.progress && now - last_report >= (tty ? 0.5 : 10.0)) {
        last_report = now;
        const std::string line = progress_line(bytes_read, total_bytes, train.tokens() + val.tokens(), now);
        if (tty) std::fprintf(stderr, "\r%s", line.c_str()); else std::fprintf(stderr, "%s\n", line.c_str());
      }
    }
    reader_thread.join();
    for (auto& t : pool) t.join();
    if (failure) std::rethrow_exception(failure);
    if (!pending.empty()) throw std::runtime_error("prepare: chunks lost in the pipeline");
    train.close();
    val.close();
    if (val_every > 0 && val.documents() == 0) {
      throw InputError(fmt::format("--val-fraction: {} of {} document(s) leaves the validation split empty; "
                                   "use more documents (--documents blank-lines) or a separate validation file",
                                   opts.val_fraction, train.documents()));
    }

    nlohmann::json sources = nlohmann::json::array();
    for (const auto& f : files) {
      std::ifstream in(f, std::ios::binary);
      Fnv1a64 h;
      std::vector<char> buf(kBlockBytes);
      while (in.read(buf.data(), static_cast<std::streamsize>(buf.size())) || in.gcount() > 0)
        h.update(buf.data(), static_cast<size_t>(in.gcount()));
      sources.push_back({{"path", fs::absolute(f).string()}, {"bytes", fs::file_size(f)}, {"fnv1a64", hex64(h.value())}});
    }
    nlohmann::json shards = nlohmann::json::array();
    for (const auto* w : {&train, &val})
      for (const auto& s : w->shards()) shards.push_back(s);
    const SpecialTokens sp = tok->specials();
    const nlohmann::json manifest = {
        {"format", "sluice-token-shards"},
        {"version", kShardVersion},
        {"sluice_version", SLUICE_VERSION},
        {"tokenizer",
         {{"spec", opts.tokenizer == "byte" ? "byte" : fs::absolute(opts.tokenizer).string()},
          {"kind", tok->kind()},
          {"hash", hex64(tok->hash())},
          {"vocab_size", tok->vocab_size()},
          {"eos_id", sp.eos},
          {"bos_id", sp.bos}}},
        {"token_dtype", token_bytes == 2 ? "uint16" : "uint32"},
        {"documents", opts.documents},
        {"val_fraction", opts.val_fraction},
        {"val_every", val_every},
        {"splits",
         {{"train", {{"tokens", train.tokens()}, {"documents", train.documents()}}},
          {"val", {{"tokens", val.tokens()}, {"documents", val.documents()}}}}},
        {"shards", shards},
        {"sources", sources}};
    const std::string tmp = (fs::path(opts.out_dir) / "manifest.json.tmp").string();
    std::ofstream(tmp) << manifest.dump(2) << "\n";
    fs::rename(tmp, fs::path(opts.out_dir) / "manifest.json");  // last: its presence marks a complete dataset
  } catch (...) {
    work.close();
    done.close();
    if (reader_thread.joinable()) reader_thread.join();
    for (auto& t : pool)
      if (t.joinable()) t.join();
    if (tty && opts.progress) std::fprintf(stderr, "\n");
    cleanup();
    throw;
  }
  summary.seconds = elapsed();
  summary.bytes = bytes_read;
  summary.train_tokens = train.tokens();
  summary.val_tokens = val.tokens();
  summary.train_documents = train.documents();
  summary.val_documents = val.documents();
  summary.shards = train.shards().size() + val.shards().size();
  if (opts.progress) {
    const std::string line = progress_line(summary.bytes, total_bytes, summary.train_tokens + summary.val_tokens, summary.seconds);
    std::fprintf(stderr, tty ? "\r%s\n" : "%s\n", line.c_str());
  }
  return summary;
}

}  // namespace sluice
