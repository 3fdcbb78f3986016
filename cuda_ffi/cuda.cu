// CUDA driver of the splatjax tile rasterizer (math in core.h), exposed as XLA FFI handlers.
//
// All C cameras are processed in one set of launches on XLA's stream:
//   project (C*N threads) -> inclusive scan of the per-(camera, Gaussian) tile counts in
//   int64 (CUB) -> emit (camera*tile, depth) 64-bit keys -> CUB radix sort (DoubleBuffer)
//   over the whole static capacity (unused entries hold all-ones keys and sort last) ->
//   per-tile ranges ->
//   blend (one 16x16 block per camera tile, Gaussians staged in shared memory).
// The forward returns the sorted Gaussian ids and the per-tile ranges (when they fit its
// `lists` result, i.e. at the first capacity level), and the backward reuses them instead of
// binning again (it only re-projects, which is cheap); at a larger level the backward bins
// again (deterministic: the stable radix sort over keys emitted in Gaussian order gives the
// forward's lists). The backward walks each pixel back to front from its last contributor;
// per-Gaussian screen-space gradients are summed over the warp with shuffles before one
// lane adds them with atomics, and the pose gradients are reduced per block in double
// (one atomic per quantity and block). Then they are chained through the projection.
// Scratch memory comes from XLA's scratch allocator (16-byte alignment, XLA's limit);
// nothing is allocated with cudaMalloc and the host never waits on the device. When the
// needed intersection count exceeds the capacity nothing is rendered (NaN images, NaN
// gradients) and the count is returned (saturated to int32), so the caller re-runs at a
// larger capacity. Every CUDA call is checked; a failure is an FFI error naming the step.
// Colours are [1, N, 3] (shared by the cameras) or [C, N, 3] (per camera); their gradient has
// the same shape and is written when `color_grads`.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cub/cub.cuh>
#include <string>

#include "core.h"
#include "xla/ffi/api/ffi.h"

// Kernel launches: <<<...>>> under nvcc; the CPU emulation (emu/cuda_emu.cc) defines its own.
#ifndef SJ_LAUNCH
#define SJ_LAUNCH(kernel, grid, block, smem, stream) kernel<<<grid, block, smem, stream>>>
#endif

namespace ffi = xla::ffi;

