// splatjax CUDA-on-CPU emulation: the device-side API and the launch helper.
//
// Compiling a CUDA source with a host C++ compiler against this header (through the
// cuda_runtime.h and cub/cub.cuh of this directory) turns every kernel into a plain C++
// function that the emulator runs once per CUDA thread. Each thread of a block is a fiber
// with its own stack; the threads of a block run cooperatively on one host thread, so
//   - __syncthreads() and friends are real barriers (a fiber parks until every thread of
//     the block has arrived at the same barrier; a barrier reached by only some threads,
//     or threads waiting at different barriers, is reported as an error),
//   - warp shuffles and votes are warp barriers (every lane named in the mask must arrive
//     at a warp operation of the same kind and mask),
//   - __shared__ variables are per block (one copy per host worker thread; a worker runs
//     one block at a time), and atomics are real atomic read-modify-writes (blocks of one
//     launch run on several host threads).
// The order in which warps, lanes and blocks run is a switch (forward, reversed, shuffled),
// so a missing barrier shows up as a wrong result in at least one order.
// The runtime (streams, launch validation, cub stand-ins, fault injection, statistics) is
// in ../../runtime.cc; the XLA FFI side (call frames, scratch allocator) in ../../ffi_bridge.cc.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

// ----------------------------------------------------------------------------- qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
// One copy per host worker thread, and a worker runs one block at a time: per-block memory.
// The emulator fills it with a byte pattern when a block starts (sjemu_set "shared_fill";
// the poison byte by default), so a read before any thread of the block wrote shows up. For
// that, __shared__ variables are the only thread-local data of the emulation library (the
// runtime keeps its per-thread state elsewhere) and the block fill covers the library's
// whole thread-local block. Do not add thread_local variables to the emulator.
#define __shared__ static thread_local

// ----------------------------------------------------------------------------- errors
enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorLaunchFailure = 719,
  cudaErrorNotSupported = 801,
  cudaErrorUnknown = 999,
};
typedef enum cudaError cudaError_t;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

struct CUstream_st;  // the emulated stream (runtime.cc)
typedef CUstream_st* cudaStream_t;

