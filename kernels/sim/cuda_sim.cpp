// The fiber runtime behind cuda_sim.h. Threads of the running block are ucontext fibers on the
// launching OS thread; the scheduler resumes ready fibers in Options::order and each runs until
// it blocks (barrier, warp collective) or ends. The last thread to arrive at a warp collective
// computes every lane's result from pointers to the lanes' operands (their stacks outlive the
// wait), so collectives need no copies or per-type storage. As in CUDA, exited threads drop out
// of barriers and collectives (a shuffle reading one gets NaN bits).
#include "sim/cuda_sim.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <utility>

namespace sluice::sim {
namespace {

constexpr size_t kStackBytes = 512 << 10;  // per fiber (a thread's "registers" live here)

// Memory with an inaccessible page after it (`bytes` ending exactly there: a read or write past
// the end faults instead of passing silently) or, for a stack, before it (an overflow faults).
// mmap'd lazily: cheap.
class GuardedRegion {
 public:
  enum class Guard { After, Before };
  GuardedRegion(size_t bytes, Guard guard) : bytes_(bytes) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t data_pages = (bytes + page - 1) / page;
    mapped_ = (data_pages + 1) * page;
    void* p = mmap(nullptr, mapped_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("cuda_sim: mmap failed");
    base_ = static_cast<unsigned char*>(p);
    if (guard == Guard::After) {
      mprotect(base_ + data_pages * page, page, PROT_NONE);
      data_ = base_ + data_pages * page - bytes;
    } else {
      mprotect(base_, page, PROT_NONE);
      data_ = base_ + page;
    }
  }
  ~GuardedRegion() { munmap(base_, mapped_); }
  GuardedRegion(const GuardedRegion&) = delete;
  GuardedRegion& operator=(const GuardedRegion&) = delete;
  unsigned char* data() const { return data_; }
  size_t size() const { return bytes_; }