namespace {

using F32 = ffi::Buffer<ffi::F32>;
using S32 = ffi::Buffer<ffi::S32>;
using U32 = ffi::Buffer<ffi::U32>;
constexpr int BLOCK = sj::TILE * sj::TILE;  // blend kernels: one thread per pixel of a tile
constexpr int THREADS = 256;                // per-Gaussian kernels
constexpr unsigned FULL = 0xffffffffu;
constexpr size_t kScratchAlign = 16;  // XLA's FFI scratch allocator rejects alignments above 16 bytes
constexpr int kPose = 16;             // pose gradient entries per camera: R (9), t (3), intrinsics (4)

struct Dev {
  const float *means, *scales, *quats, *opac, *colors, *offset, *R, *t, *K;
  int64_t offset_cams;  // 0: none, 1: shared, C: per camera
  int64_t color_cams;   // colours [color_cams, N, 3]: 1 (shared) or C
  int N, C, W, H, ntx, nty;
  int antialiased;
};

__device__ sj::Camera camera_of(const Dev& d, int c) {
  sj::Camera cam;
  for (int k = 0; k < 9; ++k) cam.R[k] = d.R[9 * c + k];
  for (int k = 0; k < 3; ++k) cam.t[k] = d.t[3 * c + k];
  cam.fx = d.K[4 * c]; cam.fy = d.K[4 * c + 1]; cam.cx = d.K[4 * c + 2]; cam.cy = d.K[4 * c + 3];
  cam.width = d.W; cam.height = d.H;
  cam.antialiased = d.antialiased;
  return cam;
}

// Row of Gaussian i's colour for camera c.
__device__ int64_t color_row(const Dev& d, int c, int i) { return (d.color_cams == 1 ? 0 : (int64_t)c * d.N) + i; }

__device__ const float* offset_of(const Dev& d, int c, int i) {
  if (d.offset_cams == 0) return nullptr;
  return d.offset + ((d.offset_cams == 1 ? 0 : (int64_t)c * d.N) + i) * 2;
}

__device__ float nan_f() { return __int_as_float(0x7fc00000); }

// counts may be null (the backward only needs the projected data and the tile rectangles)
__global__ void project_kernel(Dev d, float* gdata, float* depth, int4* rect, int64_t* counts) {
  const int64_t gid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (gid >= (int64_t)d.C * d.N) return;
  const int c = (int)(gid / d.N), i = (int)(gid % d.N);
  const sj::Camera cam = camera_of(d, c);
  sj::Projected p;
  sj::project_gaussian(d.means + 3 * i, d.scales + 3 * i, d.quats + 4 * i, d.opac[i], offset_of(d, c, i), cam, p);
  float* g = gdata + gid * sj::GSTRIDE;
  const float* col = d.colors + 3 * color_row(d, c, i);
  g[0] = p.mx; g[1] = p.my; g[2] = p.A; g[3] = p.B; g[4] = p.C; g[5] = p.opacity;
  g[6] = col[0]; g[7] = col[1]; g[8] = col[2];
  if (depth) depth[gid] = p.depth;
  rect[gid] = make_int4(p.tx0, p.ty0, p.tx1, p.ty1);
  if (counts) counts[gid] = sj::tile_count(p);
}

// total = the number of intersections (int64), needed = the same saturated to int32.
__global__ void total_kernel(const int64_t* ends, int64_t CN, int64_t* total, int32_t* needed) {
  const int64_t v = CN > 0 ? ends[CN - 1] : 0;
  total[0] = v;
  if (needed) needed[0] = (int32_t)(v > INT32_MAX ? INT32_MAX : v);
}

// The backward that reuses the forward's lists takes the forward's count.
__global__ void total_from_needed_kernel(const int32_t* fwd_needed, int64_t* total, int32_t* needed) {
  total[0] = fwd_needed[0];
  needed[0] = fwd_needed[0];
}

__global__ void emit_kernel(Dev d, const float* depth, const int4* rect, const int64_t* ends, const int64_t* total,
                            int64_t cap, uint64_t* keys, uint32_t* vals) {
  const int64_t gid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const int64_t CN = (int64_t)d.C * d.N;
  if (gid >= CN || *total > cap) return;  // overflow: nothing is emitted
  const int4 r = rect[gid];
  int64_t pos = gid == 0 ? 0 : ends[gid - 1];
  const int c = (int)(gid / d.N);
  const int64_t ntiles = (int64_t)d.ntx * d.nty;
  union { float f; uint32_t u; } z;
  z.f = depth[gid];
  for (int ty = r.y; ty < r.w; ++ty)
    for (int tx = r.x; tx < r.z; ++tx) {
      const uint64_t tile = (uint64_t)(c * ntiles + (int64_t)ty * d.ntx + tx);
      keys[pos] = (tile << 32) | z.u;
      vals[pos] = (uint32_t)(gid % d.N);
      ++pos;
    }
}

__global__ void ranges_kernel(const uint64_t* keys, const int64_t* total, int64_t cap, int2* ranges) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const int64_t n = *total;
  if (n > cap || i >= n) return;
  const uint32_t tile = (uint32_t)(keys[i] >> 32);
  if (i == 0 || (uint32_t)(keys[i - 1] >> 32) != tile) ranges[tile].x = (int)i;
  if (i == n - 1 || (uint32_t)(keys[i + 1] >> 32) != tile) ranges[tile].y = (int)(i + 1);
}

__global__ void forward_kernel(Dev d, const float* gdata, const uint32_t* vals, const int2* ranges,
                               const int64_t* total, int64_t cap, const float* bg, float* rgb, float* alpha,
                               float* tfinal, int32_t* ncontrib) {
  const int ntiles = d.ntx * d.nty;
  const int tile_g = blockIdx.x, c = tile_g / ntiles, tile = tile_g % ntiles;
  const int x = (tile % d.ntx) * sj::TILE + threadIdx.x % sj::TILE;
  const int y = (tile / d.ntx) * sj::TILE + threadIdx.x / sj::TILE;
  const bool inside = x < d.W && y < d.H;
  const int64_t pix = ((int64_t)c * d.H + y) * d.W + x;
  if (*total > cap) {  // overflow (uniform over the grid): NaN images, nothing rendered
    if (inside) {
      for (int k = 0; k < 3; ++k) rgb[pix * 3 + k] = nan_f();
      alpha[pix] = nan_f(); tfinal[pix] = nan_f(); ncontrib[pix] = 0;
    }
    return;
  }
  const int2 range = ranges[tile_g];
  const int n = range.y - range.x;
  __shared__ float sh[BLOCK * sj::GSTRIDE];
  sj::FwdState st;
  sj::fwd_init(st);
  bool done = !inside;
  const float px = x + 0.5f, py = y + 0.5f;
  for (int b0 = 0; b0 < n; b0 += BLOCK) {
    if (__syncthreads_count(done) == BLOCK) break;
    const int j = b0 + threadIdx.x;
    if (j < n) {
      const int64_t id = (int64_t)c * d.N + vals[range.x + j];
      for (int k = 0; k < sj::GSTRIDE; ++k) sh[threadIdx.x * sj::GSTRIDE + k] = gdata[id * sj::GSTRIDE + k];
    }
    __syncthreads();
    const int m = min(BLOCK, n - b0);
    for (int k = 0; k < m && !done; ++k) {
      if (!sj::fwd_step(st, &sh[k * sj::GSTRIDE], px, py, b0 + k)) done = true;
    }
  }
  if (inside) {
    const float* bgc = bg + 3 * c;
    for (int k = 0; k < 3; ++k) rgb[pix * 3 + k] = st.rgb[k] + st.T * bgc[k];
    alpha[pix] = 1.f - st.T;
    tfinal[pix] = st.T;
    ncontrib[pix] = st.n;
  }
}