// ----------------------------------------------------------------------------- vector types
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};
struct alignas(8) int2 {
  int x, y;
};
struct alignas(16) int4 {
  int x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned x, y;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

namespace sjemu {

// One emulated CUDA thread (the fields the inline device functions need; the scheduler's
// bookkeeping lives in runtime.cc).
struct Lane {
  uint3 tid;
  int linear;  // linear thread index in the block
};

struct BlockInfo {
  uint3 bid;
  dim3 bdim, gdim;
};

// What the current host thread is executing (kept outside thread-local storage, see
// __shared__).
struct Exec {
  Lane* lane = nullptr;
  BlockInfo* block = nullptr;
  int64_t atomics = 0;         // atomic operations on global memory by this host thread (statistics)
  int64_t shared_atomics = 0;  // on shared memory
  const char* shared_lo = nullptr;  // this host thread's shared memory
  const char* shared_hi = nullptr;
};
Exec& exec();

// Barriers and warp operations (runtime.cc). `file`/`line` identify the call site: errors
// name it, and tests can disable or split a given barrier to check that the harness notices.
enum BarrierKind { kSync = 0, kSyncCount = 1, kSyncAnd = 2, kSyncOr = 3 };
int block_barrier(int kind, int pred, const char* file, int line);

enum WarpOp { kShflIdx = 0, kShflXor = 1, kShflDown = 2, kShflUp = 3, kVoteAny = 4, kVoteAll = 5, kVoteBallot = 6, kSyncWarp = 7 };
uint64_t warp_op(int op, unsigned mask, uint64_t value, int arg, int width, const char* file, int line);
unsigned active_mask();

template <class T>
T shfl(int op, unsigned mask, T v, int arg, const char* file, int line, int width = 32) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "shuffled values are at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = warp_op(op, mask, bits, arg, width, file, line);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

// ----------------------------------------------------------------------------- launches
struct LaunchSpec {
  const char* name;
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
};
// Validates the configuration (errors go to cudaGetLastError, as a real launch's do) and
// queues the launch on the stream; `body` runs once per thread.
void submit_launch(const LaunchSpec& spec, std::function<void()> body);

template <class... P>
struct Launcher {
  void (*kernel)(P...);
  LaunchSpec spec;
  template <class... A>
  void operator()(A&&... args) const {
    static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong number of arguments");
    // parameters are copied at launch, converted to the kernel's parameter types, as CUDA does
    auto params = std::make_shared<const std::tuple<std::decay_t<P>...>>(std::forward<A>(args)...);
    void (*k)(P...) = kernel;
    submit_launch(spec, [k, params] { std::apply(k, *params); });
  }
};

template <class... P>
Launcher<P...> launch(void (*kernel)(P...), const char* name, dim3 grid, dim3 block, size_t smem,
                      cudaStream_t stream) {
  return Launcher<P...>{kernel, LaunchSpec{name, grid, block, smem, stream}};
}

// ----------------------------------------------------------------------------- runtime hooks
// (used by the cub stand-ins; runtime.cc)
// Counts a call of `api` and returns the error injected into it, if any (cudaSuccess otherwise).
cudaError_t api_call(const char* api);
// Records `err` as the host thread's last error (as every failing runtime call does).
void set_last_error(cudaError_t err);
// Checks that [p, p + bytes) lies inside one device allocation known to the emulator (an
// FFI buffer or a scratch allocation); returns an error text naming `what` otherwise.
bool check_range(const void* p, size_t bytes, const char* what, const char* api, std::string* err);
// Queues host work on the stream; `run` returns an error text ("" on success).
void enqueue(cudaStream_t stream, const char* what, std::function<std::string()> run);
// Raised when the CUDA code breaks a rule the hardware would not report (work on the legacy
// default stream inside an XLA handler, a range outside every allocation, ...): the
// emulated FFI call fails with this text.
void violation(const std::string& text);
unsigned char poison_byte();

}  // namespace sjemu

// ----------------------------------------------------------------------------- built-ins
#define threadIdx (::sjemu::exec().lane->tid)
#define blockIdx (::sjemu::exec().block->bid)
#define blockDim (::sjemu::exec().block->bdim)
#define gridDim (::sjemu::exec().block->gdim)
#define warpSize 32

#define __syncthreads() ((void)::sjemu::block_barrier(::sjemu::kSync, 0, __FILE__, __LINE__))
#define __syncthreads_count(p) ::sjemu::block_barrier(::sjemu::kSyncCount, (p) ? 1 : 0, __FILE__, __LINE__)
#define __syncthreads_and(p) ::sjemu::block_barrier(::sjemu::kSyncAnd, (p) ? 1 : 0, __FILE__, __LINE__)
#define __syncthreads_or(p) ::sjemu::block_barrier(::sjemu::kSyncOr, (p) ? 1 : 0, __FILE__, __LINE__)
#define __syncwarp(...) ((void)::sjemu::warp_op(::sjemu::kSyncWarp, ::sjemu::syncwarp_mask(__VA_ARGS__), 0, 0, 32, __FILE__, __LINE__))
#define __shfl_sync(m, v, src, ...) ::sjemu::shfl(::sjemu::kShflIdx, m, v, src, __FILE__, __LINE__, ##__VA_ARGS__)
#define __shfl_xor_sync(m, v, x, ...) ::sjemu::shfl(::sjemu::kShflXor, m, v, x, __FILE__, __LINE__, ##__VA_ARGS__)
#define __shfl_down_sync(m, v, d, ...) ::sjemu::shfl(::sjemu::kShflDown, m, v, d, __FILE__, __LINE__, ##__VA_ARGS__)
#define __shfl_up_sync(m, v, d, ...) ::sjemu::shfl(::sjemu::kShflUp, m, v, d, __FILE__, __LINE__, ##__VA_ARGS__)
#define __any_sync(m, p) ((int)::sjemu::warp_op(::sjemu::kVoteAny, m, (p) ? 1 : 0, 0, 32, __FILE__, __LINE__))
#define __all_sync(m, p) ((int)::sjemu::warp_op(::sjemu::kVoteAll, m, (p) ? 1 : 0, 0, 32, __FILE__, __LINE__))
#define __ballot_sync(m, p) ((unsigned)::sjemu::warp_op(::sjemu::kVoteBallot, m, (p) ? 1 : 0, 0, 32, __FILE__, __LINE__))
#define __activemask() (::sjemu::active_mask())

namespace sjemu {
inline unsigned syncwarp_mask() { return 0xffffffffu; }
inline unsigned syncwarp_mask(unsigned m) { return m; }

template <class T, class U>
inline T atomic_rmw_bits(T* addr, U op) {
  // compare-and-swap loop on the value's bit pattern (works for float and double too)
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  static_assert(sizeof(T) == sizeof(Bits), "4- or 8-byte atomics");
  Exec& e = exec();
  const char* a = reinterpret_cast<const char*>(addr);
  ++(a >= e.shared_lo && a < e.shared_hi ? e.shared_atomics : e.atomics);
  Bits* p = reinterpret_cast<Bits*>(addr);
  Bits old_bits = __atomic_load_n(p, __ATOMIC_RELAXED);
  for (;;) {
    T old_v;
    std::memcpy(&old_v, &old_bits, sizeof(T));
    const T new_v = op(old_v);
    Bits new_bits;
    std::memcpy(&new_bits, &new_v, sizeof(T));
    if (__atomic_compare_exchange_n(p, &old_bits, new_bits, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) return old_v;
  }
}
}  // namespace sjemu

inline float atomicAdd(float* a, float v) { return ::sjemu::atomic_rmw_bits(a, [v](float o) { return o + v; }); }
inline double atomicAdd(double* a, double v) { return ::sjemu::atomic_rmw_bits(a, [v](double o) { return o + v; }); }
inline int atomicAdd(int* a, int v) { return ::sjemu::atomic_rmw_bits(a, [v](int o) { return (int)((unsigned)o + (unsigned)v); }); }
inline unsigned atomicAdd(unsigned* a, unsigned v) { return ::sjemu::atomic_rmw_bits(a, [v](unsigned o) { return o + v; }); }
inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) {
  return ::sjemu::atomic_rmw_bits(a, [v](unsigned long long o) { return o + v; });
}
inline int atomicSub(int* a, int v) { return ::sjemu::atomic_rmw_bits(a, [v](int o) { return (int)((unsigned)o - (unsigned)v); }); }
inline int atomicMax(int* a, int v) { return ::sjemu::atomic_rmw_bits(a, [v](int o) { return o > v ? o : v; }); }
inline unsigned atomicMax(unsigned* a, unsigned v) { return ::sjemu::atomic_rmw_bits(a, [v](unsigned o) { return o > v ? o : v; }); }
inline int atomicMin(int* a, int v) { return ::sjemu::atomic_rmw_bits(a, [v](int o) { return o < v ? o : v; }); }
inline unsigned atomicMin(unsigned* a, unsigned v) { return ::sjemu::atomic_rmw_bits(a, [v](unsigned o) { return o < v ? o : v; }); }
inline int atomicExch(int* a, int v) { return ::sjemu::atomic_rmw_bits(a, [v](int) { return v; }); }
inline float atomicExch(float* a, float v) { return ::sjemu::atomic_rmw_bits(a, [v](float) { return v; }); }
inline int atomicOr(int* a, int v) { return ::sjemu::atomic_rmw_bits(a, [v](int o) { return o | v; }); }
inline unsigned atomicOr(unsigned* a, unsigned v) { return ::sjemu::atomic_rmw_bits(a, [v](unsigned o) { return o | v; }); }
inline int atomicCAS(int* a, int cmp, int v) { return ::sjemu::atomic_rmw_bits(a, [cmp, v](int o) { return o == cmp ? v : o; }); }
inline unsigned long long atomicCAS(unsigned long long* a, unsigned long long cmp, unsigned long long v) {
  return ::sjemu::atomic_rmw_bits(a, [cmp, v](unsigned long long o) { return o == cmp ? v : o; });
}

inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
inline double __longlong_as_double(long long i) { double f; std::memcpy(&f, &i, 8); return f; }
inline long long __double_as_longlong(double f) { long long i; std::memcpy(&i, &f, 8); return i; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float rsqrtf(float x) { return 1.f / sqrtf(x); }

// CUDA's min/max overloads for the arithmetic types (device functions in CUDA).
#define SJEMU_MINMAX(T)                                  \
  inline T min(T a, T b) { return a < b ? a : b; }       \
  inline T max(T a, T b) { return a > b ? a : b; }
SJEMU_MINMAX(int)
SJEMU_MINMAX(unsigned)
SJEMU_MINMAX(long)
SJEMU_MINMAX(unsigned long)
SJEMU_MINMAX(long long)
SJEMU_MINMAX(unsigned long long)
SJEMU_MINMAX(float)
SJEMU_MINMAX(double)
#undef SJEMU_MINMAX

// ----------------------------------------------------------------------------- runtime API
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t err);
const char* cudaGetErrorName(cudaError_t err);
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t stream = nullptr);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind, cudaStream_t stream = nullptr);