 private:
  size_t bytes_, mapped_;
  unsigned char* base_;
  unsigned char* data_;
};

struct Copy {
  uint32_t dst;
  const void* src;
  int src_bytes;
};

enum class State { Ready, AtBarrier, AtWarp, Done };

struct Fiber {
  ucontext_t context{};
  GuardedRegion* stack = nullptr;
  uint3 index{};
  State state = State::Ready;
  // cp.async copies not yet landed: committed groups, oldest first, and those the next commit
  // will group.
  std::deque<std::vector<Copy>> groups;
  std::vector<Copy> uncommitted;
};

// A warp collective in progress: who arrived, with which operands.
struct WarpSlot {
  int arrived = 0;
  const char* kind = nullptr;  // the collective (a string literal, compared by address)
  const void* in[32] = {};     // null: the lane has not arrived (or exited)
  void* out[32] = {};
  std::function<void()> complete;  // computes every arrived lane's result
};

struct Block {
  const LaunchShape* shape = nullptr;
  const Options* options = nullptr;
  const std::function<void()>* body = nullptr;
  uint3 index{};
  dim3 block_dim, grid_dim;
  std::vector<Fiber> fibers;
  std::vector<WarpSlot> warps;
  std::deque<int> ready;
  int at_barrier = 0;
  int live = 0;
  std::unique_ptr<GuardedRegion> smem;
  ucontext_t scheduler{};
  int current = -1;
  std::string error;
  std::mt19937_64 rng;
};

Block* g_block = nullptr;  // the block being run (one at a time)
std::vector<std::pair<const unsigned char*, size_t>> g_globals;

// Fiber stacks, kept for the process's life: mapping 256 of them per block cost more system
// time than the kernels' emulation.
GuardedRegion* stack_for(int thread) {
  static std::vector<std::unique_ptr<GuardedRegion>> pool;
  while (static_cast<int>(pool.size()) <= thread)
    pool.push_back(std::make_unique<GuardedRegion>(kStackBytes, GuardedRegion::Guard::Before));
  return pool[thread].get();
}

Fiber& me() { return g_block->fibers[g_block->current]; }

std::string who() {
  std::ostringstream os;
  os << "block " << g_block->index.x << " thread " << me().index.x;
  return os.str();
}

// Back to the scheduler; returns when this fiber is resumed.
void block_me(State why) {
  me().state = why;
  swapcontext(&me().context, &g_block->scheduler);
}

// Makes fibers ready in the launch's order (their relative order decides the interleaving).
void wake(std::vector<int> ids) {
  Block& b = *g_block;
  if (b.options->order == Order::Reversed) std::reverse(ids.begin(), ids.end());
  if (b.options->order == Order::Shuffled) std::shuffle(ids.begin(), ids.end(), b.rng);
  for (int id : ids) {
    b.fibers[id].state = State::Ready;
    b.ready.push_back(id);
  }
}

void release_barrier_if_complete() {
  Block& b = *g_block;
  if (b.at_barrier == 0 || b.at_barrier < b.live) return;
  std::vector<int> waiting;
  for (size_t i = 0; i < b.fibers.size(); ++i)
    if (b.fibers[i].state == State::AtBarrier) waiting.push_back(static_cast<int>(i));
  b.at_barrier = 0;
  wake(std::move(waiting));
}

void land(const Copy& c) {
  unsigned char* dst = g_block->smem->data() + c.dst;
  if (c.src_bytes == 16) std::memcpy(dst, c.src, 16);
  else std::memset(dst, 0, 16);
}

// Lanes of warp `warp` that have not exited (CUDA: a collective's mask may name exited lanes;
// they just do not take part).
int live_lanes(const Block& b, int warp) {
  const int first = warp * 32, last = std::min(first + 32, b.shape->threads);
  int n = 0;
  for (int t = first; t < last; ++t) n += b.fibers[t].state != State::Done;
  return n;
}

// Every live lane arrived: compute their results, wake them (the current fiber goes on).
void finish_collective(int warp) {
  Block& b = *g_block;
  WarpSlot& w = b.warps[warp];
  w.complete();
  std::vector<int> waiting;
  for (int l = 0; l < 32; ++l) {
    const int t = warp * 32 + l;
    if (t < b.shape->threads && b.fibers[t].state == State::AtWarp) waiting.push_back(t);
    w.in[l] = nullptr, w.out[l] = nullptr;
  }
  w.arrived = 0;
  w.complete = nullptr;
  wake(std::move(waiting));
}

void fiber_main() {
  Block& b = *g_block;
  try {
    (*b.body)();
  } catch (const std::exception& e) {
    if (b.error.empty()) b.error = who() + ": " + e.what();
  }
  Fiber& f = me();
  if (b.error.empty() && (!f.groups.empty() || !f.uncommitted.empty()))
    b.error = who() + ": ended with cp.async copies it never waited for (cp.async.wait_group)";
  f.state = State::Done;
  --b.live;
  // Lanes waiting at a collective may now be all the live ones.
  const int warp = static_cast<int>(f.index.x) / 32;
  if (b.error.empty() && b.warps[warp].arrived > 0 && b.warps[warp].arrived == live_lanes(b, warp))
    finish_collective(warp);
  release_barrier_if_complete();
  setcontext(&b.scheduler);  // never returns
}

void run_block(Block& b) {
  const int n = b.shape->threads;
  b.fibers = std::vector<Fiber>(n);
  b.warps = std::vector<WarpSlot>((n + 31) / 32);
  b.live = n;
  b.at_barrier = 0;
  b.ready.clear();
  std::memset(b.smem->data(), 0xFF, b.smem->size());
  std::vector<int> all(n);
  for (int i = 0; i < n; ++i) {
    Fiber& f = b.fibers[i];
    f.index = uint3{static_cast<unsigned>(i), 0, 0};
    f.stack = stack_for(i);
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack->data();
    f.context.uc_stack.ss_size = f.stack->size();
    f.context.uc_link = nullptr;
    makecontext(&f.context, &fiber_main, 0);
    all[i] = i;
  }
  wake(all);
  while (b.error.empty() && !b.ready.empty()) {
    b.current = b.ready.front();
    b.ready.pop_front();
    swapcontext(&b.scheduler, &b.fibers[b.current].context);
  }
  if (b.error.empty() && b.live > 0) {
    int barrier = 0, warp = 0;
    for (const Fiber& f : b.fibers) barrier += f.state == State::AtBarrier, warp += f.state == State::AtWarp;
    b.error = "block " + std::to_string(b.index.x) + ": deadlock, " + std::to_string(barrier) +
              " threads at __syncthreads and " + std::to_string(warp) + " at warp collectives";
  }
  b.current = -1;
}

// The lanes' operands meet; the last to arrive computes all results. compute(ins, outs, lanes)
// gets null for lanes that exited.
template <typename In, typename Out, typename F>
void warp_collective(const char* kind, const In& in, Out& out, F&& compute) {
  Block& b = *g_block;
  Fiber& f = me();
  const int lane = static_cast<int>(f.index.x % 32);
  const int warp = static_cast<int>(f.index.x / 32);
  WarpSlot& w = b.warps[warp];
  if (w.arrived > 0 && w.kind != kind)
    fail(std::string("divergent warp: lane ") + std::to_string(lane) + " reached " + kind + " while others wait at " +
         w.kind);
  w.kind = kind;
  w.in[lane] = &in;
  w.out[lane] = &out;
  if (w.arrived == 0) {
    w.complete = [&w, compute] {
      const In* ins[32];
      Out* outs[32];
      for (int l = 0; l < 32; ++l)
        ins[l] = static_cast<const In*>(w.in[l]), outs[l] = static_cast<Out*>(w.out[l]);
      compute(ins, outs, 32);
    };
  }
  if (++w.arrived < live_lanes(b, warp)) {
    block_me(State::AtWarp);
    return;
  }
  finish_collective(warp);
}

void check_shared(uint32_t addr, uint32_t bytes, const char* what) {
  const size_t size = g_block->smem->size();
  if (addr % bytes != 0 || static_cast<size_t>(addr) + bytes > size)
    fail(std::string(what) + ": shared address " + std::to_string(addr) + " (" + std::to_string(bytes) +
         " bytes) misaligned or outside the launch's " + std::to_string(size) + " bytes of dynamic shared memory");
}

float element_to_float(uint16_t bits, bool bf16) {
  if (bf16) {
    const uint32_t w = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &w, 4);
    return f;
  }
  __half h;
  std::memcpy(&h, &bits, 2);
  return __half2float(h);
}

}  // namespace

