// splatjax tile rasterizer: the math, written once for the CPU (g++) and CUDA (nvcc) drivers.
//
// Conventions are those of splatjax/render/reference.py (the oracle):
//   p = R m + t (R any 3x3), culled when p.z <= NEAR_PLANE; mean in pixels
//   (fx x/z + cx, fy y/z + cy) plus an optional offset; EWA covariance
//   cov2d = J R Sigma R^T J^T + 0.3 I with J evaluated at the frustum-clamped (1.3x) x/z, y/z;
//   culled when det(cov2d) <= 0; pixel (i, j) sampled at (j + 0.5, i + 0.5);
//   alpha = min(0.99, o exp(-0.5 d^T cov2d^-1 d)); alphas < 1/255 skipped; blending stops
//   before the Gaussian that would bring the transmittance below 1e-4.
// Colours are given per Gaussian, shared by the cameras of a launch or per camera.
// Antialiased mode (gsplat's rasterize_mode="antialiased"; Camera::antialiased): the opacity
// is multiplied by sqrt(det(cov2d - 0.3 I) / det(cov2d)), i.e. by the ratio of the
// undilated to the dilated determinant (0 when the undilated one is <= 0).
// A Gaussian is binned to the tiles of the axis-aligned box of the ellipse where
// o exp(power) >= 1/255 (half extents sqrt(2 ln(255 o) cov2d_xx), sqrt(2 ln(255 o) cov2d_yy))
// widened by BIN_MARGIN pixels, so the tiled result equals the dense reference.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define SJ_HD __host__ __device__ __forceinline__
#else
#define SJ_HD inline
#endif

