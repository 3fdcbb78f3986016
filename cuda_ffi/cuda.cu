// CUDA driver of the splatjax tile rasterizer (math in core.h), exposed as XLA FFI handlers.
//
// All C cameras are processed in one set of launches on XLA's stream:
//   project (C*N threads) -> inclusive scan of per-Gaussian tile counts (CUB) ->
//   emit (camera*tile, depth) 64-bit keys -> CUB radix sort over the whole static capacity
//   (unused entries hold all-ones keys and sort last) -> per-tile ranges -> blend
//   (one 16x16 block per camera tile, Gaussians staged in shared memory).
// The backward redoes the binning (deterministic: the stable radix sort over keys emitted
// in Gaussian order gives the forward's lists), walks each pixel back to front from its last
// contributor and accumulates per-Gaussian screen-space gradients with atomics, then chains
// them through the projection. Scratch memory comes from XLA's scratch allocator; nothing is
// allocated with cudaMalloc and the host never waits on the device. When the needed
// intersection count exceeds the capacity nothing is rendered (NaN outputs) and the count is
// returned, so the caller re-runs at a larger capacity.
#include <cuda_runtime.h>

#include <cstdint>
#include <cub/cub.cuh>

#include "core.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using F32 = ffi::Buffer<ffi::F32>;
constexpr int BLOCK = sj::TILE * sj::TILE;

struct Dev {
  const float *means, *scales, *quats, *opac, *colors, *offset, *R, *t, *K;
  int64_t offset_cams;  // 0: none, 1: shared, C: per camera
  int N, C, W, H, ntx, nty;
};

__device__ sj::Camera camera_of(const Dev& d, int c) {
  sj::Camera cam;
  for (int k = 0; k < 9; ++k) cam.R[k] = d.R[9 * c + k];
  for (int k = 0; k < 3; ++k) cam.t[k] = d.t[3 * c + k];
  cam.fx = d.K[4 * c]; cam.fy = d.K[4 * c + 1]; cam.cx = d.K[4 * c + 2]; cam.cy = d.K[4 * c + 3];
  cam.width = d.W; cam.height = d.H;
  return cam;
}

__device__ const float* offset_of(const Dev& d, int c, int i) {
  if (d.offset_cams == 0) return nullptr;
  return d.offset + ((d.offset_cams == 1 ? 0 : (int64_t)c * d.N) + i) * 2;
}

__global__ void project_kernel(Dev d, float* gdata, float* depth, int4* rect, int32_t* counts) {
  const int64_t gid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (gid >= (int64_t)d.C * d.N) return;
  const int c = (int)(gid / d.N), i = (int)(gid % d.N);
  const sj::Camera cam = camera_of(d, c);
  sj::Projected p;
  sj::project_gaussian(d.means + 3 * i, d.scales + 3 * i, d.quats + 4 * i, d.opac[i], offset_of(d, c, i), cam, p);
  float* g = gdata + gid * sj::GSTRIDE;
  g[0] = p.mx; g[1] = p.my; g[2] = p.A; g[3] = p.B; g[4] = p.C; g[5] = d.opac[i];
  g[6] = d.colors[3 * i]; g[7] = d.colors[3 * i + 1]; g[8] = d.colors[3 * i + 2];
  depth[gid] = p.depth;
  rect[gid] = make_int4(p.tx0, p.ty0, p.tx1, p.ty1);
  counts[gid] = sj::tile_count(p);
}

__global__ void emit_kernel(Dev d, const float* depth, const int4* rect, const int32_t* ends, int64_t cap,
                            uint64_t* keys, uint32_t* vals) {
  const int64_t gid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const int64_t CN = (int64_t)d.C * d.N;
  if (gid >= CN) return;
  if ((int64_t)(uint32_t)ends[CN - 1] > cap) return;  // overflow: nothing is emitted
  const int4 r = rect[gid];
  int64_t pos = gid == 0 ? 0 : ends[gid - 1];
  const int c = (int)(gid / d.N);
  const int ntiles = d.ntx * d.nty;
  union { float f; uint32_t u; } z;
  z.f = depth[gid];
  for (int ty = r.y; ty < r.w; ++ty)
    for (int tx = r.x; tx < r.z; ++tx) {
      const uint64_t tile = (uint64_t)c * ntiles + ty * d.ntx + tx;
      keys[pos] = (tile << 32) | z.u;
      vals[pos] = (uint32_t)(gid % d.N);
      ++pos;
    }
}