GlobalBuffers::~GlobalBuffers() {
  for (const void* p : added_) {
    auto it = std::find_if(g_globals.begin(), g_globals.end(), [&](const auto& r) { return r.first == p; });
    if (it != g_globals.end()) g_globals.erase(it);
  }
}

void GlobalBuffers::add(const void* data, size_t bytes) {
  g_globals.emplace_back(static_cast<const unsigned char*>(data), bytes);
  added_.push_back(data);
}

void launch(const LaunchShape& shape, const Options& options, const std::function<void()>& thread) {
  if (g_block != nullptr) throw std::logic_error("cuda_sim: launch from inside a launch");
  if (shape.grid < 1 || shape.threads < 1 || shape.threads > 1024 || shape.smem_bytes < 0)
    throw std::invalid_argument("cuda_sim: bad launch shape");
  Block b;
  b.shape = &shape;
  b.options = &options;
  b.body = &thread;
  b.block_dim = dim3(static_cast<unsigned>(shape.threads));
  b.grid_dim = dim3(static_cast<unsigned>(shape.grid));
  b.smem = std::make_unique<GuardedRegion>(static_cast<size_t>(shape.smem_bytes), GuardedRegion::Guard::After);
  b.rng.seed(options.seed);
  std::vector<int> order(shape.grid);
  for (int i = 0; i < shape.grid; ++i) order[i] = i;
  if (options.order == Order::Reversed) std::reverse(order.begin(), order.end());
  if (options.order == Order::Shuffled) std::shuffle(order.begin(), order.end(), b.rng);
  g_block = &b;
  for (int block : order) {
    b.index = uint3{static_cast<unsigned>(block), 0, 0};
    run_block(b);
    if (!b.error.empty()) break;
  }
  g_block = nullptr;
  if (!b.error.empty()) throw std::runtime_error("cuda_sim: " + b.error);
}