namespace sj {

constexpr float NEAR_PLANE = 0.2f;
constexpr float ALPHA_MIN = 1.0f / 255.0f;
constexpr float ALPHA_MAX = 0.99f;
constexpr float T_MIN = 1e-4f;
constexpr float DILATION = 0.3f;
constexpr float BIN_MARGIN = 0.25f;  // pixels added to the opacity-aware extent (float rounding is ~1e-5 px)
constexpr int TILE = 16;

// Per-Gaussian data the blending needs, in this order: mean2d x, y; conic A, B, C (inverse
// cov2d = [[A, B], [B, C]]); opacity; colour r, g, b.
constexpr int GSTRIDE = 9;
// Per-Gaussian screen-space gradient layout: d mean2d x, y; d A, B, C; d opacity; d r, g, b.
constexpr int GGRAD = 9;

struct Camera {
  float R[9];  // row-major world-to-camera
  float t[3];
  float fx, fy, cx, cy;
  int width, height;
  int antialiased;  // the render mode (the same for every camera of a launch), carried here for the math
};

SJ_HD int tiles_x(const Camera& c) { return (c.width + TILE - 1) / TILE; }
SJ_HD int tiles_y(const Camera& c) { return (c.height + TILE - 1) / TILE; }

// Result of projecting one Gaussian into one camera.
struct Projected {
  float mx, my;     // mean in pixels (offset included)
  float A, B, C;    // conic
  float depth;      // camera-space z
  float opacity;    // opacity used for blending (times the antialiasing compensation)
  float rx, ry;     // half extents (pixels) of the box holding every pixel where alpha >= 1/255
  int tx0, ty0, tx1, ty1;  // tile rectangle [tx0, tx1) x [ty0, ty1); empty when culled
};

SJ_HD float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

// Rotation matrix (row-major) of a unit (w, x, y, z) quaternion.
SJ_HD void quat_to_rotmat(const float q[4], float M[9]) {
  const float w = q[0], x = q[1], y = q[2], z = q[3];
  M[0] = 1.f - 2.f * (y * y + z * z); M[1] = 2.f * (x * y - w * z);       M[2] = 2.f * (x * z + w * y);
  M[3] = 2.f * (x * y + w * z);       M[4] = 1.f - 2.f * (x * x + z * z); M[5] = 2.f * (y * z - w * x);
  M[6] = 2.f * (x * z - w * y);       M[7] = 2.f * (y * z + w * x);       M[8] = 1.f - 2.f * (x * x + y * y);
}

// Intermediates of the projection shared by the forward and the backward.
struct ProjFwd {
  float p[3];      // camera-space mean
  float z;
  float txc, tyc;  // clamped z * x/z and z * y/z
  bool clip_x, clip_y;
  float lim_x, lim_y;  // the active limit when clipped (signed)
  float J[6];      // 2x3 row-major
  float T[6];      // J R
  float qn[4];     // normalised quaternion
  float qnorm;
  float Rq[9];
  float Mq[9];     // Rq diag(s)
  float Sig[9];    // Mq Mq^T
  float a, b, c;   // cov2d incl. dilation
  float det;
  float det0;      // det(cov2d - DILATION I) (antialiased mode only)
  float comp;      // opacity compensation sqrt(det0 / det) (antialiased), else 1
};

// Projection forward up to the 2D covariance. Returns false when culled (behind the near
// plane or det <= 0).
SJ_HD bool project_core(const float* m, const float* s, const float* q, const Camera& cam, ProjFwd& f) {
  const float* R = cam.R;
  for (int i = 0; i < 3; ++i) f.p[i] = R[3 * i] * m[0] + R[3 * i + 1] * m[1] + R[3 * i + 2] * m[2] + cam.t[i];
  f.z = f.p[2];
  if (!(f.z > NEAR_PLANE)) return false;
  const float z = f.z;
  const float tan_x = 0.5f * cam.width / cam.fx, tan_y = 0.5f * cam.height / cam.fy;
  const float lxp = (cam.width - cam.cx) / cam.fx + 0.3f * tan_x, lxn = cam.cx / cam.fx + 0.3f * tan_x;
  const float lyp = (cam.height - cam.cy) / cam.fy + 0.3f * tan_y, lyn = cam.cy / cam.fy + 0.3f * tan_y;
  const float ux = f.p[0] / z, uy = f.p[1] / z;
  f.clip_x = ux < -lxn || ux > lxp;
  f.clip_y = uy < -lyn || uy > lyp;
  f.lim_x = ux < -lxn ? -lxn : lxp;
  f.lim_y = uy < -lyn ? -lyn : lyp;
  f.txc = z * clampf(ux, -lxn, lxp);
  f.tyc = z * clampf(uy, -lyn, lyp);
  f.J[0] = cam.fx / z; f.J[1] = 0.f; f.J[2] = -cam.fx * f.txc / (z * z);
  f.J[3] = 0.f; f.J[4] = cam.fy / z; f.J[5] = -cam.fy * f.tyc / (z * z);
  for (int r = 0; r < 2; ++r)
    for (int k = 0; k < 3; ++k)
      f.T[3 * r + k] = f.J[3 * r] * R[k] + f.J[3 * r + 1] * R[3 + k] + f.J[3 * r + 2] * R[6 + k];
  f.qnorm = sqrtf(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
  for (int i = 0; i < 4; ++i) f.qn[i] = q[i] / f.qnorm;
  quat_to_rotmat(f.qn, f.Rq);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) f.Mq[3 * i + j] = f.Rq[3 * i + j] * s[j];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      f.Sig[3 * i + j] = f.Mq[3 * i] * f.Mq[3 * j] + f.Mq[3 * i + 1] * f.Mq[3 * j + 1] + f.Mq[3 * i + 2] * f.Mq[3 * j + 2];
  // cov2d entries (0,0), (0,1), (1,1) of T Sig T^T
  float TS[6];
  for (int r = 0; r < 2; ++r)
    for (int k = 0; k < 3; ++k)
      TS[3 * r + k] = f.T[3 * r] * f.Sig[k] + f.T[3 * r + 1] * f.Sig[3 + k] + f.T[3 * r + 2] * f.Sig[6 + k];
  f.a = TS[0] * f.T[0] + TS[1] * f.T[1] + TS[2] * f.T[2] + DILATION;
  f.b = TS[0] * f.T[3] + TS[1] * f.T[4] + TS[2] * f.T[5];
  f.c = TS[3] * f.T[3] + TS[4] * f.T[4] + TS[5] * f.T[5] + DILATION;
  f.det = f.a * f.c - f.b * f.b;
  f.det0 = 0.f;
  f.comp = 1.f;
  if (cam.antialiased) {
    f.det0 = (f.a - DILATION) * (f.c - DILATION) - f.b * f.b;
    f.comp = f.det0 > 0.f && f.det > 0.f ? sqrtf(f.det0 / f.det) : 0.f;
  }
  return f.det > 0.f;
}

// Full projection of one Gaussian: mean2d, conic, depth, blending opacity and tile rectangle.
// `off` is the 2D offset added to the mean (may be null). Gaussians that are culled or can
// never reach alpha 1/255 (blending opacity < 1/255) get an empty tile rectangle.
SJ_HD void project_gaussian(const float* m, const float* s, const float* q, float opacity, const float* off,
                           const Camera& cam, Projected& out) {
  out.tx0 = out.ty0 = out.tx1 = out.ty1 = 0;
  out.mx = out.my = out.A = out.B = out.C = 0.f;
  out.depth = out.rx = out.ry = 0.f;
  out.opacity = opacity;
  // a Gaussian with opacity < 1/255 never reaches alpha 1/255: not binned (cheap early out,
  // e.g. for inactive slots of a fixed-capacity buffer)
  if (!(opacity >= ALPHA_MIN)) return;
  ProjFwd f;
  if (!project_core(m, s, q, cam, f)) return;
  if (cam.antialiased) {  // the compensation is <= 1: the early out above stays valid
    opacity *= f.comp;
    out.opacity = opacity;
    if (!(opacity >= ALPHA_MIN)) return;
  }
  out.depth = f.z;
  out.A = f.c / f.det;
  out.B = -f.b / f.det;
  out.C = f.a / f.det;
  out.mx = cam.fx * f.p[0] / f.z + cam.cx;
  out.my = cam.fy * f.p[1] / f.z + cam.cy;
  if (off) { out.mx += off[0]; out.my += off[1]; }
  // o exp(power) >= 1/255  <=>  d^T cov^-1 d <= 2 ln(255 o); the ellipse's x half extent is
  // sqrt(k cov_xx), y half extent sqrt(k cov_yy).
  const float k = 2.f * logf(255.f * opacity);
  const float rx = sqrtf(fmaxf(k * f.a, 0.f)) + BIN_MARGIN;
  const float ry = sqrtf(fmaxf(k * f.c, 0.f)) + BIN_MARGIN;
  out.rx = rx;
  out.ry = ry;
  // pixel centres j + 0.5 within [mx - rx, mx + rx]
  const float ntx = (float)tiles_x(cam), nty = (float)tiles_y(cam);
  const float jx0 = floorf((out.mx - rx - 0.5f) / TILE), jx1 = floorf((out.mx + rx - 0.5f) / TILE) + 1.f;
  const float jy0 = floorf((out.my - ry - 0.5f) / TILE), jy1 = floorf((out.my + ry - 0.5f) / TILE) + 1.f;
  const float x0 = clampf(jx0, 0.f, ntx), x1 = clampf(jx1, 0.f, ntx);
  const float y0 = clampf(jy0, 0.f, nty), y1 = clampf(jy1, 0.f, nty);
  if (!(x0 < x1 && y0 < y1)) return;  // also catches NaN
  out.tx0 = (int)x0; out.tx1 = (int)x1; out.ty0 = (int)y0; out.ty1 = (int)y1;
}

SJ_HD int tile_count(const Projected& p) { return (p.tx1 - p.tx0) * (p.ty1 - p.ty0); }

// Sort key within a tile: depth bits (positive floats order like their bit patterns) then
// the Gaussian index, so ties keep the lower index first like the reference's stable sort.
SJ_HD uint64_t depth_key(float depth, uint32_t index) {
  union { float f; uint32_t u; } v;
  v.f = depth;
  return ((uint64_t)v.u << 32) | (uint64_t)index;
}

// ------------------------------------------------------------------ blending, forward
// One pixel's front-to-back state.
struct FwdState {
  float T;
  float rgb[3];
  int n;  // number of list entries processed (last contributor + 1)
  bool done;
};

SJ_HD void fwd_init(FwdState& s) { s.T = 1.f; s.rgb[0] = s.rgb[1] = s.rgb[2] = 0.f; s.n = 0; s.done = false; }

// Alpha of Gaussian g (GSTRIDE floats) at pixel centre (px, py); 0 when below 1/255.
SJ_HD float gauss_alpha(const float* g, float px, float py) {
  const float dx = px - g[0], dy = py - g[1];
  const float power = -0.5f * (g[2] * dx * dx + g[4] * dy * dy) - g[3] * dx * dy;
  const float alpha = fminf(ALPHA_MAX, g[5] * expf(power));
  return alpha >= ALPHA_MIN ? alpha : 0.f;
}

// A conservative pre-test the drivers may use to skip the exponential: alpha can only reach
// 1/255 when power >= ln(1/(255 o)); the threshold ln(1/(255 o)) - 1e-3 leaves a margin far
// above float rounding, so skipping never changes the result.
SJ_HD float skip_threshold(float opacity) { return logf(ALPHA_MIN / opacity) - 1e-3f; }

// Blend list entry `i` (data g) into the pixel. Returns false once the pixel is saturated
// (the Gaussian that would bring T below T_MIN is not blended and ends the walk).
SJ_HD bool fwd_step(FwdState& s, const float* g, float px, float py, int i) {
  const float alpha = gauss_alpha(g, px, py);
  if (alpha == 0.f) return true;
  const float t_next = s.T * (1.f - alpha);
  if (t_next < T_MIN) { s.done = true; return false; }
  const float w = alpha * s.T;
  s.rgb[0] += w * g[6]; s.rgb[1] += w * g[7]; s.rgb[2] += w * g[8];
  s.T = t_next;
  s.n = i + 1;
  return true;
}

// ------------------------------------------------------------------ blending, backward
// One pixel's back-to-front state. gpix: dL/drgb; gT: dL/dT_final through the background
// and the alpha output (sum_c bg_c gpix_c - dL/dalpha).
struct BwdState {
  float T;        // transmittance before the entry being processed (recovered by division)
  float T_final;
  float acc[3];   // colour behind the current entry, normalised by the transmittance after it
  float gpix[3];
  float gT;
};

SJ_HD void bwd_init(BwdState& s, float T_final, const float gpix[3], const float bg[3], float galpha) {
  s.T = T_final;
  s.T_final = T_final;
  s.acc[0] = s.acc[1] = s.acc[2] = 0.f;
  for (int k = 0; k < 3; ++k) s.gpix[k] = gpix[k];
  s.gT = gpix[0] * bg[0] + gpix[1] * bg[1] + gpix[2] * bg[2] - galpha;
}

// Process entry g (walking back to front). Adds its screen-space gradient into out (GGRAD
// floats) and returns true if the entry contributed at this pixel.
SJ_HD bool bwd_step(BwdState& s, const float* g, float px, float py, float* out) {
  const float dx = px - g[0], dy = py - g[1];
  const float power = -0.5f * (g[2] * dx * dx + g[4] * dy * dy) - g[3] * dx * dy;
  const float G = expf(power);
  const float raw = g[5] * G;
  const float alpha = fminf(ALPHA_MAX, raw);
  if (!(alpha >= ALPHA_MIN)) return false;
  const float one_m = 1.f - alpha;
  s.T = s.T / one_m;  // transmittance before this entry
  const float w = alpha * s.T;
  float dalpha = 0.f;
  for (int k = 0; k < 3; ++k) {
    out[6 + k] += w * s.gpix[k];
    dalpha += (g[6 + k] - s.acc[k]) * s.gpix[k];
    s.acc[k] = alpha * g[6 + k] + one_m * s.acc[k];
  }
  dalpha = dalpha * s.T - s.T_final / one_m * s.gT;
  if (raw <= ALPHA_MAX) {  // min(0.99, .) passes the gradient only when not clamped
    out[5] += G * dalpha;
    const float gp = raw * dalpha;  // dL/dpower
    out[0] += gp * (g[2] * dx + g[3] * dy);
    out[1] += gp * (g[4] * dy + g[3] * dx);
    out[2] += -0.5f * gp * dx * dx;
    out[3] += -gp * dx * dy;
    out[4] += -0.5f * gp * dy * dy;
  }
  return true;
}

// ------------------------------------------------------------------ projection, backward
// Chains the screen-space gradient gs (GGRAD layout; mean2d, conic and blending-opacity
// entries used) through the projection of Gaussian (m, s, q, opacity) in camera `cam`.
// Adds dL/dmean, dL/dscale, dL/dquat, dL/dopacity into gm, gsc, gq, go when `gaussian_grads`,
// and always adds
// dL/dR (row-major 9), dL/dt and dL/d(fx, fy, cx, cy) into gR, gt, gK (type Acc: float or
// double accumulators).
template <typename Acc>
SJ_HD void project_bwd(const float* m, const float* s, const float* q, float opacity, const Camera& cam,
                       const float* gs, bool gaussian_grads, float* gm, float* gsc, float* gq, float* go, Acc* gR,
                       Acc* gt, Acc* gK) {
  ProjFwd f;
  if (!project_core(m, s, q, cam, f)) return;
  const float z = f.z, det = f.det, a = f.a, b = f.b, c = f.c;
  // conic (A, B, C) = (c, -b, a) / det  ->  d(a, b, c)
  const float gA = gs[2], gB = gs[3], gC = gs[4];
  const float d2 = det * det;
  float ga = gA * (-c * c / d2) + gB * (b * c / d2) + gC * (-b * b / d2);
  float gb = gA * (2.f * b * c / d2) + gB * (-(a * c + b * b) / d2) + gC * (2.f * a * b / d2);
  float gc = gA * (-b * b / d2) + gB * (a * b / d2) + gC * (-a * a / d2);
  if (cam.antialiased && f.comp > 0.f) {
    // blending opacity = opacity comp, comp = sqrt(det0 / det): d comp = d(det0 / det) / (2 comp)
    const float k = gs[5] * opacity * 0.5f / (f.comp * d2);
    ga += k * ((c - DILATION) * det - f.det0 * c);
    gc += k * ((a - DILATION) * det - f.det0 * a);
    gb += k * 2.f * b * (f.det0 - det);
  }
  // cov2d entries picked from T Sig T^T: dL/dcov2d = [[ga, gb], [0, gc]]; Gsym = G + G^T
  const float Gs[4] = {2.f * ga, gb, gb, 2.f * gc};
  // dL/dT = Gsym T Sig  (2x3)
  float TS[6];
  for (int r = 0; r < 2; ++r)
    for (int k = 0; k < 3; ++k)
      TS[3 * r + k] = f.T[3 * r] * f.Sig[k] + f.T[3 * r + 1] * f.Sig[3 + k] + f.T[3 * r + 2] * f.Sig[6 + k];
  float gT[6];
  for (int r = 0; r < 2; ++r)
    for (int k = 0; k < 3; ++k) gT[3 * r + k] = Gs[2 * r] * TS[k] + Gs[2 * r + 1] * TS[3 + k];
  // T = J R: dJ = dT R^T, dR += J^T dT
  const float* R = cam.R;
  float gJ[6];
  for (int r = 0; r < 2; ++r)
    for (int k = 0; k < 3; ++k)
      gJ[3 * r + k] = gT[3 * r] * R[3 * k] + gT[3 * r + 1] * R[3 * k + 1] + gT[3 * r + 2] * R[3 * k + 2];
  for (int i = 0; i < 3; ++i)
    for (int k = 0; k < 3; ++k) gR[3 * i + k] += (Acc)(f.J[i] * gT[k] + f.J[3 + i] * gT[3 + k]);
  // J entries -> z, clamped tx, ty
  float gp[3] = {0.f, 0.f, 0.f};
  const float z2 = z * z, z3 = z2 * z;
  float gz = gJ[0] * (-cam.fx / z2) + gJ[2] * (2.f * cam.fx * f.txc / z3) + gJ[4] * (-cam.fy / z2) +
             gJ[5] * (2.f * cam.fy * f.tyc / z3);
  const float gtx = gJ[2] * (-cam.fx / z2), gty = gJ[5] * (-cam.fy / z2);
  if (f.clip_x) gz += gtx * f.lim_x; else gp[0] += gtx;
  if (f.clip_y) gz += gty * f.lim_y; else gp[1] += gty;
  // intrinsics: J's explicit fx, fy; the clamp limits (both sides scale as 1/fx and move
  // with -cx/fx); the projected mean
  float gfx = gJ[0] / z - gJ[2] * f.txc / z2 + gs[0] * f.p[0] / z;
  float gfy = gJ[4] / z - gJ[5] * f.tyc / z2 + gs[1] * f.p[1] / z;
  float gcx = gs[0], gcy = gs[1];
  if (f.clip_x) { gfx += gtx * (-z * f.lim_x / cam.fx); gcx += gtx * (-z / cam.fx); }
  if (f.clip_y) { gfy += gty * (-z * f.lim_y / cam.fy); gcy += gty * (-z / cam.fy); }
  gK[0] += (Acc)gfx; gK[1] += (Acc)gfy; gK[2] += (Acc)gcx; gK[3] += (Acc)gcy;
  // mean2d = (fx x/z + cx, fy y/z + cy)
  gp[0] += gs[0] * cam.fx / z;
  gp[1] += gs[1] * cam.fy / z;
  gz += -gs[0] * cam.fx * f.p[0] / z2 - gs[1] * cam.fy * f.p[1] / z2;
  gp[2] += gz;
  // p = R m + t
  for (int i = 0; i < 3; ++i) {
    gt[i] += (Acc)gp[i];
    for (int k = 0; k < 3; ++k) gR[3 * i + k] += (Acc)(gp[i] * m[k]);
  }
  if (!gaussian_grads) return;
  go[0] += gs[5] * f.comp;
  for (int k = 0; k < 3; ++k) gm[k] += R[k] * gp[0] + R[3 + k] * gp[1] + R[6 + k] * gp[2];
  // dL/dSig = T^T G T (only the symmetric part matters): dL/dMq = T^T Gsym T Mq
  float GT2[6];  // Gsym T (2x3)
  for (int r = 0; r < 2; ++r)
    for (int k = 0; k < 3; ++k) GT2[3 * r + k] = Gs[2 * r] * f.T[k] + Gs[2 * r + 1] * f.T[3 + k];
  float W[9];  // T^T Gsym T
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) W[3 * i + j] = f.T[i] * GT2[j] + f.T[3 + i] * GT2[3 + j];
  float gM[9];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      gM[3 * i + j] = W[3 * i] * f.Mq[j] + W[3 * i + 1] * f.Mq[3 + j] + W[3 * i + 2] * f.Mq[6 + j];
  // Mq = Rq diag(s)
  float gRq[9];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) gRq[3 * i + j] = gM[3 * i + j] * s[j];
  for (int j = 0; j < 3; ++j) gsc[j] += gM[j] * f.Rq[j] + gM[3 + j] * f.Rq[3 + j] + gM[6 + j] * f.Rq[6 + j];
  // Rq(qn)
  const float w = f.qn[0], x = f.qn[1], y = f.qn[2], zq = f.qn[3];
  float gqn[4];
  gqn[0] = 2.f * (-zq * gRq[1] + y * gRq[2] + zq * gRq[3] - x * gRq[5] - y * gRq[6] + x * gRq[7]);
  gqn[1] = 2.f * (y * gRq[1] + zq * gRq[2] + y * gRq[3] - 2.f * x * gRq[4] - w * gRq[5] + zq * gRq[6] + w * gRq[7] -
                  2.f * x * gRq[8]);
  gqn[2] = 2.f * (-2.f * y * gRq[0] + x * gRq[1] + w * gRq[2] + x * gRq[3] + zq * gRq[5] - w * gRq[6] + zq * gRq[7] -
                  2.f * y * gRq[8]);
  gqn[3] = 2.f * (-2.f * zq * gRq[0] - w * gRq[1] + x * gRq[2] + w * gRq[3] - 2.f * zq * gRq[4] + y * gRq[5] +
                  x * gRq[6] + y * gRq[7]);
  // qn = q / |q|
  const float dot = gqn[0] * f.qn[0] + gqn[1] * f.qn[1] + gqn[2] * f.qn[2] + gqn[3] * f.qn[3];
  for (int i = 0; i < 4; ++i) gq[i] += (gqn[i] - f.qn[i] * dot) / f.qnorm;
}

}  // namespace sj