__global__ void backward_kernel(Dev d, const float* gdata, const uint32_t* vals, const int2* ranges,
                                const int64_t* total, int64_t cap, const float* bg, const float* tfinal,
                                const int32_t* ncontrib, const float* g_rgb, const float* g_alpha, float* sgrad) {
  const int ntiles = d.ntx * d.nty;
  const int tile_g = blockIdx.x, c = tile_g / ntiles, tile = tile_g % ntiles;
  if (*total > cap) return;  // uniform over the grid
  const int x = (tile % d.ntx) * sj::TILE + threadIdx.x % sj::TILE;
  const int y = (tile / d.ntx) * sj::TILE + threadIdx.x / sj::TILE;
  const bool inside = x < d.W && y < d.H;
  const int64_t pix = ((int64_t)c * d.H + y) * d.W + x;
  const int2 range = ranges[tile_g];
  const int n = range.y - range.x;
  const int last = inside ? ncontrib[pix] : 0;
  const int lane = threadIdx.x % 32;
  __shared__ float sh[BLOCK * sj::GSTRIDE];
  __shared__ uint32_t sid[BLOCK];
  __shared__ int max_last;
  if (threadIdx.x == 0) max_last = 0;
  __syncthreads();
  atomicMax(&max_last, last);
  __syncthreads();
  sj::BwdState st;
  if (inside) sj::bwd_init(st, tfinal[pix], g_rgb + pix * 3, bg + 3 * c, g_alpha[pix]);
  const float px = x + 0.5f, py = y + 0.5f;
  const int top = min(n, max_last);
  // batches from the back: entries [b1 - BLOCK, b1)
  for (int b1 = top; b1 > 0; b1 -= BLOCK) {
    const int b0 = max(0, b1 - BLOCK);
    __syncthreads();  // the previous batch is no longer read
    const int j = b0 + threadIdx.x;
    if (j < b1) {
      const uint32_t id = vals[range.x + j];
      sid[threadIdx.x] = id;
      const float* src = gdata + ((int64_t)c * d.N + id) * sj::GSTRIDE;
      for (int k = 0; k < sj::GSTRIDE; ++k) sh[threadIdx.x * sj::GSTRIDE + k] = src[k];
    }
    __syncthreads();
    for (int k = b1 - b0 - 1; k >= 0; --k) {
      float out[sj::GGRAD];
      for (int q = 0; q < sj::GGRAD; ++q) out[q] = 0.f;
      const bool contributes = inside && b0 + k < last && sj::bwd_step(st, &sh[k * sj::GSTRIDE], px, py, out);
      // the warp's contributions to this Gaussian are summed before one lane adds them
      if (__any_sync(FULL, contributes)) {
        for (int q = 0; q < sj::GGRAD; ++q)
          for (int o = 16; o > 0; o >>= 1) out[q] += __shfl_down_sync(FULL, out[q], o);
        if (lane == 0) {
          float* dst = sgrad + ((int64_t)c * d.N + sid[k]) * sj::GGRAD;
          for (int q = 0; q < sj::GGRAD; ++q) atomicAdd(dst + q, out[q]);
        }
      }
    }
  }
}

