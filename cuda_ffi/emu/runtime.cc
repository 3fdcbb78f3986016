// splatjax CUDA-on-CPU emulation: the runtime.
//
// Launches are validated when they are made (as CUDA does: a zero-sized grid or block, or a
// block of more than 1024 threads, is cudaErrorInvalidConfiguration through
// cudaGetLastError) and queued on their stream; the stream runs when the FFI bridge
// flushes it after the handler returned. A launch runs its blocks on a small pool of host
// threads; each block runs on one host thread with one fiber per CUDA thread:
//   - the scheduler runs one warp at a time: every lane runs until it parks (at a block
//     barrier, at a warp operation, or at its end); a warp operation completes when every
//     lane in its mask has arrived at the same kind of operation with the same mask; then
//     the next warp runs. When every warp is parked, a block barrier completes when every
//     thread of the block waits at the same barrier call site. Anything else is a
//     deadlock on hardware (or undefined behaviour) and is reported with the call sites.
//   - the order of warps, of lanes within a warp and of blocks is forward, reversed or
//     shuffled (sjemu_set("order", ...)), so code that relies on an order a barrier does not
//     guarantee gives different results in different orders.
// Fibers switch with a few instructions on x86-64 (callee-saved registers and the stack
// pointer); elsewhere ucontext is used.
// Tests steer the emulator through sjemu_set (order, seed, workers, barrier mutations,
// fault injection, poison byte) and read statistics with sjemu_report (JSON).
#include "runtime.h"

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <numeric>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#ifndef SJEMU_ASM_FIBERS  // -DSJEMU_ASM_FIBERS=0 selects the ucontext fibers everywhere
#if defined(__x86_64__)
#define SJEMU_ASM_FIBERS 1
#else
#define SJEMU_ASM_FIBERS 0
#endif
#endif
#if !SJEMU_ASM_FIBERS
#include <ucontext.h>
#endif

namespace sjemu {

namespace {

// ----------------------------------------------------------------------------- host threads
struct Worker;
void destroy_host_thread(void* p);  // after Worker

struct TlsBlock {
  char* base = nullptr;
  size_t size = 0;
};

// Per-host-thread state, under a pthread key rather than in thread-local storage: the
// library's thread-local block holds only __shared__ memory (see sjemu/emu.h), which the
// scheduler fills when a block starts.
struct HostThread {
  Exec exec;
  Worker* worker = nullptr;
  cudaError_t last_error = cudaSuccess;
};

pthread_key_t make_host_key() {
  pthread_key_t k;
  if (pthread_key_create(&k, destroy_host_thread) != 0) std::abort();
  return k;
}
const pthread_key_t host_key = make_host_key();

HostThread& host() {
  void* p = pthread_getspecific(host_key);
  if (!p) {
    p = new HostThread();
    pthread_setspecific(host_key, p);
  }
  return *static_cast<HostThread*>(p);
}

cudaError_t& last_error() { return host().last_error; }

// ----------------------------------------------------------------------------- configuration
enum Order { kForward = 0, kReversed = 1, kShuffled = 2 };
enum Mutation { kNone = 0, kDelete = 1, kPartial = 2 };

struct Config {
  int order = kForward;
  uint64_t seed = 0;
  int workers = 0;  // 0: min(4, hardware threads)
  // barrier mutation: the barrier at file (suffix) and line is deleted, or only the first
  // half of each block reaches it
  std::string mut_file;
  int mut_line = -1;
  int mut_mode = kNone;
  // fault injection: the nth call (0-based, counted from arming) of `fail_api` fails
  std::string fail_api;
  int64_t fail_nth = -1;
  int64_t fail_seen = 0;
  unsigned char poison = 0xff;
  int shared_fill = -2;  // byte written over shared memory when a block starts; -1: leave it; -2: the poison byte
};

Config& cfg() {
  static Config c;
  return c;
}

std::mutex& state_mutex() {
  static std::mutex m;
  return m;
}

// ----------------------------------------------------------------------------- statistics
struct KernelStats {
  int64_t launches = 0, blocks = 0, threads = 0, block_barriers = 0, warp_ops = 0, atomics = 0;
  int64_t votes_true = 0, vote_lanes_true = 0;  // __any_sync votes that came out true, and their true lanes
  int64_t shared_atomics = 0;
};

struct Stats {
  std::map<std::string, KernelStats> kernels;
  std::map<std::string, int64_t> api;
  std::set<std::string> barrier_sites;
  int64_t scratch_allocations = 0, scratch_bytes = 0, max_alignment = 0;
};

Stats& stats() {
  static Stats s;
  return s;
}

std::vector<std::string>& violations() {
  static std::vector<std::string> v;
  return v;
}

const char* basename_of(const char* file) {
  const char* b = std::strrchr(file, '/');
  return b ? b + 1 : file;
}

// ----------------------------------------------------------------------------- regions
std::map<uintptr_t, std::pair<size_t, std::string>>& regions() {
  static std::map<uintptr_t, std::pair<size_t, std::string>> r;
  return r;
}

}  // namespace

Exec& exec() { return host().exec; }

// ----------------------------------------------------------------------------- hooks
cudaError_t injected(const char* api) {
  std::lock_guard<std::mutex> lk(state_mutex());
  Config& c = cfg();
  ++stats().api[api];
  if (c.fail_nth < 0 || c.fail_api != api) return cudaSuccess;
  if (c.fail_seen++ != c.fail_nth) return cudaSuccess;
  c.fail_nth = -1;  // fires once
  return std::strcmp(api, "launch") == 0 ? cudaErrorLaunchOutOfResources : cudaErrorInvalidValue;
}

cudaError_t api_call(const char* api) { return injected(api); }

void set_last_error(cudaError_t err) {
  if (err != cudaSuccess) last_error() = err;
}

void violation(const std::string& text) {
  std::lock_guard<std::mutex> lk(state_mutex());
  violations().push_back(text);
}

std::string take_violations() {
  std::lock_guard<std::mutex> lk(state_mutex());
  std::string out;
  for (const auto& v : violations()) out += (out.empty() ? "" : "; ") + v;
  violations().clear();
  return out;
}

unsigned char poison_byte() { return cfg().poison; }

void note_scratch(size_t bytes, size_t alignment) {
  std::lock_guard<std::mutex> lk(state_mutex());
  ++stats().scratch_allocations;
  stats().scratch_bytes += (int64_t)bytes;
  stats().max_alignment = std::max(stats().max_alignment, (int64_t)alignment);
}

void add_region(const void* p, size_t bytes, const std::string& name) {
  if (!p || !bytes) return;
  std::lock_guard<std::mutex> lk(state_mutex());
  regions()[(uintptr_t)p] = {bytes, name};
}

void remove_region(const void* p) {
  std::lock_guard<std::mutex> lk(state_mutex());
  regions().erase((uintptr_t)p);
}

bool check_range(const void* p, size_t bytes, const char* what, const char* api, std::string* err) {
  if (bytes == 0) return true;
  std::lock_guard<std::mutex> lk(state_mutex());
  const uintptr_t a = (uintptr_t)p;
  auto it = regions().upper_bound(a);
  if (it != regions().begin()) {
    --it;
    if (a >= it->first && a - it->first <= it->second.first && bytes <= it->second.first - (a - it->first)) return true;
    std::ostringstream os;
    os << api << ": " << what << " [" << p << ", +" << bytes << ") is not inside one device allocation (nearest: "
       << it->second.second << ", " << it->second.first << " bytes at offset " << (int64_t)(a - it->first) << ")";
    *err = os.str();
    return false;
  }
  std::ostringstream os;
  os << api << ": " << what << " [" << p << ", +" << bytes << ") is not device memory known to the emulator";
  *err = os.str();
  return false;
}

}  // namespace sjemu

