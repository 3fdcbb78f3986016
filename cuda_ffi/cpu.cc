// CPU driver of the splatjax tile rasterizer (math in core.h), exposed as XLA FFI handlers.
//
// Per camera: project every Gaussian (threaded), counting-sort the (tile, Gaussian)
// intersections by tile into the XLA-provided workspace of static capacity, sort each tile
// by (depth, index), then blend tile by tile (threaded over tiles). The backward redoes the
// binning (deterministic, so the lists equal the forward's) and walks every pixel back to
// front from its last contributor; per-thread accumulators are reduced without races.
// Cameras are processed one after the other, so the workspace needs the largest
// per-camera intersection count; that count is returned as `needed`.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

#include "core.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// ----------------------------------------------------------------------------- threads
// A persistent pool: parallel_for(n, fn) runs fn(task, worker) for task in [0, n) on all
// hardware threads (the caller included) and returns when every task is done.
class Pool {
 public:
  Pool() {
    unsigned hw = std::thread::hardware_concurrency();
    size_ = hw == 0 ? 1 : (int)hw;
    for (int w = 1; w < size_; ++w) workers_.emplace_back([this, w] { loop(w); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
      ++generation_;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int size() const { return size_; }

  void parallel_for(int64_t n, const std::function<void(int64_t, int)>& fn) {
    if (n <= 0) return;
    std::lock_guard<std::mutex> call_lock(call_m_);  // one job at a time
    if (size_ == 1 || n == 1) {
      for (int64_t i = 0; i < n; ++i) fn(i, 0);
      return;
    }
    {
      std::lock_guard<std::mutex> lk(m_);
      job_ = &fn;
      n_ = n;
      next_.store(0);
      active_ = size_ - 1;
      ++generation_;
    }
    cv_.notify_all();
    run(0);
    std::unique_lock<std::mutex> lk(m_);
    done_cv_.wait(lk, [this] { return active_ == 0; });
    job_ = nullptr;
  }

 private:
  void run(int w) {
    for (;;) {
      int64_t i = next_.fetch_add(1);
      if (i >= n_) break;
      (*job_)(i, w);
    }
  }
  void loop(int w) {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return generation_ != seen; });
        seen = generation_;
        if (stop_) return;
      }
      run(w);
      {
        std::lock_guard<std::mutex> lk(m_);
        if (--active_ == 0) done_cv_.notify_one();
      }
    }
  }

  int size_ = 1;
  std::vector<std::thread> workers_;
  std::mutex m_, call_m_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int64_t, int)>* job_ = nullptr;
  int64_t n_ = 0;
  std::atomic<int64_t> next_{0};
  int active_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

Pool& pool() {
  static Pool p;
  return p;
}

// Run fn(begin, end, worker) over [0, n) in chunks of `chunk`.
void parallel_range(int64_t n, int64_t chunk, const std::function<void(int64_t, int64_t, int)>& fn) {
  const int64_t tasks = (n + chunk - 1) / chunk;
  pool().parallel_for(tasks, [&](int64_t task, int w) { fn(task * chunk, std::min(n, (task + 1) * chunk), w); });
}

constexpr int LS = sj::GSTRIDE + 1;  // tile-local layout: GSTRIDE fields + exp-skip threshold

// ----------------------------------------------------------------------------- inputs
struct Scene {
  int64_t N = 0, C = 0;
  const float *means, *scales, *quats, *opac, *colors;
  const float* offset = nullptr;  // [Co, N, 2] or null
  int64_t offset_cams = 0;         // Co: 1 (shared) or C
  const float *R, *t, *K, *bg;
  int width = 0, height = 0;

