// CPU driver of the splatjax tile rasterizer (math in core.h), exposed as XLA FFI handlers.
//
// Per camera: project every Gaussian (threaded), counting-sort the (tile, Gaussian)
// intersections by tile into lists of at most `capacity` entries, sort each tile
// by (depth, index), then blend tile by tile (threaded over tiles). The backward redoes the
// binning (deterministic, so the lists equal the forward's) and walks every pixel back to
// front from its last contributor; per-thread accumulators are reduced without races.
// Cameras of one launch are split between whole-camera and tile parallelism (see
// "cameras" below). `capacity` bounds one camera's intersection count; the largest count
// is returned as `needed`, and a camera beyond capacity renders NaN (nothing is dropped).
// Colours are [1, N, 3] (shared by the cameras) or [C, N, 3] (per camera, e.g. view-dependent
// colour); their gradient has the same shape and is written when `color_grads`.
#include <algorithm>
#include <cmath>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>

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

// Work spread inside one camera: over the pool when `threaded`, else inline on the calling
// thread in the same order (used when whole cameras run in parallel, one per worker).
void for_chunks(bool threaded, int64_t n, int64_t chunk, const std::function<void(int64_t, int64_t)>& fn) {
  if (threaded) {
    parallel_range(n, chunk, [&](int64_t a, int64_t b, int) { fn(a, b); });
    return;
  }
  for (int64_t a = 0; a < n; a += chunk) fn(a, std::min(n, a + chunk));
}

void for_tasks(bool threaded, int64_t n, const std::function<void(int64_t)>& fn) {
  if (threaded) {
    pool().parallel_for(n, [&](int64_t k, int) { fn(k); });
    return;
  }
  for (int64_t k = 0; k < n; ++k) fn(k);
}

// SPLATJAX_PROFILE=1 prints phase timings to stderr (development aid).
struct Timer {
  bool on = std::getenv("SPLATJAX_PROFILE") != nullptr;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  std::clock_t c0 = std::clock();
  void mark(const char* what) {
    if (!on) return;
    auto t1 = std::chrono::steady_clock::now();
    std::clock_t c1 = std::clock();
    std::fprintf(stderr, "[splatjax] %s: wall %.3f ms, process CPU %.3f ms\n", what,
                 std::chrono::duration<double, std::milli>(t1 - t0).count(), 1e3 * double(c1 - c0) / CLOCKS_PER_SEC);
    t0 = t1;
    c0 = c1;
  }
};

// SPLATJAX_PROFILE=1 also prints each handler's wall and process CPU time.
struct HandlerTimer {
  const char* name;
  bool on = std::getenv("SPLATJAX_PROFILE") != nullptr;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  std::clock_t c0 = std::clock();
  explicit HandlerTimer(const char* n) : name(n) {}
  ~HandlerTimer() {
    if (!on) return;
    const double wall = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "[splatjax] %s: wall %.2f ms, process CPU %.2f ms\n", name, wall,
                 1e3 * double(std::clock() - c0) / CLOCKS_PER_SEC);
  }
};

constexpr int LS = sj::GSTRIDE + 3;  // tile-local layout: GSTRIDE fields, half extents rx, ry, exp-skip threshold

// ----------------------------------------------------------------------------- inputs
struct Scene {
  int64_t N = 0, C = 0;
  const float *means, *scales, *quats, *opac, *colors;
  const float* offset = nullptr;  // [Co, N, 2] or null
  int64_t offset_cams = 0;         // Co: 1 (shared) or C
  int64_t color_cams = 1;          // colours [Cc, N, 3]: Cc = 1 (shared) or C
  const float *R, *t, *K, *bg;
  int width = 0, height = 0;
  int antialiased = 0;

  sj::Camera camera(int64_t c) const {
    sj::Camera cam;
    for (int k = 0; k < 9; ++k) cam.R[k] = R[9 * c + k];
    for (int k = 0; k < 3; ++k) cam.t[k] = t[3 * c + k];
    cam.fx = K[4 * c]; cam.fy = K[4 * c + 1]; cam.cx = K[4 * c + 2]; cam.cy = K[4 * c + 3];
    cam.width = width; cam.height = height;
    cam.antialiased = antialiased;
    return cam;
  }
  int64_t color_row(int64_t c) const { return color_cams == 1 ? 0 : c * N; }  // first colour row of camera c
  const float* offset_of(int64_t c) const {
    if (!offset) return nullptr;
    return offset + (offset_cams == 1 ? 0 : c * N * 2);
  }
};

using F32 = ffi::Buffer<ffi::F32>;

ffi::Error make_scene(F32 means, F32 scales, F32 quats, F32 opac, F32 colors, F32 offset, F32 R, F32 t, F32 K, F32 bg,
                      int64_t width, int64_t height, int64_t antialiased, Scene& s) {
  auto dims = means.dimensions();
  if (dims.size() != 2 || dims[1] != 3) return ffi::Error::InvalidArgument("means must be [N, 3]");
  s.N = dims[0];
  if (s.N >= (int64_t(1) << 31)) return ffi::Error::InvalidArgument("too many Gaussians (>= 2^31)");
  auto rd = R.dimensions();
  if (rd.size() != 3 || rd[1] != 3 || rd[2] != 3) return ffi::Error::InvalidArgument("R must be [C, 3, 3]");
  s.C = rd[0];
  auto cd = colors.dimensions();
  if (scales.element_count() != s.N * 3 || quats.element_count() != s.N * 4 || opac.element_count() != s.N ||
      cd.size() != 3 || cd[1] != s.N || cd[2] != 3 || !(cd[0] == 1 || cd[0] == s.C))
    return ffi::Error::InvalidArgument(
        "Gaussian arrays must be scales [N,3], quats [N,4], opacities [N], colors [1 or C, N, 3]");
  s.color_cams = cd[0];
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
  s.antialiased = antialiased != 0;
  return ffi::Error::Success();
}