// ----------------------------------------------------------------------------- streams
struct CUstream_st {
  struct Op {
    std::string what;
    std::function<std::string()> run;
    bool always;
  };
  std::vector<Op> ops;
};

namespace sjemu {
namespace {
std::set<CUstream_st*>& live_streams() {
  static std::set<CUstream_st*> s;
  return s;
}

bool known_stream(cudaStream_t s, const char* what) {
  if (s == nullptr) {
    violation(std::string(what) + " was queued on the legacy default stream (0) instead of XLA's stream");
    return false;
  }
  std::lock_guard<std::mutex> lk(state_mutex());
  if (!live_streams().count(s)) {
    violations().push_back(std::string(what) + " was queued on a stream the emulator does not know");
    return false;
  }
  return true;
}
}  // namespace

CUstream_st* new_stream() {
  auto* s = new CUstream_st();
  std::lock_guard<std::mutex> lk(state_mutex());
  live_streams().insert(s);
  return s;
}

void delete_stream(CUstream_st* s) {
  {
    std::lock_guard<std::mutex> lk(state_mutex());
    live_streams().erase(s);
  }
  delete s;
}

void enqueue(cudaStream_t s, const char* what, std::function<std::string()> run) {
  if (!known_stream(s, what)) return;
  s->ops.push_back({what, std::move(run), false});
}

void enqueue_always(cudaStream_t s, const char* what, std::function<std::string()> run) {
  s->ops.push_back({what, std::move(run), true});
}

std::string flush(CUstream_st* s) {
  std::string first;
  for (auto& op : s->ops) {
    if (!first.empty() && !op.always) continue;  // a failed kernel poisons the context: later work is skipped
    std::string e = op.run();
    if (!e.empty() && first.empty()) first = op.what + ": " + e;
  }
  s->ops.clear();
  return first;
}

// ----------------------------------------------------------------------------- fibers
namespace {

#if SJEMU_ASM_FIBERS
extern "C" void sjemu_switch(void** save_sp, void* load_sp);
extern "C" void sjemu_trampoline();
// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack,
// stores the stack pointer in *save_sp, loads load_sp and restores the same from there.
// A new fiber's stack is prepared so that the restore "returns" into sjemu_trampoline,
// which calls r13(r12).
asm(R"(
  .text
  .p2align 4
  .globl sjemu_switch
  .hidden sjemu_switch
  .type sjemu_switch,@function
sjemu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size sjemu_switch,.-sjemu_switch

  .p2align 4
  .globl sjemu_trampoline
  .hidden sjemu_trampoline
  .type sjemu_trampoline,@function
sjemu_trampoline:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size sjemu_trampoline,.-sjemu_trampoline
)");
#endif

constexpr size_t kStackBytes = 64 * 1024;
constexpr int kMaxBlockThreads = 1024;

enum class St : uint8_t { Run, BlockWait, WarpWait, Done };

struct Worker;

struct Thread : Lane {
  Worker* worker = nullptr;
  char* map = nullptr;  // stack mapping (lowest page is a guard page)
  size_t map_bytes = 0;
#if SJEMU_ASM_FIBERS
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
  St st = St::Run;
  int warp = 0, lane = 0;
  // block barrier arrival
  int kind = 0, pred = 0, result = 0;
  const char* file = "";
  int line = 0;
  // warp operation arrival
  int op = 0, arg = 0, width = 32;
  unsigned mask = 0;
  uint64_t value = 0, out = 0;
};

void fiber_main(void* arg);

#if !SJEMU_ASM_FIBERS
void fiber_entry_uc(unsigned lo, unsigned hi) {
  fiber_main((void*)(((uintptr_t)hi << 32) | (uintptr_t)lo));
}
#endif

struct Worker {
  std::vector<Thread*> threads;
#if SJEMU_ASM_FIBERS
  void* sched_sp = nullptr;
#else
  ucontext_t sched_uc;
#endif
  const std::function<void()>* body = nullptr;
  BlockInfo info{};
  int64_t block_barriers = 0, warp_ops = 0, votes_true = 0, vote_lanes_true = 0;
  std::set<std::string> sites;
  TlsBlock shared;  // this host thread's shared memory (filled when a block starts)