__global__ void ranges_kernel(const uint64_t* keys, const int32_t* ends, int64_t CN, int64_t cap, int2* ranges) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const int64_t total = (uint32_t)ends[CN - 1];
  if (total > cap || i >= total) return;
  const uint32_t tile = (uint32_t)(keys[i] >> 32);
  if (i == 0 || (uint32_t)(keys[i - 1] >> 32) != tile) ranges[tile].x = (int)i;
  if (i == total - 1 || (uint32_t)(keys[i + 1] >> 32) != tile) ranges[tile].y = (int)(i + 1);
}

__global__ void needed_kernel(const int32_t* ends, int64_t CN, int32_t* needed) { needed[0] = ends[CN - 1]; }

__global__ void forward_kernel(Dev d, const float* gdata, const uint32_t* vals, const int2* ranges,
                               const int32_t* ends, int64_t cap, const float* bg, float* rgb, float* alpha,
                               float* tfinal, int32_t* ncontrib) {
  const int ntiles = d.ntx * d.nty;
  const int tile_g = blockIdx.x, c = tile_g / ntiles, tile = tile_g % ntiles;
  const int x = (tile % d.ntx) * sj::TILE + threadIdx.x % sj::TILE;
  const int y = (tile / d.ntx) * sj::TILE + threadIdx.x / sj::TILE;
  const bool inside = x < d.W && y < d.H;
  const int64_t pix = ((int64_t)c * d.H + y) * d.W + x;
  const bool overflow = (int64_t)(uint32_t)ends[(int64_t)d.C * d.N - 1] > cap;
  if (overflow) {
    if (inside) {
      const float nan = __int_as_float(0x7fc00000);
      for (int k = 0; k < 3; ++k) rgb[pix * 3 + k] = nan;
      alpha[pix] = nan; tfinal[pix] = nan; ncontrib[pix] = 0;
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
                                const int32_t* ends, int64_t cap, const float* bg, const float* tfinal,
                                const int32_t* ncontrib, const float* g_rgb, const float* g_alpha, float* sgrad) {
  const int ntiles = d.ntx * d.nty;
  const int tile_g = blockIdx.x, c = tile_g / ntiles, tile = tile_g % ntiles;
  if ((int64_t)(uint32_t)ends[(int64_t)d.C * d.N - 1] > cap) return;
  const int x = (tile % d.ntx) * sj::TILE + threadIdx.x % sj::TILE;
  const int y = (tile / d.ntx) * sj::TILE + threadIdx.x / sj::TILE;
  const bool inside = x < d.W && y < d.H;
  const int64_t pix = ((int64_t)c * d.H + y) * d.W + x;
  const int2 range = ranges[tile_g];
  const int n = range.y - range.x;
  const int last = inside ? ncontrib[pix] : 0;
  __shared__ float sh[BLOCK * sj::GSTRIDE];
  __shared__ int64_t sid[BLOCK];
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
    __syncthreads();
    const int j = b0 + threadIdx.x;
    if (j < b1) {
      const int64_t id = (int64_t)c * d.N + vals[range.x + j];
      sid[threadIdx.x] = id;
      for (int k = 0; k < sj::GSTRIDE; ++k) sh[threadIdx.x * sj::GSTRIDE + k] = gdata[id * sj::GSTRIDE + k];
    }
    __syncthreads();
    for (int k = b1 - b0 - 1; k >= 0; --k) {
      const int e = b0 + k;
      if (!inside || e >= last) continue;
      float out[sj::GGRAD];
      for (int q = 0; q < sj::GGRAD; ++q) out[q] = 0.f;
      if (sj::bwd_step(st, &sh[k * sj::GSTRIDE], px, py, out)) {
        float* dst = sgrad + sid[k] * sj::GGRAD;
        for (int q = 0; q < sj::GGRAD; ++q) atomicAdd(dst + q, out[q]);
      }
    }
  }
}

__global__ void project_bwd_kernel(Dev d, const float* sgrad, const int4* rect, const int32_t* ends, int64_t cap,
                                   bool gaussian_grads, float* gm, float* gsc, float* gq, float* go, float* gc,
                                   float* goff, float* gR, float* gt, float* gK) {
  const int64_t gid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const int64_t CN = (int64_t)d.C * d.N;
  if (gid >= CN || (int64_t)(uint32_t)ends[CN - 1] > cap) return;
  const int4 r = rect[gid];
  if (r.z <= r.x || r.w <= r.y) return;
  const int c = (int)(gid / d.N), i = (int)(gid % d.N);
  const float* g = sgrad + gid * sj::GGRAD;
  if (d.offset_cams != 0) {
    float* o = goff + ((d.offset_cams == 1 ? 0 : (int64_t)c * d.N) + i) * 2;
    atomicAdd(o, g[0]);
    atomicAdd(o + 1, g[1]);
  }
  float lm[3] = {0.f, 0.f, 0.f}, ls[3] = {0.f, 0.f, 0.f}, lq[4] = {0.f, 0.f, 0.f, 0.f};
  float lR[9] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, lt[3] = {0.f, 0.f, 0.f}, lK[4] = {0.f, 0.f, 0.f, 0.f};
  const sj::Camera cam = camera_of(d, c);
  sj::project_bwd<float>(d.means + 3 * i, d.scales + 3 * i, d.quats + 4 * i, cam, g, gaussian_grads, lm, ls, lq, lR,
                         lt, lK);
  for (int k = 0; k < 9; ++k) atomicAdd(gR + 9 * c + k, lR[k]);
  for (int k = 0; k < 4; ++k) atomicAdd(gK + 4 * c + k, lK[k]);
  for (int k = 0; k < 3; ++k) atomicAdd(gt + 3 * c + k, lt[k]);
  if (!gaussian_grads) return;
  atomicAdd(go + i, g[5]);
  for (int k = 0; k < 3; ++k) {
    atomicAdd(gc + 3 * i + k, g[6 + k]);
    atomicAdd(gm + 3 * i + k, lm[k]);
    atomicAdd(gsc + 3 * i + k, ls[k]);
  }
  for (int k = 0; k < 4; ++k) atomicAdd(gq + 4 * i + k, lq[k]);
}

__global__ void nan_kernel(const int32_t* ends, int64_t CN, int64_t cap, float* a, int64_t n) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n && (int64_t)(uint32_t)ends[CN - 1] > cap) a[i] = __int_as_float(0x7fc00000);
}