// ----------------------------------------------------------------------------- binning
struct Binned {
  std::vector<sj::Projected> proj;
  std::vector<float> gdata;          // N * LS
  std::vector<int64_t> tile_start;   // ntiles + 1
  std::vector<uint64_t> order;       // binned Gaussians as (depth, index) keys, sorted
  std::vector<uint64_t> scratch;     // the radix sort's second buffer
  std::vector<uint64_t> keys;        // the per-tile lists, tile k at [tile_start[k], tile_start[k+1])
  int64_t total = 0;
};

// Sort (depth, index) keys whose indices ascend in their current order: a stable LSD radix
// sort on the 32 depth bits (4 passes of 8 bits; a pass whose digit is the same for every key
// is skipped), which equals std::sort on the whole keys. Written here because the standard
// library has no radix sort and a comparison sort of every camera's keys took a sixth of a
// small render's time.
void sort_by_depth_bits(std::vector<uint64_t>& keys, std::vector<uint64_t>& scratch) {
  const size_t M = keys.size();
  if (M < 2) return;
  scratch.resize(M);
  uint64_t* src = keys.data();
  uint64_t* dst = scratch.data();
  for (int shift = 32; shift < 64; shift += 8) {
    size_t count[257] = {0};
    for (size_t i = 0; i < M; ++i) ++count[((src[i] >> shift) & 0xffu) + 1];
    if (count[((src[0] >> shift) & 0xffu) + 1] == M) continue;  // one digit: already in order
    for (int d = 0; d < 256; ++d) count[d + 1] += count[d];
    for (size_t i = 0; i < M; ++i) dst[count[(src[i] >> shift) & 0xffu]++] = src[i];
    std::swap(src, dst);
  }
  if (src != keys.data()) std::memcpy(keys.data(), src, M * sizeof(uint64_t));
}

// Project camera c and build its depth-sorted per-tile lists in b.keys. Returns the number
// of intersections; the lists are only built when it is at most cap.
// `threaded`: spread over the pool, else run on the calling thread (same result).
int64_t bin_camera(const Scene& s, int64_t c, int64_t cap, Binned& b, bool threaded) {
  const sj::Camera cam = s.camera(c);
  const float* off = s.offset_of(c);
  const int64_t N = s.N;
  const int ntx = sj::tiles_x(cam), nty = sj::tiles_y(cam), ntiles = ntx * nty;
  const float* colors = s.colors + 3 * s.color_row(c);
  Timer tm;
  b.proj.resize(N);
  b.gdata.resize(N * LS);
  for_chunks(threaded, N, 4096, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      sj::Projected& p = b.proj[i];
      sj::project_gaussian(s.means + 3 * i, s.scales + 3 * i, s.quats + 4 * i, s.opac[i], off ? off + 2 * i : nullptr,
                           cam, p);
      float* g = &b.gdata[i * LS];
      g[0] = p.mx; g[1] = p.my; g[2] = p.A; g[3] = p.B; g[4] = p.C; g[5] = p.opacity;
      g[6] = colors[3 * i]; g[7] = colors[3 * i + 1]; g[8] = colors[3 * i + 2];
      g[9] = p.rx; g[10] = p.ry; g[11] = sj::skip_threshold(p.opacity);
    }
  });
  tm.mark("project");
  // Order the binned Gaussians once by (depth, index); a stable counting sort by tile then
  // leaves every tile's list in depth order without sorting per tile. The keys are appended
  // in index order, so a stable sort by the depth bits alone gives the (depth, index) order.
  std::vector<uint64_t>& order = b.order;
  order.clear();
  for (int64_t i = 0; i < N; ++i)
    if (b.proj[i].tx1 > b.proj[i].tx0) order.push_back(sj::depth_key(b.proj[i].depth, (uint32_t)i));
  sort_by_depth_bits(order, b.scratch);
  tm.mark("depth sort");
  b.tile_start.assign(ntiles + 1, 0);
  int64_t* cnt = b.tile_start.data() + 1;
  for (int64_t i = 0; i < N; ++i) {
    const sj::Projected& p = b.proj[i];
    for (int ty = p.ty0; ty < p.ty1; ++ty)
      for (int tx = p.tx0; tx < p.tx1; ++tx) ++cnt[ty * ntx + tx];
  }
  for (int k = 0; k < ntiles; ++k) b.tile_start[k + 1] += b.tile_start[k];
  b.total = b.tile_start[ntiles];
  tm.mark("count");
  if (b.total > cap) return b.total;
  b.keys.resize(b.total);
  uint64_t* keys = b.keys.data();
  std::vector<int64_t> cursor(b.tile_start.begin(), b.tile_start.end() - 1);
  for (const uint64_t key : order) {
    const sj::Projected& p = b.proj[key & 0xffffffffu];
    for (int ty = p.ty0; ty < p.ty1; ++ty)
      for (int tx = p.tx0; tx < p.tx1; ++tx) keys[cursor[ty * ntx + tx]++] = key;
  }
  tm.mark("fill");
  if (tm.on) std::fprintf(stderr, "[splatjax] %lld intersections\n", (long long)b.total);
  return b.total;
}