  sj::Camera camera(int64_t c) const {
    sj::Camera cam;
    for (int k = 0; k < 9; ++k) cam.R[k] = R[9 * c + k];
    for (int k = 0; k < 3; ++k) cam.t[k] = t[3 * c + k];
    cam.fx = K[4 * c]; cam.fy = K[4 * c + 1]; cam.cx = K[4 * c + 2]; cam.cy = K[4 * c + 3];
    cam.width = width; cam.height = height;
    return cam;
  }
  const float* offset_of(int64_t c) const {
    if (!offset) return nullptr;
    return offset + (offset_cams == 1 ? 0 : c * N * 2);
  }
};

using F32 = ffi::Buffer<ffi::F32>;

ffi::Error make_scene(F32 means, F32 scales, F32 quats, F32 opac, F32 colors, F32 offset, F32 R, F32 t, F32 K, F32 bg,
                      int64_t width, int64_t height, Scene& s) {
  auto dims = means.dimensions();
  if (dims.size() != 2 || dims[1] != 3) return ffi::Error::InvalidArgument("means must be [N, 3]");
  s.N = dims[0];
  if (s.N >= (int64_t(1) << 31)) return ffi::Error::InvalidArgument("too many Gaussians (>= 2^31)");
  auto rd = R.dimensions();
  if (rd.size() != 3 || rd[1] != 3 || rd[2] != 3) return ffi::Error::InvalidArgument("R must be [C, 3, 3]");
  s.C = rd[0];
  if (scales.element_count() != s.N * 3 || quats.element_count() != s.N * 4 || opac.element_count() != s.N ||
      colors.element_count() != s.N * 3)
    return ffi::Error::InvalidArgument("Gaussian arrays must be scales [N,3], quats [N,4], opacities [N], colors [N,3]");
  if (t.element_count() != s.C * 3 || K.element_count() != s.C * 4 || bg.element_count() != s.C * 3)
    return ffi::Error::InvalidArgument("camera arrays must be t [C,3], intrinsics [C,4], background [C,3]");
  auto od = offset.dimensions();
  if (od.size() != 3 || od[2] != 2 || !(od[1] == 0 || od[1] == s.N) || !(od[0] == 1 || od[0] == s.C))
    return ffi::Error::InvalidArgument("means2d_offset must be [1 or C, 0 or N, 2]");
  if (width <= 0 || height <= 0) return ffi::Error::InvalidArgument("width and height must be positive");
  s.means = means.typed_data(); s.scales = scales.typed_data(); s.quats = quats.typed_data();
  s.opac = opac.typed_data(); s.colors = colors.typed_data();
  s.offset = od[1] == 0 ? nullptr : offset.typed_data();
  s.offset_cams = od[0];
  s.R = R.typed_data(); s.t = t.typed_data(); s.K = K.typed_data(); s.bg = bg.typed_data();
  s.width = (int)width; s.height = (int)height;
  return ffi::Error::Success();
}

// ----------------------------------------------------------------------------- binning
struct Binned {
  std::vector<sj::Projected> proj;
  std::vector<float> gdata;          // N * LS
  std::vector<int64_t> tile_start;   // ntiles + 1
  int64_t total = 0;
};

