#pragma once
// The mathematics of precise RoI pooling, shared by the CPU and the CUDA kernels.
//
// Feature pixel (row i, column j) sits at the point (x = j, y = i). The map is made continuous by
// bilinear interpolation, which is zero from one pixel outside the map on:
//
//     f(x, y) = sum_ij hat(x - j) hat(y - i) w[i][j],        hat(t) = max(0, 1 - |t|).
//
// A bin [x1, x2] x [y1, y2] pools the exact mean of f over it. Because f is a sum of separable
// terms, the double integral factorises into two one-dimensional integrals per pixel:
//
//     out = 1 / ((x2 - x1)(y2 - y1)) * sum_ij A(x1, x2; j) A(y1, y2; i) w[i][j],
//     A(a, b; p) = integral_a^b hat(u - p) du.
//
// Moving a bin edge changes the integral by the line integral of f along that edge
// (the fundamental theorem of calculus), which gives the edge gradient, for instance
//
//     d out / d x1 = out / (x2 - x1) - integral_{y1}^{y2} f(x1, y) dy / ((x2 - x1)(y2 - y1)),
//     integral_{y1}^{y2} f(x1, y) dy = sum_ij hat(x1 - j) A(y1, y2; i) w[i][j].

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define SODLIB_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SODLIB_HOST_DEVICE inline
#endif

namespace sodlib {
namespace prroi {

// hat(t) = max(0, 1 - |t|): the weight of a pixel at distance t in bilinear interpolation.
template <typename T>
SODLIB_HOST_DEVICE T hat(T t) {
  t = t < T(0) ? -t : t;
  return t < T(1) ? T(1) - t : T(0);
}

// A(a, b; p) = integral over [a, b] of hat(u - p) du, for a <= b.
// The hat is linear on [p - 1, p] and on [p, p + 1]; the integral of a linear piece is the length of
// the overlap times the value at its midpoint. Written this way a short interval loses no precision to
// cancellation (the difference of two antiderivatives would). Only minima and maxima, no branches: an empty
// overlap has length 0.
template <typename T>
SODLIB_HOST_DEVICE T hat_integral(T a, T b, int64_t p) {
  const T lo = a - static_cast<T>(p);
  const T hi = b - static_cast<T>(p);
  // rising piece on [-1, 0]: hat(t) = 1 + t
  T left = lo > T(-1) ? lo : T(-1);
  T right = hi < T(0) ? hi : T(0);
  const T rising = (right > left ? right - left : T(0)) * (T(1) + T(0.5) * (left + right));
  // falling piece on [0, 1]: hat(t) = 1 - t
  left = lo > T(0) ? lo : T(0);
  right = hi < T(1) ? hi : T(1);
  const T falling = (right > left ? right - left : T(0)) * (T(1) - T(0.5) * (left + right));
  return rising + falling;
}

// First pixel index whose hat overlaps [a, b] inside a map of `size` pixels (hat(u - p) > 0 needs
// p - 1 < u < p + 1, so p runs from floor(a) to ceil(b)).
template <typename T>
SODLIB_HOST_DEVICE int64_t first_pixel(T a) {
  const int64_t p = static_cast<int64_t>(floor(a));
  return p > 0 ? p : 0;
}

template <typename T>
SODLIB_HOST_DEVICE int64_t last_pixel(T b, int64_t size) {
  const int64_t p = static_cast<int64_t>(ceil(b));
  return p < size - 1 ? p : size - 1;
}

// Where one RoI lies on the feature map: its scaled top-left corner, its bin sizes, and whether it
// pools anything at all. Degenerate RoIs (x2 <= x1 or y2 <= y1, NaN included) and RoIs with a batch
// index outside [0, batch_size) are invalid: they pool 0 and receive zero gradients.
template <typename T>
struct RoiGeometry {
  int64_t batch;
  T x1, y1;          // scaled corner, feature-map coordinates
  T bin_w, bin_h;    // (x2 - x1) * spatial_scale / pooled_width, likewise for y
  bool valid;
};

template <typename T>
SODLIB_HOST_DEVICE RoiGeometry<T> roi_geometry(const T* roi, T spatial_scale, int64_t pooled_height,
                                               int64_t pooled_width, int64_t batch_size) {
  RoiGeometry<T> g;
  const T batch_value = roi[0];
  g.x1 = roi[1] * spatial_scale;
  g.y1 = roi[2] * spatial_scale;
  const T width = roi[3] * spatial_scale - g.x1;
  const T height = roi[4] * spatial_scale - g.y1;
  g.bin_w = width / static_cast<T>(pooled_width);
  g.bin_h = height / static_cast<T>(pooled_height);
  g.valid = width > T(0) && height > T(0) && batch_value >= T(0) &&
            batch_value < static_cast<T>(batch_size);
  g.batch = g.valid ? static_cast<int64_t>(batch_value) : 0;
  return g;
}

// Input channel that feeds output channel c at bin (ph, pw). Plain pooling reads channel c for every
// bin; position-sensitive pooling (R-FCN, torchvision's ps_roi_align layout) reads one channel per bin:
// (c * pooled_height + ph) * pooled_width + pw.
SODLIB_HOST_DEVICE int64_t input_channel(int64_t c, int64_t ph, int64_t pw, int64_t pooled_height,
                                         int64_t pooled_width, bool position_sensitive) {
  return position_sensitive ? (c * pooled_height + ph) * pooled_width + pw : c;
}

// The sizes of one call: RoIs K, input [N, C, H, W], output [K, C', kh, kw] (C' = C, or C / (kh kw) for
// position-sensitive pooling).
struct Shapes {
  int64_t rois, batch, in_channels, height, width, out_channels, pooled_height, pooled_width;
  bool position_sensitive;
  SODLIB_HOST_DEVICE int64_t bins() const { return pooled_height * pooled_width; }
  // offset of the input plane that output channel c reads at bin (ph, pw) of image n
  SODLIB_HOST_DEVICE int64_t plane_offset(int64_t n, int64_t c, int64_t ph, int64_t pw) const {
    return (n * in_channels + input_channel(c, ph, pw, pooled_height, pooled_width, position_sensitive)) *
           height * width;
  }
};

}  // namespace prroi
}  // namespace sodlib