// Gather the tile's Gaussians into a contiguous buffer.
void gather_tile(const Binned& b, int64_t k, std::vector<float>& local) {
  const uint64_t* keys = b.keys.data();
  const int64_t s0 = b.tile_start[k], n = b.tile_start[k + 1] - s0;
  local.resize(n * LS);
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t id = (uint32_t)(keys[s0 + i] & 0xffffffffu);
    std::memcpy(&local[i * LS], &b.gdata[(int64_t)id * LS], sizeof(float) * LS);
  }
}

// ----------------------------------------------------------------------------- tile loops
// The per-tile loops below are core.h's blending (fwd_step / bwd_step, same formulas and
// thresholds) restated for SIMD: Gaussians in the outer loop, the tile's pixels in 8-lane
// groups in the inner, branch-free loop (GCC/Clang vector extensions; an AVX2+FMA build
// picked at run time where the CPU has it, else SSE2). Work is limited to the rows and
// 8-pixel groups inside each Gaussian's alpha >= 1/255 box, groups whose pixels are all
// saturated (forward) or past their last contributor (backward) are skipped, and so are
// groups where no lane can reach alpha 1/255. The exponential is a Cephes-style polynomial
// (about 1 ulp) that vectorises; forward and backward share it. The CUDA driver runs
// fwd_step / bwd_step per pixel directly.
constexpr int TP = sj::TILE * sj::TILE;

#define SJ_INLINE inline __attribute__((always_inline))

// 8-lane float / int vectors (GCC/Clang vector extensions): AVX registers in the AVX2 build,
// pairs of SSE registers in the baseline build.
typedef float v8f __attribute__((vector_size(32), aligned(32), may_alias));
typedef int32_t v8i __attribute__((vector_size(32), aligned(32), may_alias));

SJ_INLINE v8f bc(float v) { return v8f{v, v, v, v, v, v, v, v}; }
SJ_INLINE v8i bci(int32_t v) { return v8i{v, v, v, v, v, v, v, v}; }
SJ_INLINE v8f sel(v8i m, v8f a, v8f b) { return (v8f)(((v8i)a & m) | ((v8i)b & ~m)); }
SJ_INLINE v8i seli(v8i m, v8i a, v8i b) { return (a & m) | (b & ~m); }
SJ_INLINE bool any_lane(v8i m) {
  typedef int64_t v4l __attribute__((vector_size(32), may_alias));
  const v4l q = (v4l)m;
  return (q[0] | q[1] | q[2] | q[3]) != 0;
}
SJ_INLINE float hsum(v8f v) { return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])); }