// One thread per (camera, Gaussian): grid (Gaussian blocks, cameras). Gaussian gradients are
// added with atomics (contended only across cameras); the camera's pose gradients are
// accumulated in double per thread (as the CPU kernel does), summed over the block and added
// with one double atomic per entry.
__global__ void project_bwd_kernel(Dev d, const float* sgrad, const int4* rect, const int64_t* total, int64_t cap,
                                   bool gaussian_grads, bool color_grads, float* gm, float* gsc, float* gq,
                                   float* go, float* gc,
                                   float* goff, double* pose) {
  if (*total > cap) return;  // uniform over the grid
  const int c = blockIdx.y;
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  double acc[kPose];
  for (int k = 0; k < kPose; ++k) acc[k] = 0.0;
  if (i < d.N) {
    const int64_t gid = (int64_t)c * d.N + i;
    const int4 r = rect[gid];
    if (r.z > r.x && r.w > r.y) {
      const float* g = sgrad + gid * sj::GGRAD;
      if (d.offset_cams != 0) {
        float* o = goff + ((d.offset_cams == 1 ? 0 : (int64_t)c * d.N) + i) * 2;
        atomicAdd(o, g[0]);
        atomicAdd(o + 1, g[1]);
      }
      float lm[3] = {0.f, 0.f, 0.f}, ls[3] = {0.f, 0.f, 0.f}, lq[4] = {0.f, 0.f, 0.f, 0.f}, lo = 0.f;
      const sj::Camera cam = camera_of(d, c);
      sj::project_bwd<double>(d.means + 3 * i, d.scales + 3 * i, d.quats + 4 * i, d.opac[i], cam, g, gaussian_grads,
                              lm, ls, lq, &lo, acc, acc + 9, acc + 12);
      if (color_grads) {
        float* gci = gc + 3 * color_row(d, c, (int)i);
        for (int k = 0; k < 3; ++k) atomicAdd(gci + k, g[6 + k]);
      }
      if (gaussian_grads) {
        atomicAdd(go + i, lo);
        for (int k = 0; k < 3; ++k) {
          atomicAdd(gm + 3 * i + k, lm[k]);
          atomicAdd(gsc + 3 * i + k, ls[k]);
        }
        for (int k = 0; k < 4; ++k) atomicAdd(gq + 4 * i + k, lq[k]);
      }
    }
  }
  // block reduction of the pose entries: warp shuffles, then the warps' sums in shared memory
  __shared__ double part[THREADS / 32][kPose];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int k = 0; k < kPose; ++k) {
    double v = acc[k];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(FULL, v, o);
    if (lane == 0) part[warp][k] = v;
  }
  __syncthreads();
  if (threadIdx.x < kPose) {
    double s = 0.0;
    for (int w = 0; w < THREADS / 32; ++w) s += part[w][threadIdx.x];
    atomicAdd(pose + (int64_t)c * kPose + threadIdx.x, s);
  }
}

// Pose gradients to float (NaN after an overflow).
__global__ void pose_out_kernel(const double* pose, int C, const int64_t* total, int64_t cap, float* gR, float* gt,
                                float* gK) {
  const int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= (int64_t)C * kPose) return;
  const int c = (int)(j / kPose), k = (int)(j % kPose);
  const float v = *total > cap ? nan_f() : (float)pose[j];
  if (k < 9) gR[9 * c + k] = v;
  else if (k < 12) gt[3 * c + k - 9] = v;
  else gK[4 * c + k - 12] = v;
}

// After an overflow every Gaussian gradient is NaN too (never a silent zero).
struct NanTargets {
  float* p[6];
  int64_t n[6];
};

__global__ void overflow_nan_kernel(NanTargets t, const int64_t* total, int64_t cap) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (*total <= cap) return;
  for (int k = 0; k < 6; ++k)
    if (i < t.n[k]) t.p[k][i] = nan_f();
}

int64_t blocks_for(int64_t n, int b = THREADS) { return (n + b - 1) / b; }

int key_bits(int64_t tiles_total) {
  int bits = 32;
  while ((int64_t(1) << (bits - 32)) < tiles_total + 1) ++bits;  // +1: all-ones padding sorts last
  return bits;
}

ffi::Error cuda_failure(const char* who, const char* step, cudaError_t err) {
  return ffi::Error::Internal(std::string("splatjax ") + who + ": " + step + " failed: " + cudaGetErrorName(err) +
                              " (" + cudaGetErrorString(err) + ")");
}

// Every CUDA call and launch is checked; the error names the step.
#define SJ_TRY(expr, step)                                              \
  do {                                                                  \
    const cudaError_t sj_err_ = (expr);                                 \
    if (sj_err_ != cudaSuccess) return cuda_failure(who, step, sj_err_); \
  } while (0)
#define SJ_LAUNCHED(step) SJ_TRY(cudaGetLastError(), step)

// Scratch memory from XLA's allocator.
class Scratch {
 public:
  explicit Scratch(ffi::ScratchAllocator& a) : a_(a) {}
  template <typename T>
  T* take(int64_t count) {
    const size_t bytes = sizeof(T) * (size_t)std::max<int64_t>(count, 1);
    auto p = a_.Allocate(bytes, std::min(kScratchAlign, alignof(T) < 4 ? size_t(4) : alignof(T)));
    if (!p.has_value()) {
      failed_bytes_ = bytes;
      return nullptr;
    }
    return static_cast<T*>(p.value());
  }
  ffi::Error status(const char* who) const {
    if (failed_bytes_ == 0) return ffi::Error::Success();
    return ffi::Error(ffi::ErrorCode::kResourceExhausted, std::string("splatjax ") + who + ": scratch allocation of " +
                                                             std::to_string(failed_bytes_) + " bytes failed");
  }