int blocks(int64_t n, int b = 256) { return (int)((n + b - 1) / b); }

int key_bits(int64_t tiles_total) {
  int bits = 32;
  while ((int64_t(1) << (bits - 32)) < tiles_total + 1) ++bits;  // +1: all-ones padding sorts last
  return bits;
}

// Scratch layout shared by the forward and the backward.
struct Binning {
  float* gdata;
  float* depth;
  int4* rect;
  int32_t* counts;
  int32_t* ends;
  uint64_t *keys_in, *keys_out;
  uint32_t *vals_in, *vals_out;
  int2* ranges;
};

template <typename T>
T* take(ffi::ScratchAllocator& scratch, int64_t count, bool& ok) {
  auto p = scratch.Allocate(sizeof(T) * (size_t)(count > 0 ? count : 1), 256);
  if (!p.has_value()) { ok = false; return nullptr; }
  return static_cast<T*>(p.value());
}

ffi::Error bin(cudaStream_t stream, ffi::ScratchAllocator& scratch, const Dev& d, int64_t cap, Binning& b) {
  const int64_t CN = (int64_t)d.C * d.N, tiles_total = (int64_t)d.C * d.ntx * d.nty;
  if (CN >= (int64_t(1) << 31) || tiles_total >= (int64_t(1) << 31))
    return ffi::Error::InvalidArgument("too many Gaussians x cameras for one launch");
  bool ok = true;
  b.gdata = take<float>(scratch, CN * sj::GSTRIDE, ok);
  b.depth = take<float>(scratch, CN, ok);
  b.rect = take<int4>(scratch, CN, ok);
  b.counts = take<int32_t>(scratch, CN, ok);
  b.ends = take<int32_t>(scratch, CN, ok);
  b.keys_in = take<uint64_t>(scratch, cap, ok);
  b.keys_out = take<uint64_t>(scratch, cap, ok);
  b.vals_in = take<uint32_t>(scratch, cap, ok);
  b.vals_out = take<uint32_t>(scratch, cap, ok);
  b.ranges = take<int2>(scratch, tiles_total, ok);
  size_t scan_bytes = 0, sort_bytes = 0;
  cub::DeviceScan::InclusiveSum(nullptr, scan_bytes, b.counts, b.ends, (int)CN, stream);
  const int end_bit = key_bits(tiles_total);
  cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, b.keys_in, b.keys_out, b.vals_in, b.vals_out, (int64_t)cap, 0,
                                  end_bit, stream);
  void* temp = take<uint8_t>(scratch, (int64_t)std::max(scan_bytes, sort_bytes), ok);
  if (!ok) return ffi::Error(ffi::ErrorCode::kResourceExhausted, "splatjax: scratch allocation failed");
  project_kernel<<<blocks(CN), 256, 0, stream>>>(d, b.gdata, b.depth, b.rect, b.counts);
  cub::DeviceScan::InclusiveSum(temp, scan_bytes, b.counts, b.ends, (int)CN, stream);
  cudaMemsetAsync(b.keys_in, 0xff, sizeof(uint64_t) * cap, stream);
  cudaMemsetAsync(b.vals_in, 0, sizeof(uint32_t) * cap, stream);
  cudaMemsetAsync(b.ranges, 0, sizeof(int2) * tiles_total, stream);
  emit_kernel<<<blocks(CN), 256, 0, stream>>>(d, b.depth, b.rect, b.ends, cap, b.keys_in, b.vals_in);
  cub::DeviceRadixSort::SortPairs(temp, sort_bytes, b.keys_in, b.keys_out, b.vals_in, b.vals_out, (int64_t)cap, 0,
                                  end_bit, stream);
  ranges_kernel<<<blocks(cap), 256, 0, stream>>>(b.keys_out, b.ends, CN, cap, b.ranges);
  return ffi::Error::Success();
}