  ~Worker() {
    for (Thread* t : threads) {
      munmap(t->map, t->map_bytes);
      delete t;
    }
  }

  Thread* thread(int i) {
    while ((int)threads.size() <= i) {
      Thread* t = new Thread();
      const size_t page = (size_t)sysconf(_SC_PAGESIZE);
      t->map_bytes = kStackBytes + page;
      void* m = mmap(nullptr, t->map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (m == MAP_FAILED) {
        std::fprintf(stderr, "splatjax CUDA emulator: cannot map a fiber stack\n");
        std::abort();
      }
      mprotect(m, page, PROT_NONE);  // a stack overflow faults instead of corrupting memory
      t->map = (char*)m;
      t->worker = this;
      threads.push_back(t);
    }
    return threads[i];
  }

  void start(Thread* t) {
#if SJEMU_ASM_FIBERS
    const uintptr_t top = ((uintptr_t)t->map + t->map_bytes) & ~uintptr_t(15);
    uint64_t* s = (uint64_t*)(top - 80);  // 16-byte aligned: the trampoline's call sees an aligned stack
    s[0] = 0x1F80ull | (0x037Full << 32);  // default MXCSR and x87 control word
    s[1] = s[2] = 0;                      // r15, r14
    s[3] = (uint64_t)(uintptr_t)&fiber_main;  // r13
    s[4] = (uint64_t)(uintptr_t)t;            // r12
    s[5] = s[6] = 0;                          // rbx, rbp
    s[7] = (uint64_t)(uintptr_t)&sjemu_trampoline;
    t->sp = s;
#else
    getcontext(&t->uc);
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    t->uc.uc_stack.ss_sp = t->map + page;
    t->uc.uc_stack.ss_size = t->map_bytes - page;
    t->uc.uc_link = nullptr;
    const uintptr_t p = (uintptr_t)t;
    makecontext(&t->uc, (void (*)())fiber_entry_uc, 2, (unsigned)(p & 0xffffffffu), (unsigned)(p >> 32));
#endif
  }

  void resume(Thread* t) {
    exec().lane = t;
#if SJEMU_ASM_FIBERS
    sjemu_switch(&sched_sp, t->sp);
#else
    swapcontext(&sched_uc, &t->uc);
#endif
    exec().lane = nullptr;
  }

  void park(Thread* t) {
#if SJEMU_ASM_FIBERS
    sjemu_switch(&t->sp, sched_sp);
#else
    swapcontext(&t->uc, &sched_uc);
#endif
  }

  std::string where(const Thread* t) const {
    std::ostringstream os;
    os << "block (" << info.bid.x << "," << info.bid.y << "," << info.bid.z << ") thread (" << t->tid.x << ","
       << t->tid.y << "," << t->tid.z << ")";
    return os.str();
  }

  static std::string site(const char* file, int line) { return std::string(basename_of(file)) + ":" + std::to_string(line); }

  bool resolve_warp(int base, int count, std::string& err);
  bool run_warp(int w, int n, const std::vector<int>& lane_order, std::string& err);
  std::string run_block(const LaunchSpec& spec, uint3 bid, int order, uint64_t seed);
};

void destroy_host_thread(void* p) {
  HostThread* h = static_cast<HostThread*>(p);
  delete h->worker;
  delete h;
}

// ----------------------------------------------------------------------------- shared memory
// The library's thread-local block (this host thread's copy of every __shared__ variable).
thread_local char tls_anchor;  // the one thread-local of the runtime: touching it allocates the block

size_t tls_segment_size() {
  static const size_t size = [] {
    Dl_info info;
    if (!dladdr((void*)&tls_segment_size, &info)) return size_t(0);
    struct Q {
      uintptr_t base;
      size_t size;
    } q{(uintptr_t)info.dli_fbase, 0};
    dl_iterate_phdr(
        [](dl_phdr_info* p, size_t, void* data) {
          Q* q = static_cast<Q*>(data);
          for (int i = 0; i < p->dlpi_phnum; ++i)
            if (p->dlpi_phdr[i].p_type == PT_TLS && (uintptr_t)p->dlpi_addr == q->base) q->size = p->dlpi_phdr[i].p_memsz;
          return 0;
        },
        &q);
    return q.size;
  }();
  return size;
}

void* self_handle() {
  static void* h = [] {
    Dl_info info;
    if (!dladdr((void*)&tls_segment_size, &info)) return (void*)nullptr;
    return dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
  }();
  return h;
}

TlsBlock tls_block() {
  *(volatile char*)&tls_anchor = 0;
  TlsBlock b;
  void* p = nullptr;
  if (self_handle() && dlinfo(self_handle(), RTLD_DI_TLS_DATA, &p) == 0 && p) {
    b.base = static_cast<char*>(p);
    b.size = tls_segment_size();
  }
  return b;
}

Worker& this_worker() {
  HostThread& h = host();
  if (!h.worker) h.worker = new Worker();
  return *h.worker;
}

void fiber_main(void* arg) {
  Thread* t = static_cast<Thread*>(arg);
  (*t->worker->body)();
  t->st = St::Done;
  t->worker->park(t);
  std::abort();  // a finished fiber is never resumed
}

const char* op_name(int op) {
  static const char* names[] = {"__shfl_sync", "__shfl_xor_sync", "__shfl_down_sync", "__shfl_up_sync",
                                "__any_sync",  "__all_sync",      "__ballot_sync",    "__syncwarp"};
  return op >= 0 && op < 8 ? names[op] : "warp operation";
}

// Completes the warp operations the parked lanes of one warp can complete. Returns true if
// any did; sets err on a deadlock or a mismatch.
bool Worker::resolve_warp(int base, int count, std::string& err) {
  bool progressed = false;
  for (int l = 0; l < count; ++l) {
    Thread* t = threads[base + l];
    if (t->st != St::WarpWait) continue;
    const unsigned m = t->mask;
    std::ostringstream os;
    if (!(m >> l & 1u)) {
      os << op_name(t->op) << " at " << site(t->file, t->line) << ": mask 0x" << std::hex << m
         << " does not name the calling lane " << std::dec << l << " (" << where(t) << ")";
      err = os.str();
      return false;
    }
    for (int j = 0; j < 32; ++j) {
      if (!(m >> j & 1u)) continue;
      if (j >= count) {
        os << op_name(t->op) << " at " << site(t->file, t->line) << ": mask 0x" << std::hex << m << std::dec
           << " names lane " << j << ", which does not exist in this block (" << where(t) << ")";
        err = os.str();
        return false;
      }
      const Thread* u = threads[base + j];
      if (u->st == St::Done) {
        os << op_name(t->op) << " at " << site(t->file, t->line) << " waits for lane " << j
           << ", which has exited (" << where(t) << ")";
        err = os.str();
        return false;
      }
      if (u->st == St::BlockWait) {
        os << "deadlock: " << where(t) << " waits at " << op_name(t->op) << " (" << site(t->file, t->line)
           << ") for lane " << j << ", which waits at a block barrier (" << site(u->file, u->line) << ")";
        err = os.str();
        return false;
      }
      if (u->op != t->op || u->mask != m || u->width != t->width) {
        os << "lanes " << l << " and " << j << " of " << where(t) << " meet at different warp operations: "
           << op_name(t->op) << " (" << site(t->file, t->line) << ", mask 0x" << std::hex << m << ") and "
           << op_name(u->op) << " (" << site(u->file, u->line) << ", mask 0x" << u->mask << ")";
        err = os.str();
        return false;
      }
    }
    // every lane of the mask is here: compute the results
    uint64_t ballot = 0;
    for (int j = 0; j < 32; ++j)
      if ((m >> j & 1u) && threads[base + j]->value) ballot |= 1ull << j;
    const int w = t->width;
    if (t->op <= kShflUp && (w <= 0 || w > 32 || (w & (w - 1)))) {
      err = std::string(op_name(t->op)) + " at " + site(t->file, t->line) + ": width must be a power of two <= 32";
      return false;
    }
    for (int j = 0; j < 32; ++j) {
      if (!(m >> j & 1u)) continue;
      Thread* u = threads[base + j];
      int src = j;
      const int seg = j & ~(w - 1);
      switch (t->op) {
        case kShflIdx: src = seg + (u->arg & (w - 1)); break;
        case kShflXor: src = j ^ u->arg; if (src < 0 || src >= 32 || (src & ~(w - 1)) > seg) src = j; break;
        case kShflDown: src = (j - seg) + u->arg < w ? j + u->arg : j; break;
        case kShflUp: src = (j - seg) - u->arg >= 0 ? j - u->arg : j; break;
        default: break;
      }
      if (t->op <= kShflUp) {
        if (!(m >> src & 1u)) {
          os << op_name(t->op) << " at " << site(t->file, t->line) << ": lane " << j << " reads lane " << src
             << ", which is not in the mask 0x" << std::hex << m << std::dec << " (" << where(u) << ")";
          err = os.str();
          return false;
        }
        u->out = threads[base + src]->value;
      } else if (t->op == kVoteAny) {
        u->out = ballot != 0;
        if (j == l && ballot) {
          ++votes_true;
          vote_lanes_true += __builtin_popcountll(ballot);
        }
      } else if (t->op == kVoteAll) {
        u->out = ballot == (uint64_t)m;
      } else if (t->op == kVoteBallot) {
        u->out = ballot;
      } else {
        u->out = 0;
      }
    }
    for (int j = 0; j < 32; ++j)
      if (m >> j & 1u) threads[base + j]->st = St::Run;
    ++warp_ops;
    progressed = true;
  }
  return progressed;
}

bool Worker::run_warp(int w, int n, const std::vector<int>& lane_order, std::string& err) {
  const int base = w * 32, count = std::min(32, n - base);
  for (;;) {
    for (int l : lane_order) {
      if (l >= count) continue;
      Thread* t = threads[base + l];
      while (t->st == St::Run) resume(t);
    }
    if (!resolve_warp(base, count, err)) return err.empty();
  }
}

std::vector<int> make_order(int n, int order, std::mt19937_64& rng) {
  std::vector<int> v(n);
  for (int i = 0; i < n; ++i) v[i] = order == kReversed ? n - 1 - i : i;
  if (order == kShuffled) std::shuffle(v.begin(), v.end(), rng);
  return v;
}

std::string Worker::run_block(const LaunchSpec& spec, uint3 bid, int order, uint64_t seed) {
  const int n = (int)(spec.block.x * spec.block.y * spec.block.z);
  // a block starts with shared memory it has not written: fill it
  const int fill = cfg().shared_fill == -2 ? (int)cfg().poison : cfg().shared_fill;
  if (fill >= 0) {
    if (!shared.base) shared = tls_block();
    if (shared.base) std::memset(shared.base, fill, shared.size);
  }
  if (!shared.base) shared = tls_block();
  exec().shared_lo = shared.base;
  exec().shared_hi = shared.base ? shared.base + shared.size : nullptr;
  info.bid = bid;
  info.bdim = spec.block;
  info.gdim = spec.grid;
  exec().block = &info;
  for (int i = 0; i < n; ++i) {
    Thread* t = thread(i);
    t->tid = uint3{i % spec.block.x, (i / spec.block.x) % spec.block.y, i / (spec.block.x * spec.block.y)};
    t->linear = i;
    t->warp = i / 32;
    t->lane = i % 32;
    t->st = St::Run;
    start(t);
  }
  const int nwarps = (n + 31) / 32;
  std::mt19937_64 rng(seed ^ (0x9E3779B97F4A7C15ull * (1 + bid.x + 65536ull * (bid.y + 65536ull * bid.z))));
  const std::vector<int> warp_order = make_order(nwarps, order, rng);
  const std::vector<int> lane_order = make_order(32, order, rng);
  std::string err;
  for (;;) {
    for (int w : warp_order)
      if (!run_warp(w, n, lane_order, err)) {
        exec().block = nullptr;
        return err;
      }
    int done = 0;
    Thread* first = nullptr;
    for (int i = 0; i < n; ++i) {
      Thread* t = threads[i];
      if (t->st == St::Done) ++done;
      else if (!first) first = t;
    }
    if (done == n) break;
    std::ostringstream os;
    if (done > 0) {
      os << "__syncthreads at " << site(first->file, first->line) << " reached by " << n - done << " of the " << n
         << " threads of block (" << bid.x << "," << bid.y << "," << bid.z << "); the other " << done
         << " had exited";
      exec().block = nullptr;
      return os.str();
    }
    int64_t count = 0;
    for (int i = 0; i < n; ++i) {
      Thread* t = threads[i];
      if (t->line != first->line || std::strcmp(t->file, first->file) != 0 || t->kind != first->kind) {
        int k = 0;
        for (int j = 0; j < n; ++j) k += threads[j]->line == first->line;
        os << "threads of block (" << bid.x << "," << bid.y << "," << bid.z << ") wait at different barriers: "
           << site(first->file, first->line) << " (" << k << " threads) and " << site(t->file, t->line) << " ("
           << where(t) << ")";
        exec().block = nullptr;
        return os.str();
      }
      count += t->pred;
    }
    int result = 0;
    switch (first->kind) {
      case kSyncCount: result = (int)count; break;
      case kSyncAnd: result = count == n; break;
      case kSyncOr: result = count > 0; break;
      default: break;
    }
    for (int i = 0; i < n; ++i) {
      threads[i]->result = result;
      threads[i]->st = St::Run;
    }
    ++block_barriers;
    sites.insert(site(first->file, first->line) + (first->kind == kSync ? "" : ":count"));
  }
  exec().block = nullptr;
  return std::string();
}

// ----------------------------------------------------------------------------- block pool
// Runs fn(k) for k in [0, n) on the calling thread and n - 1 persistent pool threads.
class Pool {
 public:
  void run(int n, const std::function<void(int)>& fn) {
    if (n <= 1) {
      fn(0);
      return;
    }
    std::unique_lock<std::mutex> lk(m_);
    while ((int)threads_.size() < n - 1) {
      const int id = (int)threads_.size() + 1;
      threads_.emplace_back([this, id] { loop(id); });
      threads_.back().detach();
    }
    job_ = &fn;
    wanted_ = n;
    pending_ = n - 1;
    ++generation_;
    cv_.notify_all();
    lk.unlock();
    fn(0);
    lk.lock();
    done_.wait(lk, [this] { return pending_ == 0; });
    job_ = nullptr;
  }