 private:
  ffi::ScratchAllocator& a_;
  size_t failed_bytes_ = 0;
};

// Projection, tile counts, int64 scan, key emission, radix sort and per-tile ranges for
// every camera. `vals_out` (cap entries; null: scratch) receives the sorted Gaussian ids and
// `ranges` the per-tile [start, end) (tiles_total entries); b.total the intersection count
// and `needed` (if not null) the same saturated to int32.
struct Binned {
  float* gdata;
  int4* rect;
  int64_t* total;
  const uint32_t* vals;  // sorted Gaussian ids (in vals_out when there is one)
};

ffi::Error bin(const char* who, cudaStream_t stream, Scratch& scratch, const Dev& d, int64_t cap, uint32_t* vals_out,
               int2* ranges, int32_t* needed, Binned& b) {
  const int64_t CN = (int64_t)d.C * d.N, tiles_total = (int64_t)d.C * d.ntx * d.nty;
  b.gdata = scratch.take<float>(CN * sj::GSTRIDE);
  b.rect = scratch.take<int4>(CN);
  b.total = scratch.take<int64_t>(1);
  float* depth = scratch.take<float>(CN);
  int64_t* counts = scratch.take<int64_t>(CN);
  int64_t* ends = scratch.take<int64_t>(CN);
  // the radix sort ping-pongs between two key and two value buffers (no copies of them in
  // CUB's temporary storage); the second value buffer is the caller's when it has one
  uint64_t* keys_a = scratch.take<uint64_t>(cap);
  uint64_t* keys_b = scratch.take<uint64_t>(cap);
  uint32_t* vals_a = scratch.take<uint32_t>(cap);
  uint32_t* vals_b = vals_out ? vals_out : scratch.take<uint32_t>(cap);
  b.vals = vals_b;  // (not read when there are no lists)
  size_t scan_bytes = 0, sort_bytes = 0;
  const int end_bit = key_bits(tiles_total);
  SJ_TRY(cub::DeviceScan::InclusiveSum(nullptr, scan_bytes, counts, ends, CN, stream), "scan size query");
  {
    cub::DoubleBuffer<uint64_t> keys(keys_a, keys_b);
    cub::DoubleBuffer<uint32_t> vals(vals_a, vals_b);
    SJ_TRY(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, keys, vals, cap, 0, end_bit, stream),
           "sort size query");
  }
  void* temp = scratch.take<uint8_t>((int64_t)std::max(scan_bytes, sort_bytes));
  if (auto e = scratch.status(who); e.failure()) return e;
  SJ_TRY(cudaMemsetAsync(ranges, 0, sizeof(int2) * tiles_total, stream), "clear the tile ranges");
  if (CN > 0) {
    SJ_LAUNCH(project_kernel, blocks_for(CN), THREADS, 0, stream)(d, b.gdata, depth, b.rect, counts);
    SJ_LAUNCHED("project_kernel launch");
    SJ_TRY(cub::DeviceScan::InclusiveSum(temp, scan_bytes, counts, ends, CN, stream), "scan of the tile counts");
  }
  SJ_LAUNCH(total_kernel, 1, 1, 0, stream)(ends, CN, b.total, needed);
  SJ_LAUNCHED("total_kernel launch");
  if (CN == 0) return ffi::Error::Success();  // no lists: every tile range is empty
  SJ_TRY(cudaMemsetAsync(keys_a, 0xff, sizeof(uint64_t) * cap, stream), "fill the keys with padding");
  SJ_TRY(cudaMemsetAsync(vals_a, 0, sizeof(uint32_t) * cap, stream), "clear the values");
  SJ_LAUNCH(emit_kernel, blocks_for(CN), THREADS, 0, stream)(d, depth, b.rect, ends, b.total, cap, keys_a, vals_a);
  SJ_LAUNCHED("emit_kernel launch");
  cub::DoubleBuffer<uint64_t> keys(keys_a, keys_b);
  cub::DoubleBuffer<uint32_t> vals(vals_a, vals_b);
  SJ_TRY(cub::DeviceRadixSort::SortPairs(temp, sort_bytes, keys, vals, cap, 0, end_bit, stream),
         "radix sort of the intersections");
  b.vals = vals.Current();
  if (vals_out && vals.Current() != vals_out) {  // the pass count left the ids in the other buffer
    SJ_TRY(cudaMemcpyAsync(vals_out, vals.Current(), sizeof(uint32_t) * cap, cudaMemcpyDeviceToDevice, stream),
           "copy the sorted ids into the lists");
    b.vals = vals_out;
  }
  SJ_LAUNCH(ranges_kernel, blocks_for(cap), THREADS, 0, stream)(keys.Current(), b.total, cap, ranges);
  SJ_LAUNCHED("ranges_kernel launch");
  return ffi::Error::Success();
}