ffi::Error make_dev(F32 means, F32 scales, F32 quats, F32 opac, F32 colors, F32 offset, F32 R, F32 t, F32 K, F32 bg,
                    int64_t width, int64_t height, Dev& d) {
  auto md = means.dimensions();
  auto rd = R.dimensions();
  auto od = offset.dimensions();
  if (md.size() != 2 || md[1] != 3 || rd.size() != 3) return ffi::Error::InvalidArgument("means [N,3], R [C,3,3]");
  d.N = (int)md[0];
  d.C = (int)rd[0];
  if (scales.element_count() != (int64_t)d.N * 3 || quats.element_count() != (int64_t)d.N * 4 ||
      opac.element_count() != d.N || colors.element_count() != (int64_t)d.N * 3 || t.element_count() != d.C * 3 ||
      K.element_count() != d.C * 4 || bg.element_count() != d.C * 3 || od.size() != 3 ||
      !(od[1] == 0 || od[1] == d.N) || !(od[0] == 1 || od[0] == d.C))
    return ffi::Error::InvalidArgument("inconsistent input shapes");
  d.means = means.typed_data(); d.scales = scales.typed_data(); d.quats = quats.typed_data();
  d.opac = opac.typed_data(); d.colors = colors.typed_data(); d.offset = offset.typed_data();
  d.offset_cams = od[1] == 0 ? 0 : od[0];
  d.R = R.typed_data(); d.t = t.typed_data(); d.K = K.typed_data();
  d.W = (int)width; d.H = (int)height;
  d.ntx = (d.W + sj::TILE - 1) / sj::TILE;
  d.nty = (d.H + sj::TILE - 1) / sj::TILE;
  return ffi::Error::Success();
}

ffi::Error forward_impl(cudaStream_t stream, ffi::ScratchAllocator scratch, F32 means, F32 scales, F32 quats, F32 opac,
                        F32 colors, F32 offset, F32 R, F32 t, F32 K, F32 bg, int64_t width, int64_t height,
                        int64_t capacity, ffi::Result<F32> rgb, ffi::Result<F32> alpha, ffi::Result<F32> tfinal,
                        ffi::Result<ffi::Buffer<ffi::S32>> ncontrib, ffi::Result<ffi::Buffer<ffi::S32>> needed) {
  Dev d;
  if (auto e = make_dev(means, scales, quats, opac, colors, offset, R, t, K, bg, width, height, d); e.failure())
    return e;
  Binning b;
  if (auto e = bin(stream, scratch, d, capacity, b); e.failure()) return e;
  const int64_t CN = (int64_t)d.C * d.N;
  needed_kernel<<<1, 1, 0, stream>>>(b.ends, CN, needed->typed_data());
  forward_kernel<<<d.C * d.ntx * d.nty, BLOCK, 0, stream>>>(d, b.gdata, b.vals_out, b.ranges, b.ends, capacity,
                                                             bg.typed_data(), rgb->typed_data(), alpha->typed_data(),
                                                             tfinal->typed_data(), ncontrib->typed_data());
  if (cudaError_t err = cudaGetLastError(); err != cudaSuccess)
    return ffi::Error::Internal(std::string("splatjax forward: ") + cudaGetErrorString(err));
  return ffi::Error::Success();
}