// Project camera c and build its depth-sorted per-tile lists in ws (capacity cap). Returns
// the number of intersections; the lists are only built when it fits.
int64_t bin_camera(const Scene& s, int64_t c, uint64_t* ws, int64_t cap, Binned& b) {
  const sj::Camera cam = s.camera(c);
  const float* off = s.offset_of(c);
  const int64_t N = s.N;
  const int ntx = sj::tiles_x(cam), nty = sj::tiles_y(cam), ntiles = ntx * nty;
  b.proj.resize(N);
  b.gdata.resize(N * LS);
  parallel_range(N, 4096, [&](int64_t i0, int64_t i1, int) {
    for (int64_t i = i0; i < i1; ++i) {
      sj::Projected& p = b.proj[i];
      sj::project_gaussian(s.means + 3 * i, s.scales + 3 * i, s.quats + 4 * i, s.opac[i], off ? off + 2 * i : nullptr,
                           cam, p);
      float* g = &b.gdata[i * LS];
      g[0] = p.mx; g[1] = p.my; g[2] = p.A; g[3] = p.B; g[4] = p.C; g[5] = s.opac[i];
      g[6] = s.colors[3 * i]; g[7] = s.colors[3 * i + 1]; g[8] = s.colors[3 * i + 2];
      g[9] = sj::tile_count(p) > 0 ? sj::skip_threshold(s.opac[i]) : 0.f;
    }
  });
  // counting sort by tile (Gaussians visited in index order)
  b.tile_start.assign(ntiles + 1, 0);
  int64_t* cnt = b.tile_start.data() + 1;
  for (int64_t i = 0; i < N; ++i) {
    const sj::Projected& p = b.proj[i];
    for (int ty = p.ty0; ty < p.ty1; ++ty)
      for (int tx = p.tx0; tx < p.tx1; ++tx) ++cnt[ty * ntx + tx];
  }
  for (int k = 0; k < ntiles; ++k) b.tile_start[k + 1] += b.tile_start[k];
  b.total = b.tile_start[ntiles];
  if (b.total > cap) return b.total;
  std::vector<int64_t> cursor(b.tile_start.begin(), b.tile_start.end() - 1);
  for (int64_t i = 0; i < N; ++i) {
    const sj::Projected& p = b.proj[i];
    if (p.tx1 <= p.tx0) continue;
    const uint64_t key = sj::depth_key(p.depth, (uint32_t)i);
    for (int ty = p.ty0; ty < p.ty1; ++ty)
      for (int tx = p.tx0; tx < p.tx1; ++tx) ws[cursor[ty * ntx + tx]++] = key;
  }
  pool().parallel_for(ntiles, [&](int64_t k, int) { std::sort(ws + b.tile_start[k], ws + b.tile_start[k + 1]); });
  return b.total;
}

// Gather the tile's Gaussians into a contiguous buffer.
void gather_tile(const Binned& b, const uint64_t* ws, int64_t k, std::vector<float>& local) {
  const int64_t s0 = b.tile_start[k], n = b.tile_start[k + 1] - s0;
  local.resize(n * LS);
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t id = (uint32_t)(ws[s0 + i] & 0xffffffffu);
    std::memcpy(&local[i * LS], &b.gdata[(int64_t)id * LS], sizeof(float) * LS);
  }
}