template <typename B>
int64_t count_of(const B& buffer) {
  return (int64_t)buffer.element_count();
}

ffi::Error make_dev(F32 means, F32 scales, F32 quats, F32 opac, F32 colors, F32 offset, F32 R, F32 t, F32 K, F32 bg,
                    int64_t width, int64_t height, int64_t capacity, int64_t antialiased, Dev& d) {
  auto md = means.dimensions();
  auto cd = colors.dimensions();
  auto rd = R.dimensions();
  auto od = offset.dimensions();
  if (md.size() != 2 || md[1] != 3 || rd.size() != 3 || rd[1] != 3 || rd[2] != 3)
    return ffi::Error::InvalidArgument("splatjax: means must be [N, 3] and R [C, 3, 3]");
  const int64_t N = md[0], C = rd[0];
  if (N >= (int64_t(1) << 31)) return ffi::Error::InvalidArgument("splatjax: too many Gaussians (>= 2^31)");
  if (C < 1 || C > 65535) return ffi::Error::InvalidArgument("splatjax: 1 to 65535 cameras per launch");
  if (width <= 0 || height <= 0) return ffi::Error::InvalidArgument("splatjax: width and height must be positive");
  if (capacity < 1 || capacity > INT32_MAX) return ffi::Error::InvalidArgument("splatjax: capacity must be in [1, 2^31)");
  if (count_of(scales) != N * 3 || count_of(quats) != N * 4 || count_of(opac) != N ||
      cd.size() != 3 || cd[1] != N || cd[2] != 3 || !(cd[0] == 1 || cd[0] == C) || count_of(t) != C * 3 || count_of(K) != C * 4 ||
      count_of(bg) != C * 3 || od.size() != 3 || od[2] != 2 || !(od[1] == 0 || od[1] == N) ||
      !(od[0] == 1 || od[0] == C))
    return ffi::Error::InvalidArgument("splatjax: inconsistent input shapes");
  d.means = means.typed_data(); d.scales = scales.typed_data(); d.quats = quats.typed_data();
  d.opac = opac.typed_data(); d.colors = colors.typed_data(); d.offset = offset.typed_data();
  d.offset_cams = od[1] == 0 ? 0 : od[0];
  d.color_cams = cd[0];
  d.antialiased = antialiased != 0;
  d.R = R.typed_data(); d.t = t.typed_data(); d.K = K.typed_data();
  d.N = (int)N; d.C = (int)C; d.W = (int)width; d.H = (int)height;
  d.ntx = (d.W + sj::TILE - 1) / sj::TILE;
  d.nty = (d.H + sj::TILE - 1) / sj::TILE;
  if ((int64_t)C * d.ntx * d.nty >= (int64_t(1) << 31))
    return ffi::Error::InvalidArgument("splatjax: too many camera tiles for one launch");
  return ffi::Error::Success();
}

ffi::Error forward_impl(cudaStream_t stream, ffi::ScratchAllocator allocator, F32 means, F32 scales, F32 quats,
                        F32 opac, F32 colors, F32 offset, F32 R, F32 t, F32 K, F32 bg, int64_t width, int64_t height,
                        int64_t capacity, int64_t antialiased, ffi::Result<F32> rgb, ffi::Result<F32> alpha, ffi::Result<F32> tfinal,
                        ffi::Result<S32> ncontrib, ffi::Result<S32> needed, ffi::Result<U32> lists,
                        ffi::Result<S32> ranges) {
  static const char* who = "forward";
  cudaGetLastError();  // clear a stale (non-sticky) error left by earlier host code
  Dev d;
  if (auto e = make_dev(means, scales, quats, opac, colors, offset, R, t, K, bg, width, height, capacity, antialiased,
                        d);
      e.failure())
    return e;
  const int64_t P = (int64_t)d.C * d.H * d.W, tiles_total = (int64_t)d.C * d.ntx * d.nty;
  if (count_of(*rgb) != P * 3 || count_of(*alpha) != P || count_of(*tfinal) != P ||
      count_of(*ncontrib) != P || count_of(*needed) != 1 || count_of(*ranges) != tiles_total * 2)
    return ffi::Error::InvalidArgument("splatjax forward: output shapes do not match");
  Scratch scratch(allocator);
  // the sorted ids go straight into the `lists` result when it holds the capacity (the
  // backward then reuses them); otherwise they stay in scratch
  uint32_t* vals_out = count_of(*lists) >= capacity ? lists->typed_data() : nullptr;
  int2* rng = reinterpret_cast<int2*>(ranges->typed_data());
  Binned b;
  if (auto e = bin(who, stream, scratch, d, capacity, vals_out, rng, needed->typed_data(), b); e.failure()) return e;
  SJ_LAUNCH(forward_kernel, d.C * d.ntx * d.nty, BLOCK, 0, stream)(d, b.gdata, b.vals, rng, b.total, capacity,
                                                                   bg.typed_data(), rgb->typed_data(),
                                                                   alpha->typed_data(), tfinal->typed_data(),
                                                                   ncontrib->typed_data());
  SJ_LAUNCHED("forward_kernel launch");
  return ffi::Error::Success();
}