ffi::Error backward_impl(cudaStream_t stream, ffi::ScratchAllocator scratch, F32 means, F32 scales, F32 quats,
                         F32 opac, F32 colors, F32 offset, F32 R, F32 t, F32 K, F32 bg, F32 tfinal,
                         ffi::Buffer<ffi::S32> ncontrib, F32 g_rgb, F32 g_alpha, int64_t width, int64_t height,
                         int64_t gaussian_grads, int64_t capacity, ffi::Result<F32> g_means,
                         ffi::Result<F32> g_scales, ffi::Result<F32> g_quats, ffi::Result<F32> g_opac,
                         ffi::Result<F32> g_colors, ffi::Result<F32> g_offset, ffi::Result<F32> g_R,
                         ffi::Result<F32> g_t, ffi::Result<F32> g_K, ffi::Result<ffi::Buffer<ffi::S32>> needed) {
  Dev d;
  if (auto e = make_dev(means, scales, quats, opac, colors, offset, R, t, K, bg, width, height, d); e.failure())
    return e;
  Binning b;
  if (auto e = bin(stream, scratch, d, capacity, b); e.failure()) return e;
  const int64_t CN = (int64_t)d.C * d.N;
  bool ok = true;
  float* sgrad = take<float>(scratch, CN * sj::GGRAD, ok);
  if (!ok) return ffi::Error(ffi::ErrorCode::kResourceExhausted, "splatjax: scratch allocation failed");
  cudaMemsetAsync(sgrad, 0, sizeof(float) * CN * sj::GGRAD, stream);
  for (auto* r : {&g_means, &g_scales, &g_quats, &g_opac, &g_colors, &g_offset, &g_R, &g_t, &g_K})
    cudaMemsetAsync((*r)->typed_data(), 0, sizeof(float) * (*r)->element_count(), stream);
  needed_kernel<<<1, 1, 0, stream>>>(b.ends, CN, needed->typed_data());
  backward_kernel<<<d.C * d.ntx * d.nty, BLOCK, 0, stream>>>(d, b.gdata, b.vals_out, b.ranges, b.ends, capacity,
                                                              bg.typed_data(), tfinal.typed_data(),
                                                              ncontrib.typed_data(), g_rgb.typed_data(),
                                                              g_alpha.typed_data(), sgrad);
  project_bwd_kernel<<<blocks(CN), 256, 0, stream>>>(d, sgrad, b.rect, b.ends, capacity, gaussian_grads != 0,
                                                     g_means->typed_data(), g_scales->typed_data(),
                                                     g_quats->typed_data(), g_opac->typed_data(),
                                                     g_colors->typed_data(), g_offset->typed_data(),
                                                     g_R->typed_data(), g_t->typed_data(), g_K->typed_data());
  nan_kernel<<<blocks((int64_t)d.N * 3), 256, 0, stream>>>(b.ends, CN, capacity, g_means->typed_data(),
                                                           (int64_t)d.N * 3);
  if (cudaError_t err = cudaGetLastError(); err != cudaSuccess)
    return ffi::Error::Internal(std::string("splatjax backward: ") + cudaGetErrorString(err));
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(SplatjaxRenderFwdCuda, forward_impl,
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
                                  .Attr<int64_t>("width")
                                  .Attr<int64_t>("height")
                                  .Attr<int64_t>("capacity")
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>());

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
                                  .Arg<F32>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Attr<int64_t>("width")
                                  .Attr<int64_t>("height")
                                  .Attr<int64_t>("gaussian_grads")
                                  .Attr<int64_t>("capacity")
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<ffi::Buffer<ffi::S32>>());