 private:
  void loop(int id) {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lk(m_);
    for (;;) {
      cv_.wait(lk, [&] { return generation_ != seen; });
      seen = generation_;
      if (id >= wanted_) continue;
      const std::function<void(int)>* job = job_;
      lk.unlock();
      (*job)(id);
      lk.lock();
      if (--pending_ == 0) done_.notify_all();
    }
  }

  std::mutex m_;
  std::condition_variable cv_, done_;
  std::vector<std::thread> threads_;
  const std::function<void(int)>* job_ = nullptr;
  int wanted_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: its threads are detached
  return *p;
}

int worker_count() {
  const int w = cfg().workers;
  if (w > 0) return w;
  const unsigned hw = std::thread::hardware_concurrency();
  return (int)std::max(1u, std::min(4u, hw));
}

std::string run_launch(const LaunchSpec& spec, const std::function<void()>& body) {
  const int64_t nblocks = (int64_t)spec.grid.x * spec.grid.y * spec.grid.z;
  const int order = cfg().order;
  const uint64_t seed = cfg().seed;
  // block order without a table: i, n - 1 - i, or the permutation i -> (a i + c) mod n with
  // a coprime to n (a seeded shuffle)
  uint64_t a = 1, c = 0;
  if (order == kShuffled && nblocks > 1) {
    std::mt19937_64 rng(seed);
    a = rng() % (uint64_t)nblocks;
    while (std::gcd(a, (uint64_t)nblocks) != 1) a = (a + 1) % (uint64_t)nblocks;
    c = rng() % (uint64_t)nblocks;
  }
  auto block_at = [&](int64_t i) -> int64_t {
    if (order == kReversed) return nblocks - 1 - i;
    if (order == kShuffled) return (int64_t)(((unsigned __int128)a * (uint64_t)i + c) % (uint64_t)nblocks);
    return i;
  };
  const int nw = (int)std::min<int64_t>(worker_count(), nblocks);
  std::atomic<int64_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex em;
  std::string first;
  KernelStats ks;
  std::set<std::string> sites;
  pool().run(nw, [&](int) {
    Worker& w = this_worker();
    w.body = &body;
    w.block_barriers = w.warp_ops = w.votes_true = w.vote_lanes_true = 0;
    w.sites.clear();
    const int64_t atomics0 = exec().atomics, shared0 = exec().shared_atomics;
    for (;;) {
      const int64_t i = next.fetch_add(1);
      if (i >= nblocks || failed.load()) break;
      const int64_t b = block_at(i);
      const uint3 bid{(unsigned)(b % spec.grid.x), (unsigned)((b / spec.grid.x) % spec.grid.y),
                      (unsigned)(b / ((int64_t)spec.grid.x * spec.grid.y))};
      std::string e = w.run_block(spec, bid, order, seed);
      if (!e.empty()) {
        std::lock_guard<std::mutex> lk(em);
        if (first.empty()) first = e;
        failed = true;
        break;
      }
    }
    std::lock_guard<std::mutex> lk(em);
    ks.block_barriers += w.block_barriers;
    ks.warp_ops += w.warp_ops;
    ks.votes_true += w.votes_true;
    ks.vote_lanes_true += w.vote_lanes_true;
    ks.atomics += exec().atomics - atomics0;
    ks.shared_atomics += exec().shared_atomics - shared0;
    sites.insert(w.sites.begin(), w.sites.end());
    w.body = nullptr;
  });
  std::lock_guard<std::mutex> lk(state_mutex());
  KernelStats& s = stats().kernels[spec.name];
  s.launches += 1;
  s.blocks += nblocks;
  s.threads += nblocks * (int64_t)(spec.block.x * spec.block.y * spec.block.z);
  s.block_barriers += ks.block_barriers;
  s.warp_ops += ks.warp_ops;
  s.atomics += ks.atomics;
  s.shared_atomics += ks.shared_atomics;
  s.votes_true += ks.votes_true;
  s.vote_lanes_true += ks.vote_lanes_true;
  stats().barrier_sites.insert(sites.begin(), sites.end());
  return first;
}

}  // namespace

// ----------------------------------------------------------------------------- device API
int block_barrier(int kind, int pred, const char* file, int line) {
  Thread* t = static_cast<Thread*>(exec().lane);
  if (!t) {
    violation(std::string("__syncthreads called outside a kernel at ") + basename_of(file) + ":" + std::to_string(line));
    return 0;
  }
  const Config& c = cfg();
  if (line == c.mut_line && c.mut_mode != kNone && std::strstr(file, c.mut_file.c_str())) {
    const int n = (int)(t->worker->info.bdim.x * t->worker->info.bdim.y * t->worker->info.bdim.z);
    if (c.mut_mode == kDelete) return kind == kSyncCount ? pred : pred != 0;
    if (c.mut_mode == kPartial && t->linear >= n / 2) return kind == kSyncCount ? pred : pred != 0;
  }
  t->st = St::BlockWait;
  t->kind = kind;
  t->pred = pred;
  t->file = file;
  t->line = line;
  t->worker->park(t);
  return t->result;
}

uint64_t warp_op(int op, unsigned mask, uint64_t value, int arg, int width, const char* file, int line) {
  Thread* t = static_cast<Thread*>(exec().lane);
  if (!t) {
    violation(std::string(op_name(op)) + " called outside a kernel");
    return value;
  }
  t->st = St::WarpWait;
  t->op = op;
  t->mask = mask;
  t->value = value;
  t->arg = arg;
  t->width = width;
  t->file = file;
  t->line = line;
  t->worker->park(t);
  return t->out;
}

unsigned active_mask() {
  Thread* t = static_cast<Thread*>(exec().lane);
  if (!t) return 0;
  Worker* w = t->worker;
  const int n = (int)(w->info.bdim.x * w->info.bdim.y * w->info.bdim.z), base = t->warp * 32;
  unsigned m = 0;
  for (int j = 0; j < 32 && base + j < n; ++j)
    if (w->threads[base + j]->st != St::Done) m |= 1u << j;
  return m;
}

void submit_launch(const LaunchSpec& spec, std::function<void()> body) {
  if (cudaError_t e = injected("launch"); e != cudaSuccess) {
    set_last_error(e);
    return;
  }
  const dim3 g = spec.grid, b = spec.block;
  const uint64_t nthreads = (uint64_t)b.x * b.y * b.z;
  // CUDA's limits: grid x < 2^31, y and z <= 65535; block x, y <= 1024, z <= 64, at most
  // 1024 threads; no dimension zero; static + dynamic shared memory <= 48 KiB by default.
  if (g.x == 0 || g.y == 0 || g.z == 0 || b.x == 0 || b.y == 0 || b.z == 0 || g.x > 0x7fffffffu || g.y > 65535 ||
      g.z > 65535 || b.x > 1024 || b.y > 1024 || b.z > 64 || nthreads > (uint64_t)kMaxBlockThreads ||
      spec.smem > 48 * 1024) {
    set_last_error(cudaErrorInvalidConfiguration);
    return;
  }
  if (spec.smem != 0) {
    violation(std::string(spec.name) + ": dynamic shared memory is not emulated");
    return;
  }
  LaunchSpec copy = spec;
  enqueue(spec.stream, spec.name, [copy, body = std::move(body)]() { return run_launch(copy, body); });
}

}  // namespace sjemu

// ----------------------------------------------------------------------------- runtime API
cudaError_t cudaGetLastError() {
  cudaError_t& last = sjemu::last_error();
  const cudaError_t e = last;
  last = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() { return sjemu::last_error(); }

const char* cudaGetErrorName(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    default: return "cudaErrorUnknown";
  }
}

const char* cudaGetErrorString(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorNotSupported: return "operation not supported";
    default: return "unknown error";
  }
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t stream) {
  static const char* api = "cudaMemsetAsync";
  if (cudaError_t e = sjemu::injected(api); e != cudaSuccess) {
    sjemu::set_last_error(e);
    return e;
  }
  if (count == 0) return cudaSuccess;
  std::string err;
  if (!ptr || !sjemu::check_range(ptr, count, "destination", api, &err)) {
    if (ptr) sjemu::violation(err);
    sjemu::set_last_error(cudaErrorInvalidValue);
    return cudaErrorInvalidValue;
  }
  sjemu::enqueue(stream, api, [ptr, value, count] {
    std::memset(ptr, value, count);
    return std::string();
  });
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind, cudaStream_t stream) {
  static const char* api = "cudaMemcpyAsync";
  if (cudaError_t e = sjemu::injected(api); e != cudaSuccess) {
    sjemu::set_last_error(e);
    return e;
  }
  if (count == 0) return cudaSuccess;
  if (kind != cudaMemcpyDeviceToDevice && kind != cudaMemcpyDefault) {
    sjemu::violation("cudaMemcpyAsync: only device-to-device copies are emulated (host memory is not device memory)");
    sjemu::set_last_error(cudaErrorInvalidValue);
    return cudaErrorInvalidValue;
  }
  std::string err;
  if (!dst || !src || !sjemu::check_range(dst, count, "destination", api, &err) ||
      !sjemu::check_range(src, count, "source", api, &err)) {
    if (!err.empty()) sjemu::violation(err);
    sjemu::set_last_error(cudaErrorInvalidValue);
    return cudaErrorInvalidValue;
  }
  sjemu::enqueue(stream, api, [dst, src, count] {
    std::memmove(dst, src, count);
    return std::string();
  });
  return cudaSuccess;
}