const uint3& thread_index() { return me().index; }
const uint3& block_index() { return g_block->index; }
const dim3& block_dim() { return g_block->block_dim; }
const dim3& grid_dim() { return g_block->grid_dim; }

void fail(const std::string& what) {
  if (g_block == nullptr || g_block->current < 0) throw std::runtime_error("cuda_sim: " + what);
  Block& b = *g_block;
  if (b.error.empty()) b.error = who() + ": " + what;
  me().state = State::Done;
  setcontext(&b.scheduler);  // the scheduler stops at the error; this fiber is never resumed
  std::abort();
}

void sync_threads() {
  Block& b = *g_block;
  ++b.at_barrier;
  if (b.at_barrier == b.live) {
    release_barrier_if_complete();  // wakes the others; this thread goes on
    me().state = State::Ready;
    // Keep schedule order fair: this thread waits its turn behind the ones just woken.
    b.ready.push_back(b.current);
    swapcontext(&me().context, &b.scheduler);
    return;
  }
  block_me(State::AtBarrier);
}

void sync_warp() {
  const int in = 0;
  int out = 0;
  warp_collective("__syncwarp", in, out, [](const int* const*, int* const*, int) {});
}

bool any_sync(unsigned mask, bool predicate) {
  if (mask != 0xffffffffu) fail("__any_sync with a partial mask is not modelled");
  bool out = false;
  warp_collective("__any_sync", predicate, out, [](const bool* const* in, bool* const* out, int lanes) {
    bool any = false;
    for (int l = 0; l < lanes; ++l) any = any || (in[l] != nullptr && *in[l]);
    for (int l = 0; l < lanes; ++l)
      if (out[l] != nullptr) *out[l] = any;
  });
  return out;
}

uint32_t shfl_xor_bits(unsigned mask, uint32_t value, int lane_mask) {
  if (mask != 0xffffffffu) fail("__shfl_xor_sync with a partial mask is not modelled");
  struct Operand {
    uint32_t value;
    int lane_mask;  // each lane's own: source lane = lane ^ lane_mask
  };
  const Operand in{value, lane_mask};
  uint32_t out = 0;
  warp_collective("__shfl_xor_sync", in, out, [](const Operand* const* in, uint32_t* const* out, int lanes) {
    for (int l = 0; l < lanes; ++l) {
      if (out[l] == nullptr) continue;
      // A source outside the warp gives the lane its own value; an exited one, undefined (NaN
      // bits here).
      const int src = l ^ in[l]->lane_mask;
      *out[l] = src >= lanes || src < 0 ? in[l]->value : in[src] != nullptr ? in[src]->value : 0xFFFFFFFFu;
    }
  });
  return out;
}

unsigned char* dynamic_smem() { return g_block->smem->data(); }

uint32_t shared_address(const void* p) {
  const auto* c = static_cast<const unsigned char*>(p);
  const unsigned char* base = g_block->smem->data();
  // One past the end is a valid address to form (not to access): accesses are checked.
  if (c < base || c > base + g_block->smem->size()) fail("shared address of a pointer outside dynamic shared memory");
  return static_cast<uint32_t>(c - base);
}

void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr, bool trans) {
  check_shared(addr, 16, trans ? "ldmatrix.trans" : "ldmatrix");
  using Regs = uint32_t[4];
  warp_collective(trans ? "ldmatrix.x4.trans" : "ldmatrix.x4", addr, r,
                  [trans](const uint32_t* const* in, Regs* const* out, int lanes) {
                    for (int l = 0; l < lanes; ++l)
                      if (in[l] == nullptr) fail("ldmatrix needs all 32 lanes (.aligned)");
                    const unsigned char* smem = g_block->smem->data();
                    auto element = [&](int matrix, int row, int col) {  // b16 element of matrix i
                      uint16_t e;
                      std::memcpy(&e, smem + *in[8 * matrix + row] + 2 * col, 2);
                      return static_cast<uint32_t>(e);
                    };
                    for (int l = 0; l < 32; ++l)
                      for (int i = 0; i < 4; ++i) {
                        const int row = l / 4, col = 2 * (l % 4);
                        (*out[l])[i] = trans ? element(i, col, row) | element(i, col + 1, row) << 16
                                             : element(i, row, col) | element(i, row, col + 1) << 16;
                      }
                  });
}