ffi::Error backward_impl(cudaStream_t stream, ffi::ScratchAllocator allocator, F32 means, F32 scales, F32 quats,
                         F32 opac, F32 colors, F32 offset, F32 R, F32 t, F32 K, F32 bg, F32 tfinal, S32 ncontrib,
                         F32 g_rgb, F32 g_alpha, U32 lists, S32 ranges, S32 fwd_needed, int64_t width, int64_t height,
                         int64_t gaussian_grads, int64_t color_grads, int64_t capacity, int64_t reuse,
                         int64_t antialiased, ffi::Result<F32> g_means,
                         ffi::Result<F32> g_scales, ffi::Result<F32> g_quats, ffi::Result<F32> g_opac,
                         ffi::Result<F32> g_colors, ffi::Result<F32> g_offset, ffi::Result<F32> g_R,
                         ffi::Result<F32> g_t, ffi::Result<F32> g_K, ffi::Result<S32> needed) {
  static const char* who = "backward";
  cudaGetLastError();
  Dev d;
  if (auto e = make_dev(means, scales, quats, opac, colors, offset, R, t, K, bg, width, height, capacity, antialiased,
                        d);
      e.failure())
    return e;
  const int64_t N = d.N, C = d.C, CN = C * N, P = C * d.H * d.W, tiles_total = C * d.ntx * d.nty;
  if (count_of(tfinal) != P || count_of(ncontrib) != P || count_of(g_rgb) != P * 3 ||
      count_of(g_alpha) != P || count_of(fwd_needed) != 1 || count_of(*needed) != 1 ||
      count_of(*g_means) != N * 3 || count_of(*g_scales) != N * 3 || count_of(*g_quats) != N * 4 ||
      count_of(*g_opac) != N || count_of(*g_colors) != count_of(colors) ||
      count_of(*g_offset) != count_of(offset) || count_of(*g_R) != C * 9 ||
      count_of(*g_t) != C * 3 || count_of(*g_K) != C * 4)
    return ffi::Error::InvalidArgument("splatjax backward: input or output shapes do not match");
  if (reuse && (count_of(lists) < capacity || count_of(ranges) != tiles_total * 2))
    return ffi::Error::InvalidArgument("splatjax backward: the forward's lists do not match the capacity");
  Scratch scratch(allocator);
  Binned b;
  const int2* rng;
  if (reuse) {  // the forward's lists and ranges: only the (cheap) projection is redone
    b.gdata = scratch.take<float>(CN * sj::GSTRIDE);
    b.rect = scratch.take<int4>(CN);
    b.total = scratch.take<int64_t>(1);
    b.vals = lists.typed_data();
    if (auto e = scratch.status(who); e.failure()) return e;
    if (CN > 0) {
      SJ_LAUNCH(project_kernel, blocks_for(CN), THREADS, 0, stream)(d, b.gdata, nullptr, b.rect, nullptr);
      SJ_LAUNCHED("project_kernel launch");
    }
    SJ_LAUNCH(total_from_needed_kernel, 1, 1, 0, stream)(fwd_needed.typed_data(), b.total, needed->typed_data());
    SJ_LAUNCHED("total_from_needed_kernel launch");
    rng = reinterpret_cast<const int2*>(ranges.typed_data());
  } else {  // bin again (deterministic: the same lists as the forward's)
    int2* own = scratch.take<int2>(tiles_total);
    if (auto e = scratch.status(who); e.failure()) return e;
    if (auto e = bin(who, stream, scratch, d, capacity, nullptr, own, needed->typed_data(), b); e.failure()) return e;
    rng = own;
  }
  float* sgrad = scratch.take<float>(CN * sj::GGRAD);
  double* pose = scratch.take<double>(C * kPose);
  if (auto e = scratch.status(who); e.failure()) return e;
  SJ_TRY(cudaMemsetAsync(sgrad, 0, sizeof(float) * CN * sj::GGRAD, stream), "clear the screen-space gradients");
  SJ_TRY(cudaMemsetAsync(pose, 0, sizeof(double) * C * kPose, stream), "clear the pose accumulators");
  NanTargets nan{};
  int64_t most = 0, k = 0;
  for (auto* r : {&g_means, &g_scales, &g_quats, &g_opac, &g_colors, &g_offset}) {
    const int64_t n = count_of(**r);
    SJ_TRY(cudaMemsetAsync((*r)->typed_data(), 0, sizeof(float) * n, stream), "clear the gradient outputs");
    nan.p[k] = (*r)->typed_data();
    nan.n[k++] = n;
    most = std::max(most, n);
  }
  SJ_LAUNCH(backward_kernel, C * d.ntx * d.nty, BLOCK, 0, stream)(d, b.gdata, b.vals, rng, b.total, capacity,
                                                                  bg.typed_data(), tfinal.typed_data(),
                                                                  ncontrib.typed_data(), g_rgb.typed_data(),
                                                                  g_alpha.typed_data(), sgrad);
  SJ_LAUNCHED("backward_kernel launch");
  if (N > 0) {
    SJ_LAUNCH(project_bwd_kernel, dim3((unsigned)blocks_for(N), (unsigned)C), THREADS, 0, stream)(
        d, sgrad, b.rect, b.total, capacity, gaussian_grads != 0, color_grads != 0, g_means->typed_data(), g_scales->typed_data(),
        g_quats->typed_data(), g_opac->typed_data(), g_colors->typed_data(), g_offset->typed_data(), pose);
    SJ_LAUNCHED("project_bwd_kernel launch");
  }
  SJ_LAUNCH(pose_out_kernel, blocks_for(C * kPose), THREADS, 0, stream)(pose, (int)C, b.total, capacity,
                                                                        g_R->typed_data(), g_t->typed_data(),
                                                                        g_K->typed_data());
  SJ_LAUNCHED("pose_out_kernel launch");
  if (most > 0) {
    SJ_LAUNCH(overflow_nan_kernel, blocks_for(most), THREADS, 0, stream)(nan, b.total, capacity);
    SJ_LAUNCHED("overflow_nan_kernel launch");
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(SplatjaxRenderFwdCuda, forward_impl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Ctx<ffi::ScratchAllocator>()
                                  .Arg<F32>()  // means [N,3]
                                  .Arg<F32>()  // scales [N,3]
                                  .Arg<F32>()  // quats [N,4]
                                  .Arg<F32>()  // opacities [N]
                                  .Arg<F32>()  // colors [1|C,N,3]
                                  .Arg<F32>()  // means2d offset [1|C, 0|N, 2]
                                  .Arg<F32>()  // R [C,3,3]
                                  .Arg<F32>()  // t [C,3]
                                  .Arg<F32>()  // intrinsics [C,4]
                                  .Arg<F32>()  // background [C,3]
                                  .Attr<int64_t>("width")
                                  .Attr<int64_t>("height")
                                  .Attr<int64_t>("capacity")  // intersections of all cameras together
                                  .Attr<int64_t>("antialiased")  // 1: opacity times the compensation
                                  .Ret<F32>()   // rgb [C,H,W,3]
                                  .Ret<F32>()   // alpha [C,H,W]
                                  .Ret<F32>()   // final transmittance [C,H,W]
                                  .Ret<S32>()   // entries processed per pixel [C,H,W]
                                  .Ret<S32>()   // intersections needed [1] (saturated to int32)
                                  .Ret<U32>()   // sorted Gaussian ids [L] (filled when L >= capacity)
                                  .Ret<S32>());  // per-tile list ranges [C*tiles, 2]

XLA_FFI_DEFINE_HANDLER_SYMBOL(SplatjaxRenderBwdCuda, backward_impl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Ctx<ffi::ScratchAllocator>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()   // final transmittance
                                  .Arg<S32>()   // entries processed
                                  .Arg<F32>()   // dL/drgb
                                  .Arg<F32>()   // dL/dalpha
                                  .Arg<U32>()   // the forward's sorted ids (used when reuse = 1)
                                  .Arg<S32>()   // the forward's tile ranges (used when reuse = 1)
                                  .Arg<S32>()   // the forward's intersection count [1] (used when reuse = 1)
                                  .Attr<int64_t>("width")
                                  .Attr<int64_t>("height")
                                  .Attr<int64_t>("gaussian_grads")  // means, scales, quats, opacities
                                  .Attr<int64_t>("color_grads")
                                  .Attr<int64_t>("capacity")
                                  .Attr<int64_t>("reuse")  // 1: the forward's lists; 0: bin again at `capacity`
                                  .Attr<int64_t>("antialiased")
                                  .Ret<F32>()  // means
                                  .Ret<F32>()  // scales
                                  .Ret<F32>()  // quats
                                  .Ret<F32>()  // opacities
                                  .Ret<F32>()  // colors
                                  .Ret<F32>()  // means2d offset
                                  .Ret<F32>()  // R
                                  .Ret<F32>()  // t
                                  .Ret<F32>()  // intrinsics
                                  .Ret<S32>());  // intersections needed [1]