// exp(x) for 8 lanes: Cephes-style range reduction and degree-6 polynomial (about 1 ulp on
// the range used here). x is clamped to [-80, 80] so results stay normal floats (no
// denormal slow path); alpha there is far below 1/255 anyway.
SJ_INLINE v8f exp_v(v8f x) {
  x = sel(x < bc(-80.f), bc(-80.f), x);
  x = sel(x > bc(80.f), bc(80.f), x);
  const v8f fl = x * 1.44269504088896341f + 0.5f;
  v8i k = __builtin_convertvector(fl, v8i);  // truncation
  k += (__builtin_convertvector(k, v8f) > fl);  // floor: mask is -1 where trunc rounded up
  const v8f n = __builtin_convertvector(k, v8f);
  const v8f r = x - n * 0.693359375f + n * 2.12194440e-4f;
  v8f p = bc(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * (v8f)((k + 127) << 23);
}

// Rows [r0, r1] and 8-pixel column groups [c0, c1] of the tile at (x0, y0) that overlap
// the Gaussian's box (pixel centres within mean +- (rx, ry)); pixels outside have
// alpha < 1/255 (the box is the one used for tile binning). False when nothing overlaps.
SJ_INLINE bool box_in_tile(const float* g, int x0, int y0, int& r0, int& r1, int& c0, int& c1) {
  const float lx = g[0] - g[9] - 0.5f - x0, hx = g[0] + g[9] - 0.5f - x0;
  const float ly = g[1] - g[10] - 0.5f - y0, hy = g[1] + g[10] - 0.5f - y0;
  if (!(hx >= 0.f && lx <= sj::TILE - 1.f && hy >= 0.f && ly <= sj::TILE - 1.f)) return false;
  r0 = ly <= 0.f ? 0 : (int)std::ceil(ly);
  r1 = hy >= sj::TILE - 1.f ? sj::TILE - 1 : (int)std::floor(hy);
  const int xa = lx <= 0.f ? 0 : (int)std::ceil(lx);
  const int xb = hx >= sj::TILE - 1.f ? sj::TILE - 1 : (int)std::floor(hx);
  c0 = xa / 8;
  c1 = xb / 8;
  return r0 <= r1 && xa <= xb;
}

// Forward blend of one tile: pixels (x0 + p % 16, y0 + p / 16) for p < 256, `live_in` marks
// pixels inside the image. Outputs T, rgb and entries processed per pixel (arrays aligned
// to 32 bytes). This is core.h's fwd_step for 8 pixels at a time.
SJ_INLINE void blend_tile_fwd_body(const float* local, int64_t n, int x0, int y0, const float* live_in, float* T,
                                   float* cr, float* cg, float* cb, int32_t* cnt) {
  alignas(32) float px[TP], py[TP], live[TP];
  for (int p = 0; p < TP; ++p) {
    px[p] = x0 + (p % sj::TILE) + 0.5f;
    py[p] = y0 + (p / sj::TILE) + 0.5f;
    live[p] = live_in[p];
    T[p] = 1.f; cr[p] = cg[p] = cb[p] = 0.f; cnt[p] = 0;
  }
  int nlive = 0;
  for (int p = 0; p < TP; ++p) nlive += live[p] > 0.f;
  bool group_live[TP / 8];  // any live pixel in the 8-pixel group
  for (int q = 0; q < TP / 8; ++q) {
    group_live[q] = false;
    for (int l = 0; l < 8; ++l) group_live[q] |= live[8 * q + l] > 0.f;
  }
  for (int64_t i = 0; i < n && nlive > 0; ++i) {
    const float* g = local + i * LS;
    const float mx = g[0], my = g[1], A = g[2], B = g[3], C = g[4], o = g[5], r = g[6], gg = g[7], bb = g[8];
    const v8i ip1 = bci((int32_t)(i + 1));
    const float thr = g[11];
    int r0, r1, c0, c1;
    if (!box_in_tile(g, x0, y0, r0, r1, c0, c1)) continue;
    v8i nsat = bci(0);
    for (int row = r0; row <= r1; ++row)
    for (int p = row * sj::TILE + c0 * 8; p <= row * sj::TILE + c1 * 8; p += 8) {
      if (!group_live[p / 8]) continue;
      const v8f dx = *(const v8f*)&px[p] - mx, dy = *(const v8f*)&py[p] - my;
      const v8f power = -0.5f * (A * dx * dx + C * dy * dy) - B * dx * dy;
      if (!any_lane(power >= thr)) continue;  // every alpha < 1/255 here
      v8f a = o * exp_v(power);
      a = sel(a < bc(sj::ALPHA_MAX), a, bc(sj::ALPHA_MAX));
      v8f& Tp = *(v8f*)&T[p];
      v8f& lv = *(v8f*)&live[p];
      const v8i ok = (lv > 0.f) & (a >= sj::ALPHA_MIN);
      const v8f tn = Tp * (1.f - a);
      const v8i sat = ok & (tn < sj::T_MIN);
      const v8i contrib = ok & ~sat;
      const v8f w = sel(contrib, a * Tp, bc(0.f));
      *(v8f*)&cr[p] += w * r;
      *(v8f*)&cg[p] += w * gg;
      *(v8f*)&cb[p] += w * bb;
      Tp = sel(contrib, tn, Tp);
      *(v8i*)&cnt[p] = seli(contrib, ip1, *(v8i*)&cnt[p]);
      lv = sel(sat, bc(0.f), lv);
      nsat -= sat;
      if (any_lane(sat)) group_live[p / 8] = any_lane((v8i)lv);
    }
    for (int l = 0; l < 8; ++l) nlive -= nsat[l];
  }
}

// Backward of one tile (core.h's bwd_step for 8 pixels at a time, walking every entry below
// the tile's largest last-contributor count). last[p]: entries processed in the forward;
// T_final, gpix (dL/drgb), gT (dL/dT_final through background and alpha). Adds per-entry
// gradients (GGRAD each) into lgrad.
SJ_INLINE void blend_tile_bwd_body(const float* local, int x0, int y0, const int32_t* last, const float* T_final,
                                   const float* gr, const float* ggr, const float* gbl, const float* gT,
                                   float* lgrad) {
  alignas(32) float px[TP], py[TP], T[TP], ar[TP], ag[TP], ab[TP];
  int32_t maxlast = 0;
  for (int p = 0; p < TP; ++p) {
    px[p] = x0 + (p % sj::TILE) + 0.5f;
    py[p] = y0 + (p / sj::TILE) + 0.5f;
    T[p] = T_final[p];
    ar[p] = ag[p] = ab[p] = 0.f;
    maxlast = std::max(maxlast, last[p]);
  }
  int32_t group_last[TP / 8];  // largest last-contributor count in the 8-pixel group
  for (int q = 0; q < TP / 8; ++q) {
    group_last[q] = 0;
    for (int l = 0; l < 8; ++l) group_last[q] = std::max(group_last[q], last[8 * q + l]);
  }
  for (int32_t i = maxlast - 1; i >= 0; --i) {
    const float* g = local + (int64_t)i * LS;
    const float mx = g[0], my = g[1], A = g[2], B = g[3], C = g[4], o = g[5], r = g[6], gg = g[7], bb = g[8];
    const v8i iv = bci(i);
    const float thr = g[11];
    int r0, r1, c0, c1;
    if (!box_in_tile(g, x0, y0, r0, r1, c0, c1)) continue;
    v8f s_mx = bc(0.f), s_my = bc(0.f), s_A = bc(0.f), s_B = bc(0.f), s_C = bc(0.f), s_o = bc(0.f), s_r = bc(0.f),
        s_g = bc(0.f), s_b = bc(0.f);
    for (int row = r0; row <= r1; ++row)
    for (int p = row * sj::TILE + c0 * 8; p <= row * sj::TILE + c1 * 8; p += 8) {
      if (i >= group_last[p / 8]) continue;
      const v8f dx = *(const v8f*)&px[p] - mx, dy = *(const v8f*)&py[p] - my;
      const v8f power = -0.5f * (A * dx * dx + C * dy * dy) - B * dx * dy;
      if (!any_lane(power >= thr)) continue;  // every alpha < 1/255 here
      const v8f G = exp_v(power);
      const v8f raw = o * G;
      const v8f a = sel(raw < bc(sj::ALPHA_MAX), raw, bc(sj::ALPHA_MAX));
      const v8i ok = (iv < *(const v8i*)&last[p]) & (a >= sj::ALPHA_MIN);
      const v8f one_m = 1.f - a;
      const v8f inv = 1.f / one_m;
      v8f& Tp = *(v8f*)&T[p];
      const v8f Tb = Tp * inv;
      const v8f w = sel(ok, a * Tb, bc(0.f));
      const v8f vgr = *(const v8f*)&gr[p], vgg = *(const v8f*)&ggr[p], vgb = *(const v8f*)&gbl[p];
      s_r += w * vgr; s_g += w * vgg; s_b += w * vgb;
      v8f& vr = *(v8f*)&ar[p];
      v8f& vg = *(v8f*)&ag[p];
      v8f& vb = *(v8f*)&ab[p];
      const v8f dal = ((r - vr) * vgr + (gg - vg) * vgg + (bb - vb) * vgb) * Tb -
                      *(const v8f*)&T_final[p] * inv * *(const v8f*)&gT[p];
      vr = sel(ok, a * r + one_m * vr, vr);
      vg = sel(ok, a * gg + one_m * vg, vg);
      vb = sel(ok, a * bb + one_m * vb, vb);
      Tp = sel(ok, Tb, Tp);
      const v8i unclamped = ok & (raw <= sj::ALPHA_MAX);
      const v8f gp = sel(unclamped, raw * dal, bc(0.f));
      s_o += sel(unclamped, G * dal, bc(0.f));
      s_mx += gp * (A * dx + B * dy);
      s_my += gp * (C * dy + B * dx);
      s_A += -0.5f * gp * dx * dx;
      s_B += -gp * dx * dy;
      s_C += -0.5f * gp * dy * dy;
    }
    float* out = lgrad + (int64_t)i * sj::GGRAD;
    out[0] += hsum(s_mx); out[1] += hsum(s_my); out[2] += hsum(s_A); out[3] += hsum(s_B); out[4] += hsum(s_C);
    out[5] += hsum(s_o); out[6] += hsum(s_r); out[7] += hsum(s_g); out[8] += hsum(s_b);
  }
}

// AVX2+FMA and baseline builds of the tile loops, picked at run time.
#define SJ_FWD_ARGS const float *local, int64_t n, int x0, int y0, const float *live_in, float *T, float *cr, \
                    float *cg, float *cb, int32_t *cnt
#define SJ_BWD_ARGS const float *local, int x0, int y0, const int32_t *last, const float *T_final, const float *gr, \
                    const float *ggr, const float *gbl, const float *gT, float *lgrad
__attribute__((target("avx2,fma"))) void blend_tile_fwd_avx2(SJ_FWD_ARGS) {
  blend_tile_fwd_body(local, n, x0, y0, live_in, T, cr, cg, cb, cnt);
}
void blend_tile_fwd_base(SJ_FWD_ARGS) { blend_tile_fwd_body(local, n, x0, y0, live_in, T, cr, cg, cb, cnt); }
__attribute__((target("avx2,fma"))) void blend_tile_bwd_avx2(SJ_BWD_ARGS) {
  blend_tile_bwd_body(local, x0, y0, last, T_final, gr, ggr, gbl, gT, lgrad);
}
void blend_tile_bwd_base(SJ_BWD_ARGS) { blend_tile_bwd_body(local, x0, y0, last, T_final, gr, ggr, gbl, gT, lgrad); }

bool has_avx2() {
  static const bool v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return v;
}
void blend_tile_fwd(SJ_FWD_ARGS) {
  (has_avx2() ? blend_tile_fwd_avx2 : blend_tile_fwd_base)(local, n, x0, y0, live_in, T, cr, cg, cb, cnt);
}
void blend_tile_bwd(SJ_BWD_ARGS) {
  (has_avx2() ? blend_tile_bwd_avx2 : blend_tile_bwd_base)(local, x0, y0, last, T_final, gr, ggr, gbl, gT, lgrad);
}

// ----------------------------------------------------------------------------- cameras
// A call with C cameras runs the first floor(C / P) * P of them whole and in parallel, one
// camera per pool worker (P workers), and the rest one after the other with each camera's
// tiles and Gaussians spread over the pool. Both ways compute a camera identically (same
// lists, same per-tile and per-Gaussian summation order), so results do not depend on the
// split; the camera-parallel part avoids the per-camera serial steps (tile counting, list
// fill, merges) and pool hand-offs, which is what makes a vmapped batch cheaper per camera.
int64_t cameras_in_parallel(int64_t C) {
  const int64_t P = pool().size();
  return P > 1 ? (C / P) * P : 0;
}

// Per-worker binning storage for the camera-parallel part. Only touched inside a pool job,
// and the pool runs one job at a time, so concurrent handler calls cannot share it.
Binned& worker_binned(int w) {
  static std::vector<Binned> per_worker(pool().size());
  return per_worker[w];
}

// The calling thread's binning storage for the tile-parallel part, reused between calls
// (no page faults).
Binned& caller_binned() {
  static thread_local Binned b;
  return b;
}

// ----------------------------------------------------------------------------- forward
struct FwdOut {
  float *rgb, *alpha, *tfinal;
  int32_t* ncontrib;
};

// Render camera c into its slice of the outputs; returns its intersection count (NaN images
// when that exceeds cap: the caller sees `needed`, nothing is dropped silently).
int64_t forward_camera(const Scene& s, int64_t c, int64_t cap, bool threaded, Binned& b, const FwdOut& out) {
  const int64_t W = s.width, H = s.height, P = W * H;
  const int64_t total = bin_camera(s, c, cap, b, threaded);
  float* crgb = out.rgb + c * P * 3;
  float* ca = out.alpha + c * P;
  float* ct = out.tfinal + c * P;
  int32_t* cn = out.ncontrib + c * P;
  if (total > cap) {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::fill(crgb, crgb + P * 3, nan);
    std::fill(ca, ca + P, nan);
    std::fill(ct, ct + P, nan);
    std::fill(cn, cn + P, 0);
    return total;
  }
  const sj::Camera cam = s.camera(c);
  const int ntx = sj::tiles_x(cam), ntiles = ntx * sj::tiles_y(cam);
  const float* bgc = s.bg + 3 * c;
  static thread_local std::vector<float> local;
  Timer tm;
  for_tasks(threaded, ntiles, [&](int64_t k) {
    gather_tile(b, k, local);
    const int64_t n = b.tile_start[k + 1] - b.tile_start[k];
    const int x0 = (int)(k % ntx) * sj::TILE, y0 = (int)(k / ntx) * sj::TILE;
    alignas(64) float live[TP], T[TP], cr[TP], cg[TP], cb[TP];
    alignas(64) int32_t cnt[TP];
    for (int p = 0; p < TP; ++p) live[p] = (x0 + p % sj::TILE < W && y0 + p / sj::TILE < H) ? 1.f : 0.f;
    blend_tile_fwd(local.data(), n, x0, y0, live, T, cr, cg, cb, cnt);
    for (int p = 0; p < TP; ++p) {
      const int x = x0 + p % sj::TILE, y = y0 + p / sj::TILE;
      if (x >= W || y >= H) continue;
      const int64_t pix = (int64_t)y * W + x;
      crgb[pix * 3] = cr[p] + T[p] * bgc[0];
      crgb[pix * 3 + 1] = cg[p] + T[p] * bgc[1];
      crgb[pix * 3 + 2] = cb[p] + T[p] * bgc[2];
      ca[pix] = 1.f - T[p];
      ct[pix] = T[p];
      cn[pix] = cnt[p];
    }
  });
  tm.mark("blend");
  return total;
}

ffi::Error forward_impl(F32 means, F32 scales, F32 quats, F32 opac, F32 colors, F32 offset, F32 R, F32 t, F32 K,
                        F32 bg, int64_t width, int64_t height, int64_t capacity, int64_t antialiased,
                        ffi::Result<F32> rgb,
                        ffi::Result<F32> alpha, ffi::Result<F32> tfinal, ffi::Result<ffi::Buffer<ffi::S32>> ncontrib,
                        ffi::Result<ffi::Buffer<ffi::S32>> needed) {
  HandlerTimer htimer("forward");
  Scene s;
  if (auto e = make_scene(means, scales, quats, opac, colors, offset, R, t, K, bg, width, height, antialiased, s);
      e.failure())
    return e;
  const int64_t P = width * height, cap = capacity;
  if (rgb->element_count() != s.C * P * 3 || alpha->element_count() != s.C * P || tfinal->element_count() != s.C * P ||
      ncontrib->element_count() != s.C * P || needed->element_count() != 1)
    return ffi::Error::InvalidArgument("forward output shapes do not match [C, H, W]");
  const FwdOut out{rgb->typed_data(), alpha->typed_data(), tfinal->typed_data(), ncontrib->typed_data()};
  std::vector<int64_t> totals(s.C, 0);
  const int64_t Cp = cameras_in_parallel(s.C);
  pool().parallel_for(Cp, [&](int64_t c, int w) {
    totals[c] = forward_camera(s, c, cap, false, worker_binned(w), out);
  });
  for (int64_t c = Cp; c < s.C; ++c) totals[c] = forward_camera(s, c, cap, true, caller_binned(), out);
  const int64_t max_needed = s.C ? *std::max_element(totals.begin(), totals.end()) : 0;
  needed->typed_data()[0] = (int32_t)std::min<int64_t>(max_needed, INT32_MAX);
  return ffi::Error::Success();
}

// ----------------------------------------------------------------------------- backward
struct BwdIn {
  const float *tfinal, *g_rgb, *g_alpha;
  const int32_t* ncontrib;
};
struct BwdOut {
  bool gaussian_grads, color_grads;
  float *gm, *gsc, *gq, *go, *gc, *goff, *gR, *gt, *gK;
};

// Add camera c's gradients to the outputs (its own R, t, K rows, its offset slice, and the
// Gaussian arrays when gaussian_grads); returns its intersection count.
int64_t backward_camera(const Scene& s, int64_t c, int64_t cap, bool threaded, Binned& b, const BwdIn& in,
                        const BwdOut& out) {
  const int64_t W = s.width, H = s.height, P = W * H, N = s.N;
  const int64_t total = bin_camera(s, c, cap, b, threaded);
  if (total > cap) return total;
  const sj::Camera cam = s.camera(c);
  const int ntx = sj::tiles_x(cam), ntiles = ntx * sj::tiles_y(cam);
  const float* bgc = s.bg + 3 * c;
  const float* ct = in.tfinal + c * P;
  const int32_t* cn = in.ncontrib + c * P;
  const float* cgr = in.g_rgb + c * P * 3;
  const float* cga = in.g_alpha + c * P;
  const uint64_t* keys = b.keys.data();
  // screen-space gradients per intersection (list position x GGRAD), reduced per Gaussian in a
  // fixed order afterwards: no races and bitwise reproducible results
  static thread_local std::vector<float> isect_grad, gsum, local;
  Timer tm;
  isect_grad.resize(total * sj::GGRAD);
  std::vector<float>& ig = isect_grad;  // named references: worker lambdas see this thread's buffers
  std::vector<float>& gs = gsum;
  for_tasks(threaded, ntiles, [&](int64_t k) {
    const int64_t s0 = b.tile_start[k], n = b.tile_start[k + 1] - s0;
    if (n == 0) return;
    gather_tile(b, k, local);
    float* lgrad = ig.data() + s0 * sj::GGRAD;
    std::fill(lgrad, lgrad + n * sj::GGRAD, 0.f);
    const int x0 = (int)(k % ntx) * sj::TILE, y0 = (int)(k / ntx) * sj::TILE;
    alignas(64) float tf[TP], gr[TP], ggr[TP], gbl[TP], gT[TP];
    alignas(64) int32_t last[TP];
    for (int p = 0; p < TP; ++p) {
      const int x = x0 + p % sj::TILE, y = y0 + p / sj::TILE;
      if (x >= W || y >= H) { last[p] = 0; tf[p] = 1.f; gr[p] = ggr[p] = gbl[p] = gT[p] = 0.f; continue; }
      const int64_t pix = (int64_t)y * W + x;
      last[p] = cn[pix];
      tf[p] = ct[pix];
      gr[p] = cgr[pix * 3]; ggr[p] = cgr[pix * 3 + 1]; gbl[p] = cgr[pix * 3 + 2];
      gT[p] = gr[p] * bgc[0] + ggr[p] * bgc[1] + gbl[p] * bgc[2] - cga[pix];
    }
    blend_tile_bwd(local.data(), x0, y0, last, tf, gr, ggr, gbl, gT, lgrad);
  });
  tm.mark("blend backward");
  // per-Gaussian screen-space gradients: each range of Gaussian ids adds its intersections in
  // list order (fixed order whatever the number of ranges: reproducible, no races)
  gs.assign(N * sj::GGRAD, 0.f);
  const int64_t nranges = threaded ? pool().size() : 1, span = (N + nranges - 1) / nranges;
  for_tasks(threaded, nranges, [&](int64_t r) {
    const int64_t lo = r * span, hi = std::min(N, lo + span);
    for (int64_t e = 0; e < total; ++e) {
      const int64_t id = (int64_t)(keys[e] & 0xffffffffu);
      if (id < lo || id >= hi) continue;
      const float* src = ig.data() + e * sj::GGRAD;
      float* dst = gs.data() + id * sj::GGRAD;
      for (int q = 0; q < sj::GGRAD; ++q) dst[q] += src[q];
    }
  });
  tm.mark("gradient reduction");
  // per chunk of Gaussians: R (9), t (3), intrinsics (4); summed in chunk order (reproducible)
  constexpr int64_t kChunk = 4096;
  const int64_t nchunks = (N + kChunk - 1) / kChunk;
  std::vector<double> pose(std::max<int64_t>(nchunks, 1) * 16, 0.0);
  const float* off_in = s.offset_of(c);
  float* goff_c = off_in ? out.goff + (s.offset_cams == 1 ? 0 : c * N * 2) : nullptr;
  const bool gg = out.gaussian_grads;
  float* gc_c = out.color_grads ? out.gc + 3 * s.color_row(c) : nullptr;
  float go_unused = 0.f;
  for_chunks(threaded, N, kChunk, [&](int64_t i0, int64_t i1) {
    double* pw = &pose[(i0 / kChunk) * 16];
    for (int64_t i = i0; i < i1; ++i) {
      if (b.proj[i].tx1 <= b.proj[i].tx0) continue;
      const float* g = gs.data() + i * sj::GGRAD;
      if (goff_c) { goff_c[2 * i] += g[0]; goff_c[2 * i + 1] += g[1]; }
      if (gc_c)
        for (int k = 0; k < 3; ++k) gc_c[3 * i + k] += g[6 + k];
      sj::project_bwd<double>(s.means + 3 * i, s.scales + 3 * i, s.quats + 4 * i, s.opac[i], cam, g, gg,
                              out.gm + 3 * i, out.gsc + 3 * i, out.gq + 4 * i, gg ? out.go + i : &go_unused, pw,
                              pw + 9, pw + 12);
    }
  });
  tm.mark("projection backward");
  for (int k = 0; k < 16; ++k) {
    double v = 0.0;
    for (int64_t ch = 0; ch < nchunks; ++ch) v += pose[ch * 16 + k];
    if (k < 9) out.gR[9 * c + k] = (float)v; else if (k < 12) out.gt[3 * c + k - 9] = (float)v; else out.gK[4 * c + k - 12] = (float)v;
  }
  return total;
}

ffi::Error backward_impl(F32 means, F32 scales, F32 quats, F32 opac, F32 colors, F32 offset, F32 R, F32 t, F32 K,
                         F32 bg, F32 tfinal, ffi::Buffer<ffi::S32> ncontrib, F32 g_rgb, F32 g_alpha, int64_t width,
                         int64_t height, int64_t gaussian_grads, int64_t color_grads, int64_t capacity,
                         int64_t antialiased, ffi::Result<F32> g_means,
                         ffi::Result<F32> g_scales,
                         ffi::Result<F32> g_quats, ffi::Result<F32> g_opac, ffi::Result<F32> g_colors,
                         ffi::Result<F32> g_offset, ffi::Result<F32> g_R, ffi::Result<F32> g_t,
                         ffi::Result<F32> g_K, ffi::Result<ffi::Buffer<ffi::S32>> needed) {
  HandlerTimer htimer("backward");
  Scene s;
  if (auto e = make_scene(means, scales, quats, opac, colors, offset, R, t, K, bg, width, height, antialiased, s);
      e.failure())
    return e;
  const int64_t P = width * height, N = s.N, cap = capacity;
  if (tfinal.element_count() != s.C * P || ncontrib.element_count() != s.C * P ||
      g_rgb.element_count() != s.C * P * 3 || g_alpha.element_count() != s.C * P)
    return ffi::Error::InvalidArgument("backward image inputs must be [C, H, W(, 3)]");
  if (g_means->element_count() != N * 3 || g_scales->element_count() != N * 3 || g_quats->element_count() != N * 4 ||
      g_opac->element_count() != N || g_colors->element_count() != colors.element_count() ||
      g_offset->element_count() != offset.element_count() || g_R->element_count() != s.C * 9 ||
      g_t->element_count() != s.C * 3 || g_K->element_count() != s.C * 4)
    return ffi::Error::InvalidArgument("backward output shapes do not match the inputs");
  const BwdOut out{gaussian_grads != 0, color_grads != 0, g_means->typed_data(), g_scales->typed_data(), g_quats->typed_data(),
                   g_opac->typed_data(), g_colors->typed_data(), g_offset->typed_data(), g_R->typed_data(),
                   g_t->typed_data(), g_K->typed_data()};
  const BwdIn in{tfinal.typed_data(), g_rgb.typed_data(), g_alpha.typed_data(), ncontrib.typed_data()};
  std::fill(out.gm, out.gm + N * 3, 0.f);
  std::fill(out.gsc, out.gsc + N * 3, 0.f);
  std::fill(out.gq, out.gq + N * 4, 0.f);
  std::fill(out.go, out.go + N, 0.f);
  std::fill(out.gc, out.gc + g_colors->element_count(), 0.f);
  std::fill(out.goff, out.goff + g_offset->element_count(), 0.f);
  std::fill(out.gR, out.gR + s.C * 9, 0.f);
  std::fill(out.gt, out.gt + s.C * 3, 0.f);
  std::fill(out.gK, out.gK + s.C * 4, 0.f);
  std::vector<int64_t> totals(s.C, 0);
  // Whole cameras in parallel only when no output is shared between cameras: Gaussian
  // gradients, shared colours' and a shared screen-space offset's are summed over cameras in
  // camera order.
  const bool shared = out.gaussian_grads || (s.offset != nullptr && s.offset_cams == 1) ||
                      (out.color_grads && s.color_cams == 1);
  const int64_t Cp = shared ? 0 : cameras_in_parallel(s.C);
  pool().parallel_for(Cp, [&](int64_t c, int w) {
    totals[c] = backward_camera(s, c, cap, false, worker_binned(w), in, out);
  });
  for (int64_t c = Cp; c < s.C; ++c) totals[c] = backward_camera(s, c, cap, true, caller_binned(), in, out);
  const int64_t max_needed = s.C ? *std::max_element(totals.begin(), totals.end()) : 0;
  if (max_needed > cap) {  // cannot happen when the caller's capacity fits the forward; never silent:
    // every gradient is NaN (the pose gradients too, so pose refinement cannot take a zero step)
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (auto* r : {&g_means, &g_scales, &g_quats, &g_opac, &g_colors, &g_offset, &g_R, &g_t, &g_K})
      std::fill((*r)->typed_data(), (*r)->typed_data() + (*r)->element_count(), nan);
  }
  needed->typed_data()[0] = (int32_t)std::min<int64_t>(max_needed, INT32_MAX);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(SplatjaxRenderFwdCpu, forward_impl,
                              ffi::Ffi::Bind()
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
                                  .Attr<int64_t>("capacity")  // intersections per camera
                                  .Attr<int64_t>("antialiased")  // 1: opacity times the compensation
                                  .Ret<F32>()                   // rgb [C,H,W,3]
                                  .Ret<F32>()                   // alpha [C,H,W]
                                  .Ret<F32>()                   // final transmittance [C,H,W]
                                  .Ret<ffi::Buffer<ffi::S32>>()  // entries processed per pixel [C,H,W]
                                  .Ret<ffi::Buffer<ffi::S32>>()  // intersections needed [1]
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
                                  .Attr<int64_t>("gaussian_grads")  // means, scales, quats, opacities
                                  .Attr<int64_t>("color_grads")
                                  .Attr<int64_t>("capacity")
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
                                  .Ret<ffi::Buffer<ffi::S32>>());