// ----------------------------------------------------------------------------- forward
ffi::Error forward_impl(F32 means, F32 scales, F32 quats, F32 opac, F32 colors, F32 offset, F32 R, F32 t, F32 K,
                        F32 bg, int64_t width, int64_t height, ffi::Result<F32> rgb, ffi::Result<F32> alpha,
                        ffi::Result<F32> tfinal, ffi::Result<ffi::Buffer<ffi::S32>> ncontrib,
                        ffi::Result<ffi::Buffer<ffi::S64>> needed, ffi::Result<ffi::Buffer<ffi::U64>> ws) {
  Scene s;
  if (auto e = make_scene(means, scales, quats, opac, colors, offset, R, t, K, bg, width, height, s); e.failure())
    return e;
  const int64_t W = width, H = height, P = W * H, cap = ws->element_count();
  if (rgb->element_count() != s.C * P * 3 || alpha->element_count() != s.C * P || tfinal->element_count() != s.C * P ||
      ncontrib->element_count() != s.C * P || needed->element_count() != 1)
    return ffi::Error::InvalidArgument("forward output shapes do not match [C, H, W]");
  float* out_rgb = rgb->typed_data();
  float* out_a = alpha->typed_data();
  float* out_t = tfinal->typed_data();
  int32_t* out_n = ncontrib->typed_data();
  uint64_t* keys = ws->typed_data();
  int64_t max_needed = 0;
  Binned b;
  for (int64_t c = 0; c < s.C; ++c) {
    const int64_t total = bin_camera(s, c, keys, cap, b);
    max_needed = std::max(max_needed, total);
    float* crgb = out_rgb + c * P * 3;
    float* ca = out_a + c * P;
    float* ct = out_t + c * P;
    int32_t* cn = out_n + c * P;
    if (total > cap) {  // never drop splats silently: the caller sees `needed` and NaNs
      const float nan = std::numeric_limits<float>::quiet_NaN();
      std::fill(crgb, crgb + P * 3, nan);
      std::fill(ca, ca + P, nan);
      std::fill(ct, ct + P, nan);
      std::fill(cn, cn + P, 0);
      continue;
    }
    const sj::Camera cam = s.camera(c);
    const int ntx = sj::tiles_x(cam), ntiles = ntx * sj::tiles_y(cam);
    const float* bgc = s.bg + 3 * c;
    static thread_local std::vector<float> local;
    pool().parallel_for(ntiles, [&](int64_t k, int) {
      gather_tile(b, keys, k, local);
      const int64_t n = b.tile_start[k + 1] - b.tile_start[k];
      const int x0 = (int)(k % ntx) * sj::TILE, y0 = (int)(k / ntx) * sj::TILE;
      const int x1 = std::min<int>(x0 + sj::TILE, (int)W), y1 = std::min<int>(y0 + sj::TILE, (int)H);
      for (int y = y0; y < y1; ++y) {
        const float py = y + 0.5f;
        for (int x = x0; x < x1; ++x) {
          const float px = x + 0.5f;
          sj::FwdState st;
          sj::fwd_init(st);
          for (int64_t i = 0; i < n; ++i) {
            const float* g = &local[i * LS];
            if (sj::gauss_power(g, px, py) < g[9]) continue;
            if (!sj::fwd_step(st, g, px, py, (int)i)) break;
          }
          const int64_t pix = (int64_t)y * W + x;
          for (int ch = 0; ch < 3; ++ch) crgb[pix * 3 + ch] = st.rgb[ch] + st.T * bgc[ch];
          ca[pix] = 1.f - st.T;
          ct[pix] = st.T;
          cn[pix] = st.n;
        }
      }
    });
  }
  needed->typed_data()[0] = max_needed;
  return ffi::Error::Success();
}

