// splatjax CUDA-on-CPU emulation: checks of the emulator itself (run by tests/test_cuda_emu.py
// through sjemu_selftest). Each check runs small kernels or CUB calls on an emulated stream
// and compares with what CUDA specifies; the result lists the failed checks.
#include <algorithm>
#include <cstdint>
#include <cub/cub.cuh>
#include <string>
#include <vector>

#include "runtime.h"

#define SJ_LAUNCH(kernel, grid, block, smem, stream) ::sjemu::launch(kernel, #kernel, grid, block, smem, stream)

namespace {

std::vector<std::string> failures;

void expect(bool ok, const std::string& what) {
  if (!ok) failures.push_back(what);
}

// Device memory for a check: registered with the emulator like a scratch block.
template <typename T>
struct DeviceVec {
  std::vector<T> v;
  explicit DeviceVec(size_t n, T init = T()) : v(n, init) { sjemu::add_region(v.data(), n * sizeof(T), "selftest"); }
  ~DeviceVec() { sjemu::remove_region(v.data()); }
  T* data() { return v.data(); }
};

__global__ void noop_kernel(int*) {}

__global__ void block_sum_kernel(const int* in, int* out) {
  __shared__ int sh[256];
  sh[threadIdx.x] = in[blockIdx.x * blockDim.x + threadIdx.x];
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = sh[0];
}

__global__ void early_exit_barrier_kernel(int* out) {
  if (threadIdx.x >= 64) return;  // these threads never reach the barrier below
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void split_barrier_kernel(int* out) {
  if (threadIdx.x < 32) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

__global__ void warp_kernel(int* out) {
  const int lane = threadIdx.x % 32;
  int v = lane + 1;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  out[threadIdx.x * 4 + 0] = v;                                                  // 528 everywhere
  out[threadIdx.x * 4 + 1] = __shfl_down_sync(0xffffffffu, lane, 3);             // lane + 3, or own lane at the end
  out[threadIdx.x * 4 + 2] = (int)__ballot_sync(0xffffffffu, lane % 2 == 0);     // 0x55555555
  out[threadIdx.x * 4 + 3] = __syncthreads_count(lane < 10) + __any_sync(0xffffffffu, lane == 31);
}

__global__ void diverged_shuffle_kernel(int* out) {
  int v = threadIdx.x;
  if (threadIdx.x % 32 < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);  // the other half never arrives
  out[threadIdx.x] = v;
}

__global__ void shared_fill_kernel(int* out) {
  __shared__ int sh[4];
  if (threadIdx.x == 0) out[blockIdx.x] = sh[blockIdx.x % 4];  // read before any write of this block
  __syncthreads();
  sh[threadIdx.x % 4] = 7;
}

__global__ void write_past_end_kernel(int* p, int n) {
  if (threadIdx.x == 0) p[n] = 1;
}

__global__ void atomic_kernel(float* acc, int* count) {
  atomicAdd(acc, 1.0f);
  atomicAdd(count, 1);
}

std::string run_stream(const std::function<void(cudaStream_t)>& body) {
  CUstream_st* s = sjemu::new_stream();
  body(s);
  std::string err = sjemu::flush(s);
  sjemu::delete_stream(s);
  const std::string rules = sjemu::take_violations();
  return err.empty() ? rules : err;
}

void check_launch_validation() {
  DeviceVec<int> buf(8);
  const std::string e = run_stream([&](cudaStream_t s) {
    cudaGetLastError();
    SJ_LAUNCH(noop_kernel, 0, 256, 0, s)(buf.data());
    expect(cudaGetLastError() == cudaErrorInvalidConfiguration, "a zero-block grid is cudaErrorInvalidConfiguration");
    SJ_LAUNCH(noop_kernel, 1, 1025, 0, s)(buf.data());
    expect(cudaGetLastError() == cudaErrorInvalidConfiguration, "a 1025-thread block is cudaErrorInvalidConfiguration");
    SJ_LAUNCH(noop_kernel, dim3(1, 65536), 32, 0, s)(buf.data());
    expect(cudaGetLastError() == cudaErrorInvalidConfiguration, "grid.y > 65535 is cudaErrorInvalidConfiguration");
    SJ_LAUNCH(noop_kernel, 1, 32, 0, s)(buf.data());
    expect(cudaGetLastError() == cudaSuccess, "a valid launch succeeds");
  });
  expect(e.empty(), "valid launches run: " + e);
  const std::string d = run_stream([&](cudaStream_t) { SJ_LAUNCH(noop_kernel, 1, 32, 0, nullptr)(buf.data()); });
  expect(d.find("legacy default stream") != std::string::npos, "a launch on stream 0 is reported: " + d);
}

void check_barriers() {
  const int n = 4 * 256;
  DeviceVec<int> in(n), out(4);
  for (int i = 0; i < n; ++i) in.v[i] = i;
  std::string e = run_stream([&](cudaStream_t s) { SJ_LAUNCH(block_sum_kernel, 4, 256, 0, s)(in.data(), out.data()); });
  expect(e.empty(), "tree reduction runs: " + e);
  for (int b = 0; b < 4; ++b)
    expect(out.v[b] == 256 * b * 256 + 255 * 256 / 2, "tree reduction with barriers sums block " + std::to_string(b));
  DeviceVec<int> flags(256);
  e = run_stream([&](cudaStream_t s) { SJ_LAUNCH(early_exit_barrier_kernel, 1, 256, 0, s)(flags.data()); });
  expect(e.find("reached by 64 of the 256 threads") != std::string::npos,
         "a barrier after an early exit of some threads is reported: " + e);
  e = run_stream([&](cudaStream_t s) { SJ_LAUNCH(split_barrier_kernel, 1, 64, 0, s)(flags.data()); });
  expect(e.find("different barriers") != std::string::npos, "threads at two different barriers are reported: " + e);
}

void check_warp_ops() {
  DeviceVec<int> out(64 * 4);
  std::string e = run_stream([&](cudaStream_t s) { SJ_LAUNCH(warp_kernel, 1, 64, 0, s)(out.data()); });
  expect(e.empty(), "warp operations run: " + e);
  for (int t = 0; t < 64; ++t) {
    const int lane = t % 32;
    expect(out.v[t * 4] == 528, "xor butterfly sums the warp");
    expect(out.v[t * 4 + 1] == (lane + 3 < 32 ? lane + 3 : lane), "shfl_down reads lane + delta, or keeps its own value");
    expect((unsigned)out.v[t * 4 + 2] == 0x55555555u, "ballot collects the predicate bits");
    expect(out.v[t * 4 + 3] == 20 + 1, "syncthreads_count counts the block, any_sync votes the warp");
  }
  e = run_stream([&](cudaStream_t s) { SJ_LAUNCH(diverged_shuffle_kernel, 1, 32, 0, s)(out.data()); });
  expect(e.find("__shfl_xor_sync") != std::string::npos, "a shuffle that half the warp skips is reported: " + e);
}

void check_shared_fill() {
  DeviceVec<int> out(8, 0);
  const std::string e = run_stream([&](cudaStream_t s) { SJ_LAUNCH(shared_fill_kernel, 8, 32, 0, s)(out.data()); });
  bool filled = e.empty();
  for (int v : out.v) filled = filled && v == (int)(0x01010101u * sjemu::poison_byte());
  expect(filled, "every block starts with shared memory filled with the poison byte");
}

void check_scratch_rules() {
  int code = 0;
  std::string err;
  for (size_t al : {size_t(32), size_t(256), size_t(3), size_t(0)}) {
    err.clear();
    void* p = sjemu::scratch_allocate(64, al, &code, &err);
    expect(!p && err == "Unsupported alignment: " + std::to_string(al), "XLA refuses scratch alignment " + std::to_string(al));
  }
  err.clear();
  void* p = sjemu::scratch_allocate(40, 16, &code, &err);
  expect(p && err.empty() && (uintptr_t)p % 16 == 0 && (uintptr_t)p % 32 == 16,
         "scratch is 16-byte aligned and, to expose code assuming more, not 32-byte aligned");
  bool poisoned = p != nullptr;
  for (int i = 0; p && i < 40; ++i) poisoned = poisoned && ((unsigned char*)p)[i] == sjemu::poison_byte();
  expect(poisoned, "new scratch memory is poisoned");
  const std::string e = run_stream([&](cudaStream_t s) {
    SJ_LAUNCH(write_past_end_kernel, 1, 32, 0, s)(static_cast<int*>(p), 10);
    sjemu::scratch_free(s, p, 40);
  });
  expect(e.find("past the end of a scratch block of 40 bytes") != std::string::npos,
         "a write past a scratch block is reported when it is freed: " + e);
  std::string range;
  expect(!sjemu::check_range(p, 4, "freed", "selftest", &range), "a freed block is no longer device memory");
  err.clear();
  expect(sjemu::scratch_allocate(0, 16, &code, &err) == nullptr && err.empty(), "size 0 gives null");
}

void check_atomics() {
  DeviceVec<float> acc(1, 0.f);
  DeviceVec<int> count(1, 0);
  const std::string e =
      run_stream([&](cudaStream_t s) { SJ_LAUNCH(atomic_kernel, 64, 128, 0, s)(acc.data(), count.data()); });
  expect(e.empty() && acc.v[0] == 8192.f && count.v[0] == 8192, "atomics from every block of a launch add up");
}

void check_cub() {
  // the scan accumulates in the input type (int32 wraps even into an int64 output)
  const int n = 3;
  DeviceVec<int32_t> in(n);
  DeviceVec<int64_t> out(n);
  in.v = {INT32_MAX, 1, 1};
  size_t bytes = 0;
  cub::DeviceScan::InclusiveSum(nullptr, bytes, in.data(), out.data(), n, nullptr);
  DeviceVec<uint8_t> temp(bytes);
  std::string e = run_stream([&](cudaStream_t s) {
    expect(cub::DeviceScan::InclusiveSum(temp.data(), bytes, in.data(), out.data(), n, s) == cudaSuccess, "scan runs");
    size_t small = bytes - 1;
    expect(cub::DeviceScan::InclusiveSum(temp.data(), small, in.data(), out.data(), n, s) == cudaErrorInvalidValue,
           "a scan with too little temporary storage is cudaErrorInvalidValue");
  });
  expect(e.empty() && out.v[1] == (int64_t)INT32_MIN, "an int32 scan wraps at 2^31 as CUB's does");
  // the radix sort orders by bits [begin_bit, end_bit) only, stably
  const int m = 6;
  DeviceVec<uint64_t> kin(m), kout(m);
  DeviceVec<uint32_t> vin(m), vout(m);
  kin.v = {0x300000002ull, 0x100000001ull, 0x200000002ull, 0x000000001ull, 0x500000000ull, 0x400000003ull};
  for (int i = 0; i < m; ++i) vin.v[i] = i;
  bytes = 0;
  cub::DeviceRadixSort::SortPairs(nullptr, bytes, kin.data(), kout.data(), vin.data(), vout.data(), m, 0, 8, nullptr);
  DeviceVec<uint8_t> temp2(bytes);
  e = run_stream([&](cudaStream_t s) {
    cub::DeviceRadixSort::SortPairs(temp2.data(), bytes, kin.data(), kout.data(), vin.data(), vout.data(), m, 0, 8, s);
  });
  const std::vector<uint32_t> want = {4, 1, 3, 0, 2, 5};  // by the low byte, ties in input order
  expect(e.empty() && vout.v == want, "SortPairs honours the bit range and is stable");
  expect(kout.v[0] == 0x500000000ull, "SortPairs copies whole keys");
  size_t big = 0;
  cub::DeviceRadixSort::SortPairs(nullptr, big, kin.data(), kout.data(), vin.data(), vout.data(), m + 100, 0, 8, nullptr);
  DeviceVec<uint8_t> temp3(big);
  e = run_stream([&](cudaStream_t s) {
    cub::DeviceRadixSort::SortPairs(temp3.data(), big, kin.data(), kout.data(), vin.data(), vout.data(), m + 100, 0, 8,
                                    s);
  });
  expect(e.find("not inside one device allocation") != std::string::npos, "a sort past its buffers is reported: " + e);
  // DoubleBuffer: the selector names the result, the other buffer is garbage afterwards
  for (int end_bit : {8, 16}) {
    DeviceVec<uint64_t> ka(m), kb(m);
    DeviceVec<uint32_t> va(m), vb(m);
    ka.v = kin.v;
    va.v = vin.v;
    cub::DoubleBuffer<uint64_t> keys(ka.data(), kb.data());
    cub::DoubleBuffer<uint32_t> vals(va.data(), vb.data());
    size_t db = 0;
    cub::DeviceRadixSort::SortPairs(nullptr, db, keys, vals, m, 0, end_bit, nullptr);
    DeviceVec<uint8_t> t(db);
    e = run_stream([&](cudaStream_t s) { cub::DeviceRadixSort::SortPairs(t.data(), db, keys, vals, m, 0, end_bit, s); });
    const std::vector<uint32_t> got(vals.Current(), vals.Current() + m);
    expect(e.empty() && got == want, "DoubleBuffer SortPairs leaves the result in Current()");
    expect(keys.selector == (end_bit == 8 ? 1 : 0), "one selector flip per 8-bit pass");
    expect(vals.Alternate()[0] == 0x01010101u * sjemu::poison_byte(), "the other buffer is garbage afterwards");
  }
}

}  // namespace

// Runs the checks; writes the failures (one per line) into buf and returns their count.
SJEMU_EXPORT int sjemu_selftest(char* buf, long size) {
  failures.clear();
  check_launch_validation();
  check_barriers();
  check_warp_ops();
  check_shared_fill();
  check_scratch_rules();
  check_atomics();
  check_cub();
  std::string out;
  for (const auto& f : failures) out += f + "\n";
  if (buf && size > 0) {
    const size_t n = std::min((size_t)size - 1, out.size());
    std::memcpy(buf, out.data(), n);
    buf[n] = 0;
  }
  return (int)failures.size();
}