// ----------------------------------------------------------------------------- control (tests)
// sjemu_set(key, value): "order" forward|reversed|shuffled; "seed" integer; "workers" host
// threads per launch (0: default); "mutate" "FILE:LINE:delete" | "FILE:LINE:partial" | ""
// (the barrier at that call site is skipped by every thread, or by the second half of each
// block); "fail" "API:N" | "" (the Nth call of API, counted from now, fails; APIs: launch,
// cudaMemsetAsync, cudaMemcpyAsync, cub::DeviceScan::InclusiveSum,
// cub::DeviceRadixSort::SortPairs, XLA_FFI_DeviceMemory_Allocate); "poison" byte value
// written into new and freed scratch memory and into FFI results before a call;
// "shared_fill" "poison" | "stale" | byte value: what shared memory holds when a block
// starts (the poison byte by default; "stale": what the previous block left, as on hardware).
// Returns 0, or -1 for an unknown key / bad value.
SJEMU_EXPORT int sjemu_set(const char* key, const char* value) {
  using namespace sjemu;
  std::lock_guard<std::mutex> lk(state_mutex());
  Config& c = cfg();
  const std::string k = key ? key : "", v = value ? value : "";
  try {
    if (k == "order") {
      if (v == "forward") c.order = kForward;
      else if (v == "reversed") c.order = kReversed;
      else if (v == "shuffled") c.order = kShuffled;
      else return -1;
    } else if (k == "seed") {
      c.seed = std::stoull(v);
    } else if (k == "workers") {
      c.workers = std::stoi(v);
    } else if (k == "poison") {
      c.poison = (unsigned char)std::stoi(v);
    } else if (k == "shared_fill") {
      if (v == "stale") c.shared_fill = -1;
      else if (v == "poison") c.shared_fill = -2;
      else c.shared_fill = std::stoi(v) & 0xff;
    } else if (k == "mutate") {
      if (v.empty()) {
        c.mut_mode = kNone;
        c.mut_line = -1;
        return 0;
      }
      const size_t a = v.find(':'), b = v.rfind(':');
      if (a == std::string::npos || a == b) return -1;
      const std::string mode = v.substr(b + 1);
      c.mut_file = v.substr(0, a);
      c.mut_line = std::stoi(v.substr(a + 1, b - a - 1));
      if (mode == "delete") c.mut_mode = kDelete;
      else if (mode == "partial") c.mut_mode = kPartial;
      else return -1;
    } else if (k == "fail") {
      if (v.empty()) {
        c.fail_nth = -1;
        return 0;
      }
      const size_t b = v.rfind(':');
      if (b == std::string::npos) return -1;
      c.fail_api = v.substr(0, b);
      c.fail_nth = std::stoll(v.substr(b + 1));
      c.fail_seen = 0;
    } else {
      return -1;
    }
  } catch (...) {
    return -1;
  }
  return 0;
}