// ----------------------------------------------------------------------------- backward
ffi::Error backward_impl(F32 means, F32 scales, F32 quats, F32 opac, F32 colors, F32 offset, F32 R, F32 t, F32 K,
                         F32 bg, F32 tfinal, ffi::Buffer<ffi::S32> ncontrib, F32 g_rgb, F32 g_alpha, int64_t width,
                         int64_t height, int64_t gaussian_grads, ffi::Result<F32> g_means, ffi::Result<F32> g_scales,
                         ffi::Result<F32> g_quats, ffi::Result<F32> g_opac, ffi::Result<F32> g_colors,
                         ffi::Result<F32> g_offset, ffi::Result<F32> g_R, ffi::Result<F32> g_t,
                         ffi::Result<ffi::Buffer<ffi::S64>> needed, ffi::Result<ffi::Buffer<ffi::U64>> ws) {
  Scene s;
  if (auto e = make_scene(means, scales, quats, opac, colors, offset, R, t, K, bg, width, height, s); e.failure())
    return e;
  const int64_t W = width, H = height, P = W * H, N = s.N, cap = ws->element_count();
  if (tfinal.element_count() != s.C * P || ncontrib.element_count() != s.C * P ||
      g_rgb.element_count() != s.C * P * 3 || g_alpha.element_count() != s.C * P)
    return ffi::Error::InvalidArgument("backward image inputs must be [C, H, W(, 3)]");
  if (g_means->element_count() != N * 3 || g_scales->element_count() != N * 3 || g_quats->element_count() != N * 4 ||
      g_opac->element_count() != N || g_colors->element_count() != N * 3 ||
      g_offset->element_count() != offset.element_count() || g_R->element_count() != s.C * 9 ||
      g_t->element_count() != s.C * 3)
    return ffi::Error::InvalidArgument("backward output shapes do not match the inputs");
  const bool gg = gaussian_grads != 0;
  float* gm = g_means->typed_data();
  float* gsc = g_scales->typed_data();
  float* gq = g_quats->typed_data();
  float* go = g_opac->typed_data();
  float* gc = g_colors->typed_data();
  float* goff = g_offset->typed_data();
  std::fill(gm, gm + N * 3, 0.f);
  std::fill(gsc, gsc + N * 3, 0.f);
  std::fill(gq, gq + N * 4, 0.f);
  std::fill(go, go + N, 0.f);
  std::fill(gc, gc + N * 3, 0.f);
  std::fill(goff, goff + g_offset->element_count(), 0.f);
  std::fill(g_R->typed_data(), g_R->typed_data() + s.C * 9, 0.f);
  std::fill(g_t->typed_data(), g_t->typed_data() + s.C * 3, 0.f);
  uint64_t* keys = ws->typed_data();
  const int nthreads = pool().size();
  std::vector<std::vector<float>> acc(nthreads);  // per-thread screen-space gradients, N x GGRAD
  std::vector<float> gs(N * sj::GGRAD);
  int64_t max_needed = 0;
  bool overflow = false;
  Binned b;
  for (int64_t c = 0; c < s.C; ++c) {
    const int64_t total = bin_camera(s, c, keys, cap, b);
    max_needed = std::max(max_needed, total);
    if (total > cap) { overflow = true; continue; }
    const sj::Camera cam = s.camera(c);
    const int ntx = sj::tiles_x(cam), ntiles = ntx * sj::tiles_y(cam);
    const float* bgc = s.bg + 3 * c;
    const float* ct = tfinal.typed_data() + c * P;
    const int32_t* cn = ncontrib.typed_data() + c * P;
    const float* cgr = g_rgb.typed_data() + c * P * 3;
    const float* cga = g_alpha.typed_data() + c * P;
    for (auto& a : acc) a.assign(N * sj::GGRAD, 0.f);
    static thread_local std::vector<float> local, lgrad;
    pool().parallel_for(ntiles, [&](int64_t k, int w) {
      const int64_t s0 = b.tile_start[k], n = b.tile_start[k + 1] - s0;
      if (n == 0) return;
      gather_tile(b, keys, k, local);
      lgrad.assign(n * sj::GGRAD, 0.f);
      const int x0 = (int)(k % ntx) * sj::TILE, y0 = (int)(k / ntx) * sj::TILE;
      const int x1 = std::min<int>(x0 + sj::TILE, (int)W), y1 = std::min<int>(y0 + sj::TILE, (int)H);
      for (int y = y0; y < y1; ++y) {
        const float py = y + 0.5f;
        for (int x = x0; x < x1; ++x) {
          const int64_t pix = (int64_t)y * W + x;
          const int last = cn[pix];
          if (last <= 0) continue;
          const float px = x + 0.5f;
          sj::BwdState st;
          sj::bwd_init(st, ct[pix], cgr + pix * 3, bgc, cga[pix]);
          for (int i = last - 1; i >= 0; --i) {
            const float* g = &local[(int64_t)i * LS];
            if (sj::gauss_power(g, px, py) < g[9]) continue;
            sj::bwd_step(st, g, px, py, &lgrad[(int64_t)i * sj::GGRAD]);
          }
        }
      }
      float* a = acc[w].data();
      for (int64_t i = 0; i < n; ++i) {
        const int64_t id = (int64_t)(keys[s0 + i] & 0xffffffffu);
        for (int q = 0; q < sj::GGRAD; ++q) a[id * sj::GGRAD + q] += lgrad[i * sj::GGRAD + q];
      }
    });
    // reduce the per-thread accumulators and chain through the projection
    std::vector<double> pose(nthreads * 12, 0.0);
    const float* off_in = s.offset_of(c);
    float* goff_c = off_in ? goff + (s.offset_cams == 1 ? 0 : c * N * 2) : nullptr;
    parallel_range(N, 4096, [&](int64_t i0, int64_t i1, int w) {
      double* pw = &pose[w * 12];
      for (int64_t i = i0; i < i1; ++i) {
        if (b.proj[i].tx1 <= b.proj[i].tx0) continue;
        float g[sj::GGRAD];
        for (int q = 0; q < sj::GGRAD; ++q) g[q] = 0.f;
        for (int th = 0; th < nthreads; ++th)
          for (int q = 0; q < sj::GGRAD; ++q) g[q] += acc[th][i * sj::GGRAD + q];
        if (goff_c) { goff_c[2 * i] += g[0]; goff_c[2 * i + 1] += g[1]; }
        if (gg) {
          go[i] += g[5];
          for (int k = 0; k < 3; ++k) gc[3 * i + k] += g[6 + k];
        }
        sj::project_bwd<double>(s.means + 3 * i, s.scales + 3 * i, s.quats + 4 * i, cam, g, gg, gm + 3 * i,
                                gsc + 3 * i, gq + 4 * i, pw, pw + 9);
      }
    });
    float* gRc = g_R->typed_data() + 9 * c;
    float* gtc = g_t->typed_data() + 3 * c;
    for (int k = 0; k < 12; ++k) {
      double v = 0.0;
      for (int th = 0; th < nthreads; ++th) v += pose[th * 12 + k];
      if (k < 9) gRc[k] = (float)v; else gtc[k - 9] = (float)v;
    }
  }
  (void)gs;
  if (overflow) {  // cannot happen when the caller reuses the forward's capacity; never silent
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::fill(gm, gm + N * 3, nan);
    std::fill(g_R->typed_data(), g_R->typed_data() + s.C * 9, nan);
  }
  needed->typed_data()[0] = max_needed;
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(SplatjaxRenderFwdCpu, forward_impl,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()  // means [N,3]
                                  .Arg<F32>()  // scales [N,3]
                                  .Arg<F32>()  // quats [N,4]
                                  .Arg<F32>()  // opacities [N]
                                  .Arg<F32>()  // colors [N,3]
                                  .Arg<F32>()  // means2d offset [1|C, 0|N, 2]
                                  .Arg<F32>()  // R [C,3,3]
                                  .Arg<F32>()  // t [C,3]
                                  .Arg<F32>()  // intrinsics [C,4]
                                  .Arg<F32>()  // background [C,3]
                                  .Attr<int64_t>("width")
                                  .Attr<int64_t>("height")
                                  .Ret<F32>()                   // rgb [C,H,W,3]
                                  .Ret<F32>()                   // alpha [C,H,W]
                                  .Ret<F32>()                   // final transmittance [C,H,W]
                                  .Ret<ffi::Buffer<ffi::S32>>()  // entries processed per pixel [C,H,W]
                                  .Ret<ffi::Buffer<ffi::S64>>()  // intersections needed [1]
                                  .Ret<ffi::Buffer<ffi::U64>>()  // workspace [capacity]
);

XLA_FFI_DEFINE_HANDLER_SYMBOL(SplatjaxRenderBwdCpu, backward_impl,
                              ffi::Ffi::Bind()
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
                                  .Arg<F32>()                   // final transmittance
                                  .Arg<ffi::Buffer<ffi::S32>>()  // entries processed
                                  .Arg<F32>()                   // dL/drgb
                                  .Arg<F32>()                   // dL/dalpha
                                  .Attr<int64_t>("width")
                                  .Attr<int64_t>("height")
                                  .Attr<int64_t>("gaussian_grads")
                                  .Ret<F32>()  // means
                                  .Ret<F32>()  // scales
                                  .Ret<F32>()  // quats
                                  .Ret<F32>()  // opacities
                                  .Ret<F32>()  // colors
                                  .Ret<F32>()  // means2d offset
                                  .Ret<F32>()  // R
                                  .Ret<F32>()  // t
                                  .Ret<ffi::Buffer<ffi::S64>>()
                                  .Ret<ffi::Buffer<ffi::U64>>());