void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, bool bf16) {
  struct Operands {
    const uint32_t* a;
    uint32_t b0, b1;
    float c[4];
  };
  const Operands in{a, b0, b1, {c[0], c[1], c[2], c[3]}};
  using Acc = float[4];
  warp_collective(bf16 ? "mma.m16n8k16.bf16" : "mma.m16n8k16.f16", in, c,
                  [bf16](const Operands* const* in, Acc* const* out, int lanes) {
                    for (int l = 0; l < lanes; ++l)
                      if (in[l] == nullptr) fail("mma.sync needs all 32 lanes (.aligned)");
                    float A[16][16], B[16][8], C[16][8];
                    auto lo = [&](uint32_t x) { return element_to_float(static_cast<uint16_t>(x & 0xFFFF), bf16); };
                    auto hi = [&](uint32_t x) { return element_to_float(static_cast<uint16_t>(x >> 16), bf16); };
                    for (int l = 0; l < 32; ++l) {  // mma.cuh's fragment layouts, lane = 4g + t
                      const int g = l / 4, t = l % 4;
                      const Operands& o = *in[l];
                      for (int q = 0; q < 4; ++q) {
                        const int row = g + 8 * (q % 2), col = 2 * t + 8 * (q / 2);
                        A[row][col] = lo(o.a[q]), A[row][col + 1] = hi(o.a[q]);
                      }
                      B[2 * t][g] = lo(o.b0), B[2 * t + 1][g] = hi(o.b0);
                      B[2 * t + 8][g] = lo(o.b1), B[2 * t + 9][g] = hi(o.b1);
                      C[g][2 * t] = o.c[0], C[g][2 * t + 1] = o.c[1];
                      C[g + 8][2 * t] = o.c[2], C[g + 8][2 * t + 1] = o.c[3];
                    }
                    for (int l = 0; l < 32; ++l) {
                      const int g = l / 4, t = l % 4;
                      for (int q = 0; q < 4; ++q) {
                        const int row = g + 8 * (q / 2), col = 2 * t + (q % 2);
                        // Products of 16-bit inputs are exact in double; one rounding to fp32.
                        double sum = C[row][col];
                        for (int k = 0; k < 16; ++k) sum += static_cast<double>(A[row][k]) * B[k][col];
                        (*out[l])[q] = static_cast<float>(sum);
                      }
                    }
                  });
}

void cp_async_16(uint32_t dst, const void* src, int src_bytes) {
  check_shared(dst, 16, "cp.async");
  if (src_bytes != 0 && src_bytes != 16) fail("cp.async with a source size other than 0 or 16");
  if (src_bytes == 16) {
    const auto* s = static_cast<const unsigned char*>(src);
    if (reinterpret_cast<uintptr_t>(s) % 16 != 0) fail("cp.async from a global address not 16-byte aligned");
    const bool inside = std::any_of(g_globals.begin(), g_globals.end(),
                                    [&](const auto& r) { return s >= r.first && s + 16 <= r.first + r.second; });
    if (!inside) {
      std::ostringstream os;
      os << "cp.async reads 16 bytes at " << src << ", outside every registered global buffer";
      fail(os.str());
    }
  }
  const Copy c{dst, src, src_bytes};
  if (g_block->options->copies == CopyTiming::AtIssue) land(c);
  else me().uncommitted.push_back(c);
}

void cp_async_commit() {
  Fiber& f = me();
  f.groups.push_back(std::move(f.uncommitted));
  f.uncommitted.clear();
}

void cp_async_wait(int pending_groups) {
  Fiber& f = me();
  while (static_cast<int>(f.groups.size()) > pending_groups) {
    for (const Copy& c : f.groups.front()) land(c);
    f.groups.pop_front();
  }
}

}  // namespace sluice::sim