SJEMU_EXPORT void sjemu_reset_stats() {
  std::lock_guard<std::mutex> lk(sjemu::state_mutex());
  sjemu::stats() = sjemu::Stats();
}

// JSON statistics since the last reset: per kernel (launches, blocks, threads, completed
// block barriers, completed warp operations, atomics on global and on shared memory,
// __any_sync votes that came out true and their true lanes), calls per API, the barrier
// call sites that completed, scratch allocations (count, bytes, largest alignment). Returns the length; writes at most size bytes.
SJEMU_EXPORT long sjemu_report(char* buf, long size) {
  using namespace sjemu;
  std::ostringstream os;
  {
    std::lock_guard<std::mutex> lk(state_mutex());
    const Stats& s = stats();
    os << "{\"kernels\": {";
    bool first = true;
    for (const auto& [name, k] : s.kernels) {
      os << (first ? "" : ", ") << "\"" << name << "\": {\"launches\": " << k.launches << ", \"blocks\": " << k.blocks
         << ", \"threads\": " << k.threads << ", \"block_barriers\": " << k.block_barriers
         << ", \"warp_ops\": " << k.warp_ops << ", \"atomics\": " << k.atomics
         << ", \"shared_atomics\": " << k.shared_atomics << ", \"votes_true\": " << k.votes_true
         << ", \"vote_lanes_true\": " << k.vote_lanes_true << "}";
      first = false;
    }
    os << "}, \"api\": {";
    first = true;
    for (const auto& [name, n] : s.api) {
      os << (first ? "" : ", ") << "\"" << name << "\": " << n;
      first = false;
    }
    os << "}, \"barrier_sites\": [";
    first = true;
    for (const auto& site : s.barrier_sites) {
      os << (first ? "" : ", ") << "\"" << site << "\"";
      first = false;
    }
    os << "], \"scratch_allocations\": " << s.scratch_allocations << ", \"scratch_bytes\": " << s.scratch_bytes
       << ", \"max_alignment\": " << s.max_alignment << "}";
  }
  const std::string out = os.str();
  if (buf && size > 0) {
    const size_t n = std::min((size_t)size - 1, out.size());
    std::memcpy(buf, out.data(), n);
    buf[n] = 0;
  }
  return (long)out.size();
}
