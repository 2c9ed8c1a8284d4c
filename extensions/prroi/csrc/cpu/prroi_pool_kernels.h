// CPU kernels of PrRoI and PS-PrRoI pooling (forward, feature backward, RoI-coordinate backward).
//
// Compiled twice, into the namespace SODLIB_CPU_NAMESPACE of the including file: once for any x86-64 or
// other CPU (prroi_pool_kernels_baseline.cpp) and once for CPUs with AVX2 and FMA
// (prroi_pool_kernels_avx2.cpp); prroi_pool_cpu.cpp picks one at run time and registers it.
//
// The integral over a bin factorises into one weight per pixel column and one per pixel row
// (see prroi_math.h). For each RoI the kernels first list, along each axis, the pixels under every bin
// with their weights A(lo, hi; p) ("taps"), once, and reuse them for every channel.
// PS-PrRoI reads one channel per bin: per bin, the taps are multiplied out into (pixel, weight) pairs.
// Plain PrRoI shares the channels between bins: two separable passes over blocks of channels (below).
// Half and bfloat16 inputs are read as they are and accumulated in float32 (at::opmath_type).

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "prroi_math.h"
#include "prroi_pool.h"
#include "cpu/prroi_pool_cpu.h"

#ifndef SODLIB_CPU_NAMESPACE
#error "define SODLIB_CPU_NAMESPACE before including prroi_pool_kernels.h"
#endif

namespace sodlib {
namespace prroi {
namespace SODLIB_CPU_NAMESPACE {
namespace {

// Consecutive pixels first, first + 1, ... along one axis with their weights.
template <typename T>
struct Taps {
  int64_t first;
  int64_t count;
  const T* weight;
};

// For the n bins (or the n + 1 bin edges) of one RoI along one axis: which pixels each touches and
// with what weight. Bin b spans [start + b * step, start + (b + 1) * step].
template <typename T>
class AxisTaps {
 public:
  // weight of pixel p under bin b: A(lo_b, hi_b; p), the integral of its hat over the bin
  void fill_bins(T start, T step, int64_t n, int64_t size) {
    reset(n);
    for (int64_t b = 0; b < n; ++b) {
      const T lo = start + static_cast<T>(b) * step;
      const T hi = start + static_cast<T>(b + 1) * step;
      first_[b] = first_pixel(lo);
      const int64_t last = last_pixel(hi, size);
      for (int64_t p = first_[b]; p <= last; ++p) weight_.push_back(hat_integral(lo, hi, p));
      offset_[b + 1] = static_cast<int64_t>(weight_.size());
    }
  }

  // weight of pixel p at edge e = start + e * step: hat(edge - p), the interpolation weight
  void fill_edges(T start, T step, int64_t n_bins, int64_t size) {
    reset(n_bins + 1);
    for (int64_t e = 0; e <= n_bins; ++e) {
      const T edge = start + static_cast<T>(e) * step;
      first_[e] = first_pixel(edge);
      const int64_t last = std::min(last_pixel(edge, size), first_[e] + 1);
      for (int64_t p = first_[e]; p <= last; ++p) weight_.push_back(hat(edge - static_cast<T>(p)));
      offset_[e + 1] = static_cast<int64_t>(weight_.size());
    }
  }

  // multiply every weight by factor (the 1 / bin area of a mean)
  void scale(T factor) {
    for (T& weight : weight_) weight *= factor;
  }

  Taps<T> operator[](int64_t b) const {
    return Taps<T>{first_[b], offset_[b + 1] - offset_[b], weight_.data() + offset_[b]};
  }

 private:
  void reset(int64_t n) {
    first_.assign(n, 0);
    offset_.assign(n + 1, 0);
    weight_.clear();
  }
  std::vector<int64_t> first_;
  std::vector<int64_t> offset_;
  std::vector<T> weight_;
};

// Both axes' bin taps of one RoI (geometry g): columns along x, rows along y.
template <typename T>
void fill_bin_taps(const RoiGeometry<T>& g, const Shapes& s, AxisTaps<T>& columns, AxisTaps<T>& rows) {
  columns.fill_bins(g.x1, g.bin_w, s.pooled_width, s.width);
  rows.fill_bins(g.y1, g.bin_h, s.pooled_height, s.height);
}

// The pixels under one bin (or along one bin edge) of a feature plane, as flat offsets into the plane
// with the product of their row and column weights, times a common factor. Built once per bin and
// RoI, then applied to every channel.
template <typename T>
class PlaneTaps {
 public:
  void fill(Taps<T> rows, Taps<T> cols, int64_t width, T factor) {
    offset_.clear();
    weight_.clear();
    for (int64_t r = 0; r < rows.count; ++r)
      for (int64_t c = 0; c < cols.count; ++c) {
        offset_.push_back((rows.first + r) * width + cols.first + c);
        weight_.push_back(factor * rows.weight[r] * cols.weight[c]);
      }
  }

  // sum over taps t of weight[t] * plane[offset[t]]
  template <typename scalar_t>
  T dot(const scalar_t* plane) const {
    T total = 0;
    for (size_t t = 0; t < offset_.size(); ++t) total += weight_[t] * static_cast<T>(plane[offset_[t]]);
    return total;
  }

 private:
  std::vector<int64_t> offset_;
  std::vector<T> weight_;
};

// Work items per task below which at::parallel_for stays on one thread (ATen's own grain is 32768
// elements); the kernels count one item per pooled output.
constexpr int64_t kGrainOutputs = 32768;

int64_t grain(int64_t outputs_per_item) { return std::max<int64_t>(1, kGrainOutputs / std::max<int64_t>(1, outputs_per_item)); }

// PS-PrRoI forward: output[k, c, ph, pw] = sum over the bin's pixels of A_y(i) A_x(j) w[c'][i][j] / bin area,
// c' = (c * kh + ph) * kw + pw. Every bin reads its own channels, so the work is per bin and channel.
template <typename scalar_t, typename acc_t>
void ps_forward_kernel(const scalar_t* input, const acc_t* rois, acc_t scale, const Shapes& s, scalar_t* output) {
  at::parallel_for(0, s.rois, grain(s.out_channels * s.bins()), [&](int64_t begin, int64_t end) {
    AxisTaps<acc_t> columns, rows;
    PlaneTaps<acc_t> bin;
    for (int64_t k = begin; k < end; ++k) {
      scalar_t* out = output + k * s.out_channels * s.bins();
      const auto g = roi_geometry(rois + 5 * k, scale, s.pooled_height, s.pooled_width, s.batch);
      if (!g.valid) {
        std::fill(out, out + s.out_channels * s.bins(), scalar_t(0));
        continue;
      }
      fill_bin_taps(g, s, columns, rows);
      const acc_t inv_area = acc_t(1) / (g.bin_w * g.bin_h);
      for (int64_t ph = 0; ph < s.pooled_height; ++ph)
        for (int64_t pw = 0; pw < s.pooled_width; ++pw) {
          bin.fill(rows[ph], columns[pw], s.width, inv_area);
          for (int64_t c = 0; c < s.out_channels; ++c)
            out[(c * s.pooled_height + ph) * s.pooled_width + pw] =
                static_cast<scalar_t>(bin.dot(input + s.plane_offset(g.batch, c, ph, pw)));
        }
    }
  });
}

// One axis's bin taps of every RoI of a call, listed bin by bin: list b holds bin b of RoI 0, 1, ..., so that
// a kernel visiting one bin of every RoI in turn reads its taps in order.
template <typename T>
class TapsByBin {
 public:
  void reset(int64_t bins) {
    first_.assign(bins, {});
    offset_.assign(bins, {0});
    weight_.assign(bins, {});
  }

  // append the next RoI's bins; a RoI that pools nothing gets bins without pixels (taps == nullptr)
  void add(const AxisTaps<T>* taps) {
    for (size_t b = 0; b < first_.size(); ++b) {
      if (taps != nullptr) {
        const Taps<T> bin = (*taps)[b];
        first_[b].push_back(bin.first);
        weight_[b].insert(weight_[b].end(), bin.weight, bin.weight + bin.count);
      } else {
        first_[b].push_back(0);
      }
      offset_[b].push_back(static_cast<int64_t>(weight_[b].size()));
    }
  }

  // bin b of RoI k
  Taps<T> operator()(int64_t b, int64_t k) const {
    return Taps<T>{first_[b][k], offset_[b][k + 1] - offset_[b][k], weight_[b].data() + offset_[b][k]};
  }

 private:
  std::vector<std::vector<int64_t>> first_, offset_;
  std::vector<std::vector<T>> weight_;
};

// Both axes' bin taps of every RoI of a call (rows divided by the bin area), and each RoI's image
// (batch[k] < 0: RoI k pools nothing).
template <typename T>
struct AllRoiTaps {
  TapsByBin<T> columns, rows;
  std::vector<int64_t> batch;

  AllRoiTaps(const T* rois, T scale, const Shapes& s) : batch(s.rois, -1) {
    columns.reset(s.pooled_width);
    rows.reset(s.pooled_height);
    AxisTaps<T> roi_columns, roi_rows;
    for (int64_t k = 0; k < s.rois; ++k) {
      const auto g = roi_geometry(rois + 5 * k, scale, s.pooled_height, s.pooled_width, s.batch);
      if (g.valid) {
        batch[k] = g.batch;
        fill_bin_taps(g, s, roi_columns, roi_rows);
        roi_rows.scale(T(1) / (g.bin_w * g.bin_h));
      }
      columns.add(g.valid ? &roi_columns : nullptr);
      rows.add(g.valid ? &roi_rows : nullptr);
    }
  }
};

// grad_input[n, c', i, j] = sum over the RoIs k of image n of grad_output[k, c, ph, pw] * A_y(ph; i) * A_x(pw; j)
// / bin area, where c' = (c * kh + ph) * kw + pw. Each RoI has exactly one bin in each input channel c', so
// the kernel takes the channels in turn and adds every RoI's bin to the channel's plane, which stays in
// cache meanwhile (RoI by RoI, each RoI would touch all C' planes, far more than a cache holds). Threads
// split the input channels; each plane is zeroed right before its sums (grad_input may start uninitialised).
template <typename scalar_t, typename acc_t>
void ps_backward_input_kernel(const scalar_t* grad_output, const acc_t* rois, acc_t scale, const Shapes& s,
                              acc_t* grad_input) {
  const AllRoiTaps<acc_t> taps(rois, scale, s);
  const int64_t bins = s.bins(), plane_size = s.height * s.width;
  at::parallel_for(0, s.in_channels, grain(s.rois), [&](int64_t begin, int64_t end) {
    for (int64_t channel = begin; channel < end; ++channel) {
      const int64_t c = channel / bins, bin = channel % bins, ph = bin / s.pooled_width, pw = bin % s.pooled_width;
      for (int64_t n = 0; n < s.batch; ++n) {
        acc_t* plane = grad_input + (n * s.in_channels + channel) * plane_size;
        std::fill(plane, plane + plane_size, acc_t(0));
      }
      for (int64_t k = 0; k < s.rois; ++k) {
        const acc_t grad = static_cast<acc_t>(grad_output[(k * s.out_channels + c) * bins + bin]);
        if (taps.batch[k] < 0 || grad == acc_t(0)) continue;
        acc_t* plane = grad_input + (taps.batch[k] * s.in_channels + channel) * plane_size;
        const Taps<acc_t> rows = taps.rows(ph, k), columns = taps.columns(pw, k);
        for (int64_t i = 0; i < rows.count; ++i) {
          const acc_t weight = grad * rows.weight[i];
          acc_t* row = plane + (rows.first + i) * s.width + columns.first;
          for (int64_t j = 0; j < columns.count; ++j) row[j] += weight * columns.weight[j];
        }
      }
    }
  });
}

// grad_rois[k] = (0, d/dx1, d/dy1, d/dx2, d/dy2) of sum(grad_output * output), one RoI per task:
// each RoI's four sums are accumulated locally and written once.
template <typename scalar_t, typename acc_t>
void ps_backward_rois_kernel(const scalar_t* grad_output, const scalar_t* input, const acc_t* rois,
                          const scalar_t* output, acc_t scale, const Shapes& s, acc_t* grad_rois) {
  at::parallel_for(0, s.rois, grain(s.out_channels * s.bins()), [&](int64_t begin, int64_t end) {
    AxisTaps<acc_t> columns, rows, column_edges, row_edges;
    PlaneTaps<acc_t> left, right, top, bottom;
    for (int64_t k = begin; k < end; ++k) {
      acc_t* grad_roi = grad_rois + 5 * k;
      std::fill(grad_roi, grad_roi + 5, acc_t(0));
      const auto g = roi_geometry(rois + 5 * k, scale, s.pooled_height, s.pooled_width, s.batch);
      if (!g.valid) continue;
      fill_bin_taps(g, s, columns, rows);
      column_edges.fill_edges(g.x1, g.bin_w, s.pooled_width, s.width);
      row_edges.fill_edges(g.y1, g.bin_h, s.pooled_height, s.height);
      const acc_t inv_area = acc_t(1) / (g.bin_w * g.bin_h);
      acc_t d_x1 = 0, d_y1 = 0, d_x2 = 0, d_y2 = 0;  // w.r.t. the scaled corners
      for (int64_t ph = 0; ph < s.pooled_height; ++ph)
        for (int64_t pw = 0; pw < s.pooled_width; ++pw) {
          // line integrals of f along the bin's left, right, top and bottom edges, over the bin area
          left.fill(rows[ph], column_edges[pw], s.width, inv_area);
          right.fill(rows[ph], column_edges[pw + 1], s.width, inv_area);
          top.fill(row_edges[ph], columns[pw], s.width, inv_area);
          bottom.fill(row_edges[ph + 1], columns[pw], s.width, inv_area);
          // bin edges move with the RoI corners: left = x1 + pw / kw * (x2 - x1), right likewise with pw + 1
          const acc_t fl = static_cast<acc_t>(pw) / s.pooled_width;
          const acc_t fr = static_cast<acc_t>(pw + 1) / s.pooled_width;
          const acc_t ft = static_cast<acc_t>(ph) / s.pooled_height;
          const acc_t fb = static_cast<acc_t>(ph + 1) / s.pooled_height;
          for (int64_t c = 0; c < s.out_channels; ++c) {
            const int64_t o = ((k * s.out_channels + c) * s.pooled_height + ph) * s.pooled_width + pw;
            const acc_t grad = static_cast<acc_t>(grad_output[o]);
            if (grad == acc_t(0)) continue;
            const acc_t out = static_cast<acc_t>(output[o]);
            const scalar_t* plane = input + s.plane_offset(g.batch, c, ph, pw);
            // derivative of the bin mean with respect to each of its edges (seed 000, eq. 7)
            const acc_t d_left = out / g.bin_w - left.dot(plane);
            const acc_t d_right = right.dot(plane) - out / g.bin_w;
            const acc_t d_top = out / g.bin_h - top.dot(plane);
            const acc_t d_bottom = bottom.dot(plane) - out / g.bin_h;
            d_x1 += grad * (d_left * (1 - fl) + d_right * (1 - fr));
            d_x2 += grad * (d_left * fl + d_right * fr);
            d_y1 += grad * (d_top * (1 - ft) + d_bottom * (1 - fb));
            d_y2 += grad * (d_top * ft + d_bottom * fb);
          }
        }
      grad_roi[1] = d_x1 * scale;
      grad_roi[2] = d_y1 * scale;
      grad_roi[3] = d_x2 * scale;
      grad_roi[4] = d_y2 * scale;
    }
  });
}

// ---------------------------------------------------------------------------------------------------
// Plain PrRoI pooling. Every bin of a RoI reads the same channels, so its integral is done in two passes
// whose 1-D weights A_y, A_x are computed once per RoI:
//
//     strip[ph][x][c] = sum_i A_y(ph; i) / area * w[c][i][x]     (rows first, at every column x of the RoI)
//     out[c][ph][pw]  = sum_j A_x(pw; j) * strip[ph][j][c]       (then each bin's few columns)
//
// Both passes run over channels innermost, kBlock channels at a time, on pixels copied into blocks
// [...][H][W][kBlock] (channels past C are 0): the whole map once, or each RoI's window (BlockedPixels),
// so that the innermost loops work on one vector of kBlock channels (the Channels type). The feature
// gradient is accumulated in the same layout and added back to grad_input (BlockedGradient).

constexpr int64_t kBlock = 8;

int64_t channel_blocks(int64_t channels) { return (channels + kBlock - 1) / kBlock; }

// The kBlock channels of one pixel as a GCC / Clang vector: updates written with it compile to vector
// instructions for any instruction set, where the same loops over an array are left to the vectoriser,
// which handles them differently from one build to the next.
template <typename T>
struct Channels {
  typedef T type __attribute__((vector_size(kBlock * sizeof(T))));
  // integers of T's size, for the lane indices of __builtin_shuffle
  typedef std::conditional_t<sizeof(T) == 8, int64_t, int32_t> lane_type;
  typedef lane_type lanes __attribute__((vector_size(kBlock * sizeof(T))));
};

// Whether this build has 256-bit vectors (the AVX2 build, which defines SODLIB_CPU_AVX2: GCC's target pragma
// does not define __AVX2__ in C++), where kBlock floats fill one register. Data then changes between the
// channel blocks' order and the tensors' by kBlock x kBlock transposes in registers (transpose() below: the
// map's copies in to_blocks and add_from_blocks, the pooled values in store_bins); with 128-bit vectors (SSE2,
// the baseline build) GCC splits their shuffles into many, and copying value by value is faster (measured).
#ifdef SODLIB_CPU_AVX2
constexpr bool kWideVectors = true;
#else
constexpr bool kWideVectors = false;
#endif

// The kBlock x kBlock matrix in v[0 .. kBlock) transposed in registers: v[r][c] becomes v[c][r].
// Three rounds of two-vector shuffles (interleave, pair up, swap halves), each an instruction or two on
// x86-64.
template <typename T>
__attribute__((always_inline)) inline void transpose(typename Channels<T>::type* v) {
  static_assert(kBlock == 8, "transpose is written for 8 lanes");
  using V = typename Channels<T>::type;
  using L = typename Channels<T>::lanes;
  V a[kBlock], b[kBlock];
  for (int r = 0; r < kBlock; r += 2) {  // interleave rows r and r + 1
    a[r] = __builtin_shuffle(v[r], v[r + 1], L{0, 8, 1, 9, 4, 12, 5, 13});
    a[r + 1] = __builtin_shuffle(v[r], v[r + 1], L{2, 10, 3, 11, 6, 14, 7, 15});
  }
  for (int r = 0; r < kBlock; r += 4)  // pair up the interleaved rows r, r + 2 and r + 1, r + 3
    for (int h = 0; h < 2; ++h) {
      b[r + 2 * h] = __builtin_shuffle(a[r + h], a[r + h + 2], L{0, 1, 8, 9, 4, 5, 12, 13});
      b[r + 2 * h + 1] = __builtin_shuffle(a[r + h], a[r + h + 2], L{2, 3, 10, 11, 6, 7, 14, 15});
    }
  for (int r = 0; r < 4; ++r) {  // low halves of rows r and r + 4, then their high halves
    v[r] = __builtin_shuffle(b[r], b[r + 4], L{0, 1, 2, 3, 8, 9, 10, 11});
    v[r + 4] = __builtin_shuffle(b[r], b[r + 4], L{4, 5, 6, 7, 12, 13, 14, 15});
  }
}

// the kBlock lanes of v to dst (converted to scalar_t)
template <typename T, typename scalar_t>
void store_lanes(const typename Channels<T>::type& v, scalar_t* dst) {
  if constexpr (std::is_same_v<T, scalar_t>) {
    std::memcpy(dst, &v, sizeof v);
  } else {
    for (int64_t l = 0; l < kBlock; ++l) dst[l] = static_cast<scalar_t>(v[l]);
  }
}

// blocks[n][b][y][x][c] = input[n][b * kBlock + c][y][x], 0 past the last channel. In the AVX2 build, kBlock
// pixels of the kBlock channels at a time are transposed in registers.
template <typename scalar_t, typename acc_t>
void to_blocks(const scalar_t* input, int64_t batch, int64_t channels, int64_t plane, acc_t* blocks) {
  const int64_t per_image = channel_blocks(channels);
  at::parallel_for(0, batch * per_image, grain(plane * kBlock), [&](int64_t begin, int64_t end) {
    for (int64_t nb = begin; nb < end; ++nb) {
      const int64_t n = nb / per_image, first_channel = (nb % per_image) * kBlock;
      const int64_t count = std::min(kBlock, channels - first_channel);
      const scalar_t* src = input + (n * channels + first_channel) * plane;  // channel c at src + c * plane
      acc_t* dst = blocks + nb * plane * kBlock;
      int64_t p = 0;
      if constexpr (kWideVectors) {
        typename Channels<acc_t>::type tile[kBlock];
        for (; p + kBlock <= plane; p += kBlock) {
          for (int64_t c = 0; c < kBlock; ++c) {
            tile[c] = typename Channels<acc_t>::type{};
            if (c >= count) continue;
            if constexpr (std::is_same_v<scalar_t, acc_t>) {
              std::memcpy(&tile[c], src + c * plane + p, sizeof tile[c]);
            } else {
              for (int64_t l = 0; l < kBlock; ++l) tile[c][l] = static_cast<acc_t>(src[c * plane + p + l]);
            }
          }
          transpose<acc_t>(tile);
          std::memcpy(dst + p * kBlock, tile, sizeof tile);
        }
      }
      for (; p < plane; ++p)
        for (int64_t c = 0; c < kBlock; ++c) dst[p * kBlock + c] = c < count ? static_cast<acc_t>(src[c * plane + p]) : acc_t(0);
    }
  });
}

// output[n][b * kBlock + c][y][x] += blocks[n][b][y][x][c]: to_blocks backwards, adding
template <typename acc_t>
void add_from_blocks(const acc_t* blocks, int64_t batch, int64_t channels, int64_t plane, acc_t* output) {
  const int64_t per_image = channel_blocks(channels);
  at::parallel_for(0, batch * per_image, grain(plane * kBlock), [&](int64_t begin, int64_t end) {
    for (int64_t nb = begin; nb < end; ++nb) {
      const int64_t n = nb / per_image, first_channel = (nb % per_image) * kBlock;
      const int64_t count = std::min(kBlock, channels - first_channel);
      const acc_t* src = blocks + nb * plane * kBlock;
      acc_t* dst = output + (n * channels + first_channel) * plane;  // channel c at dst + c * plane
      int64_t p = 0;
      if constexpr (kWideVectors) {
        typename Channels<acc_t>::type tile[kBlock], sum;
        for (; p + kBlock <= plane; p += kBlock) {
          std::memcpy(tile, src + p * kBlock, sizeof tile);
          transpose<acc_t>(tile);  // tile[c]: pixels p .. p + kBlock - 1 of channel c
          for (int64_t c = 0; c < count; ++c) {
            std::memcpy(&sum, dst + c * plane + p, sizeof sum);
            sum += tile[c];
            std::memcpy(dst + c * plane + p, &sum, sizeof sum);
          }
        }
      }
      for (; p < plane; ++p)
        for (int64_t c = 0; c < count; ++c) dst[c * plane + p] += src[p * kBlock + c];
    }
  });
}

// The pixels any bin of a RoI touches: rows y0 .. y0 + rows - 1, columns x0 .. x0 + cols - 1.
struct Extent {
  int64_t y0, x0, rows, cols;
};

template <typename G>
Extent roi_extent(const G& g, const Shapes& s) {
  // the RoI ends where its last bin ends, computed as in AxisTaps::fill_bins
  const auto y_end = g.y1 + static_cast<decltype(g.y1)>(s.pooled_height) * g.bin_h;
  const auto x_end = g.x1 + static_cast<decltype(g.x1)>(s.pooled_width) * g.bin_w;
  Extent e;
  e.y0 = first_pixel(g.y1);
  e.x0 = first_pixel(g.x1);
  e.rows = std::max<int64_t>(0, last_pixel(y_end, s.height) - e.y0 + 1);
  e.cols = std::max<int64_t>(0, last_pixel(x_end, s.width) - e.x0 + 1);
  return e;
}

// Rows lo .. hi - 1 of the feature map: the part of the feature gradient that one task of the plain kernel
// writes. rows(first, count) is the range of i in [0, count) with first + i in the band.
struct RowBand {
  int64_t lo, hi;
  std::pair<int64_t, int64_t> rows(int64_t first, int64_t count) const {
    return {std::max<int64_t>(0, lo - first), std::min(count, hi - first)};
  }
};

// Whether a RoI takes the small-RoI path of the plain kernels (see SmallRoi below): its pixels fit a
// kSmall x kSmall window.
constexpr int64_t kSmall = 4;

bool is_small(const Extent& e, const Shapes& s) {
  return e.rows <= kSmall && e.cols <= kSmall && s.height >= kSmall && s.width >= kSmall &&
         s.pooled_width <= kBlock;
}

// The first row (or column) of a small RoI's window whose pixels start at `first` on an axis of `size`
// pixels: the window is moved inside the map at the bottom and right borders.
int64_t small_window_first(int64_t first, int64_t size) { return std::min(first, size - kSmall); }

// The map rows a plain kernel reads for a RoI, and the feature gradient writes: its window's.
RowBand window_rows(const Extent& e, const Shapes& s) {
  if (!is_small(e, s)) return RowBand{e.y0, e.y0 + e.rows};
  const int64_t first = small_window_first(e.y0, s.height);
  return RowBand{first, first + kSmall};
}

// A RoI's pixels in one block of channels, whose rows are row_stride values apart (data points at (y0, x0)).
template <typename T>
struct Window {
  T* data;
  int64_t y0, x0, rows, cols, row_stride;
};

template <typename T>
Window<T> roi_window(T* blocks, int64_t batch, const Extent& e, int64_t block, const Shapes& s) {
  const int64_t image = batch * channel_blocks(s.out_channels) + block;
  return Window<T>{blocks + ((image * s.height + e.y0) * s.width + e.x0) * kBlock, e.y0, e.x0, e.rows, e.cols,
                   s.width * kBlock};
}

// Where the kernels find a RoI's pixels in blocks of channels. When the RoIs together cover at least the
// map's area (each pixel is then read at least once), the whole map is copied into blocks once per call
// (`blocks`); otherwise each RoI's window is copied when it is needed, so that a few small RoIs on a large
// map (an FPN's fine levels) cost their windows, not the map.
template <typename scalar_t, typename acc_t>
class BlockedPixels {
 public:
  BlockedPixels(const scalar_t* input, const acc_t* blocks, const Shapes& s) : input_(input), blocks_(blocks), s_(s) {}

  Window<const acc_t> window(int64_t batch, const Extent& e, int64_t block) {
    if (blocks_ != nullptr) return roi_window<const acc_t>(blocks_, batch, e, block, s_);
    buffer_.resize(e.rows * e.cols * kBlock);
    const int64_t channels = std::min(kBlock, s_.out_channels - block * kBlock);
    for (int64_t c = 0; c < kBlock; ++c) {
      const scalar_t* plane = input_ + ((batch * s_.in_channels + block * kBlock + c) * s_.height + e.y0) * s_.width + e.x0;
      for (int64_t y = 0; y < e.rows; ++y)
        for (int64_t x = 0; x < e.cols; ++x)
          buffer_[(y * e.cols + x) * kBlock + c] = c < channels ? static_cast<acc_t>(plane[y * s_.width + x]) : acc_t(0);
    }
    return Window<const acc_t>{buffer_.data(), e.y0, e.x0, e.rows, e.cols, e.cols * kBlock};
  }

 private:
  const scalar_t* input_;
  const acc_t* blocks_;
  const Shapes& s_;
  std::vector<acc_t> buffer_;
};

// Where the feature gradient of a RoI's window accumulates: in the blocked gradient of the whole map
// (`grad_blocks`, copied to grad_input at the end), or in a zeroed window that close() adds to grad_input.
template <typename acc_t>
class BlockedGradient {
 public:
  BlockedGradient(acc_t* grad_input, acc_t* grad_blocks, const Shapes& s)
      : grad_input_(grad_input), grad_blocks_(grad_blocks), s_(s) {}

  Window<acc_t> open(int64_t batch, const Extent& e, int64_t block) {
    if (grad_blocks_ != nullptr) return roi_window<acc_t>(grad_blocks_, batch, e, block, s_);
    buffer_.assign(e.rows * e.cols * kBlock, acc_t(0));
    return Window<acc_t>{buffer_.data(), e.y0, e.x0, e.rows, e.cols, e.cols * kBlock};
  }

  // add the window's rows in `band` to grad_input
  void close(int64_t batch, const Extent& e, int64_t block, const RowBand& band) {
    if (grad_blocks_ != nullptr) return;
    const int64_t channels = std::min(kBlock, s_.out_channels - block * kBlock);
    const auto [first, last] = band.rows(e.y0, e.rows);
    for (int64_t c = 0; c < channels; ++c) {
      acc_t* plane = grad_input_ + ((batch * s_.in_channels + block * kBlock + c) * s_.height + e.y0) * s_.width + e.x0;
      for (int64_t y = first; y < last; ++y)
        for (int64_t x = 0; x < e.cols; ++x) plane[y * s_.width + x] += buffer_[(y * e.cols + x) * kBlock + c];
    }
  }

 private:
  acc_t* grad_input_;
  acc_t* grad_blocks_;
  const Shapes& s_;
  std::vector<acc_t> buffer_;
};

// true if the windows of the RoIs that read the channel blocks add up to at least the area of the map (then
// copying the whole map pays); with skip_small, small RoIs (is_small) do not count, as the plain kernels read
// them straight from the map (the box gradient when SmallRoiEdges fits the bins)
template <typename acc_t>
bool rois_cover_map(const acc_t* rois, acc_t scale, const Shapes& s, bool skip_small) {
  int64_t area = 0;
  for (int64_t k = 0; k < s.rois; ++k) {
    const auto g = roi_geometry(rois + 5 * k, scale, s.pooled_height, s.pooled_width, s.batch);
    if (!g.valid) continue;
    const Extent e = roi_extent(g, s);
    if (skip_small && is_small(e, s)) continue;
    area += e.rows * e.cols;
    if (area >= s.batch * s.height * s.width) return true;
  }
  return false;
}

// strip[x][c] = sum_i taps.weight[i] * window[taps.first + i][x][c], for every column x of the window:
// one bin row integrated over y (or, with edge taps, interpolated along a horizontal line)
template <typename T>
void integrate_rows(const Window<const T>& w, Taps<T> taps, T* __restrict strip) {
  typename Channels<T>::type sum, pixel;
  for (int64_t x = 0; x < w.cols; ++x) {
    sum = typename Channels<T>::type{};
    for (int i = 0; i < taps.count; ++i) {
      std::memcpy(&pixel, w.data + (taps.first + i - w.y0) * w.row_stride + x * kBlock, sizeof pixel);
      sum += taps.weight[i] * pixel;
    }
    std::memcpy(strip + x * kBlock, &sum, sizeof sum);
  }
}

// strip[y][c] = sum_j taps.weight[j] * window[y][taps.first + j][c], for every row y of the window
template <typename T>
void integrate_columns(const Window<const T>& w, Taps<T> taps, T* __restrict strip) {
  std::fill(strip, strip + w.rows * kBlock, T(0));
  for (int64_t y = 0; y < w.rows; ++y)
    for (int j = 0; j < taps.count; ++j) {
      const T* pixel = w.data + y * w.row_stride + (taps.first + j - w.x0) * kBlock;
      const T weight = taps.weight[j];
      for (int64_t c = 0; c < kBlock; ++c) strip[y * kBlock + c] += weight * pixel[c];
    }
}

// sum_j taps.weight[j] * strip[taps.first + j - origin][c], for the kBlock channels c
template <typename T>
typename Channels<T>::type combine(const T* __restrict strip, int64_t origin, Taps<T> taps) {
  typename Channels<T>::type total = {}, pixel;
  for (int j = 0; j < taps.count; ++j) {
    std::memcpy(&pixel, strip + (taps.first + j - origin) * kBlock, sizeof pixel);
    total += taps.weight[j] * pixel;
  }
  return total;
}

// values[bin][c] = grad[c][bin] for the `channels` channels of a block, 0 past them: one RoI's gradient with
// the channels innermost, like the map
template <typename scalar_t, typename acc_t>
void gather_bins(const scalar_t* grad, int64_t channels, int64_t bins, acc_t* values) {
  std::fill(values, values + bins * kBlock, acc_t(0));
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t bin = 0; bin < bins; ++bin) values[bin * kBlock + c] = static_cast<acc_t>(grad[c * bins + bin]);
}

// sum over the kBlock channels c of a[c] * b[c]
template <typename T>
T dot(const T* a, const typename Channels<T>::type& b) {
  T total = 0;
  for (int64_t c = 0; c < kBlock; ++c) total += a[c] * b[c];
  return total;
}

// ---------------------------------------------------------------------------------------------------
// Small RoIs. A RoI whose pixels fit a kSmall x kSmall window (most small objects on a stride-16 map) is
// pooled straight from the [C][H][W] map, without channel blocks, as small matrix products per channel c:
//
//     out[c] = R W[c] X^T,    R[ph][i] = A_y(ph; y0 + i) / bin area,    X[pw][j] = A_x(pw; x0 + j),
//
// W[c] the window's kSmall x kSmall pixels from (y0, x0). First N = W[c] X^T (pixels enter as broadcast
// scalars), then each bin row R[ph] N; the vectors run along a bin row (lane pw), so a row is stored as the
// output lays it out. The feature gradient is the transpose, grad W[c] += R^T G[c] X. A window is moved
// inside the map at the bottom and right borders, so that it is always whole: pixels the RoI does not touch
// have weight 0. Bin rows of at most kBlock bins.

// A(lo[l], hi[l]; p) for the kBlock lanes l: hat_integral of prroi_math.h, with vector minima and maxima
template <typename T>
typename Channels<T>::type hat_integrals(typename Channels<T>::type lo, typename Channels<T>::type hi, T p) {
  using V = typename Channels<T>::type;
  const auto max = [](const V& a, const V& b) -> V { return a > b ? a : b; };
  const auto min = [](const V& a, const V& b) -> V { return a < b ? a : b; };
  const V zero = {}, one = zero + T(1);
  lo -= p;
  hi -= p;
  V left = max(lo, -one), right = min(hi, zero);  // rising piece on [-1, 0]
  const V rising = max(right - left, zero) * (one + T(0.5) * (left + right));
  left = max(lo, zero);  // falling piece on [0, 1]
  right = min(hi, one);
  const V falling = max(right - left, zero) * (one - T(0.5) * (left + right));
  return rising + falling;
}

// The bins' weights of kSmall pixels from `first` along one axis, kBlock bins at a time (lane b: bin
// first_bin + b, which spans [start + b * step, start + (b + 1) * step] as in AxisTaps::fill_bins):
// weight[j] = factor * A(lo_b, hi_b; first + j), 0 in lanes past the n bins
template <typename T>
void small_window_weights(T start, T step, int64_t first_bin, int64_t n, int64_t first, T factor,
                          typename Channels<T>::type* weight) {
  using V = typename Channels<T>::type;
  V bin, in_range;
  for (int64_t l = 0; l < kBlock; ++l) {
    bin[l] = static_cast<T>(first_bin + l);
    in_range[l] = first_bin + l < n ? factor : T(0);
  }
  const V lo = start + bin * step, hi = start + (bin + T(1)) * step;
  for (int64_t j = 0; j < kSmall; ++j) weight[j] = in_range * hat_integrals(lo, hi, static_cast<T>(first + j));
}

// A small RoI's window and weights.
template <typename T>
struct SmallRoi {
  using V = typename Channels<T>::type;
  typedef T Quad __attribute__((vector_size(kSmall * sizeof(T))));
  int64_t y0, x0;                  // the window's first pixel
  V columns[kSmall];               // columns[j][pw] = X[pw][j], 0 for pw >= kw
  std::vector<T> rows;             // rows[ph * kSmall + i] = R[ph][i] (vector types lose their size as
                                   // template arguments, hence scalars)
  typename Channels<T>::lanes in_row;  // all bits set in lanes pw < kw

  void fill(const RoiGeometry<T>& g, const Extent& e, const Shapes& s) {
    y0 = small_window_first(e.y0, s.height);
    x0 = small_window_first(e.x0, s.width);
    small_window_weights(g.x1, g.bin_w, 0, s.pooled_width, x0, T(1), columns);
    rows.resize(s.pooled_height * kSmall);
    V weight[kSmall];
    for (int64_t ph = 0; ph < s.pooled_height; ph += kBlock) {
      small_window_weights(g.y1, g.bin_h, ph, s.pooled_height, y0, T(1) / (g.bin_w * g.bin_h), weight);
      for (int64_t l = 0; l < kBlock && ph + l < s.pooled_height; ++l)
        for (int64_t i = 0; i < kSmall; ++i) rows[(ph + l) * kSmall + i] = weight[i][l];
    }
    for (int64_t l = 0; l < kBlock; ++l) in_row[l] = l < s.pooled_width ? -1 : 0;
  }
};

// out[ph][pw] = sum_ij R[ph][i] plane[y0 + i][x0 + j] X[pw][j] for one channel; `end` is the end of the
// RoI's output: a row is stored as a whole vector (its extra lanes land on the next row, written later)
// unless the vector would reach past it.
template <typename scalar_t, typename T>
void pool_small_roi(const scalar_t* plane, const SmallRoi<T>& r, const Shapes& s, scalar_t* out,
                    const scalar_t* end) {
  using V = typename Channels<T>::type;
  V n[kSmall];  // n[i][pw] = sum_j plane[y0 + i][x0 + j] X[pw][j]
  for (int64_t i = 0; i < kSmall; ++i) {
    const scalar_t* pixel = plane + (r.y0 + i) * s.width + r.x0;
    n[i] = (static_cast<T>(pixel[0]) * r.columns[0] + static_cast<T>(pixel[1]) * r.columns[1]) +
           (static_cast<T>(pixel[2]) * r.columns[2] + static_cast<T>(pixel[3]) * r.columns[3]);
  }
  for (int64_t ph = 0; ph < s.pooled_height; ++ph, out += s.pooled_width) {
    const T* weight = r.rows.data() + ph * kSmall;
    const V row = (weight[0] * n[0] + weight[1] * n[1]) + (weight[2] * n[2] + weight[3] * n[3]);
    if (std::is_same_v<scalar_t, T> && out + kBlock <= end) {
      std::memcpy(out, &row, sizeof row);
    } else {
      for (int64_t pw = 0; pw < s.pooled_width; ++pw) out[pw] = static_cast<scalar_t>(row[pw]);
    }
  }
}

// The kSmall sums of the lanes of v[0], ..., v[kSmall - 1]: two rounds of adding neighbouring lanes (as
// x86's haddps does), then the two halves.
template <typename T>
__attribute__((always_inline)) inline typename SmallRoi<T>::Quad lane_sums(const typename Channels<T>::type* v) {
  static_assert(kBlock == 8 && kSmall == 4, "lane_sums is written for 8 lanes and 4 vectors");
  using V = typename Channels<T>::type;
  using L = typename Channels<T>::lanes;
  const auto add_pairs = [](const V& a, const V& b) {
    return __builtin_shuffle(a, b, L{0, 2, 8, 10, 4, 6, 12, 14}) + __builtin_shuffle(a, b, L{1, 3, 9, 11, 5, 7, 13, 15});
  };
  V h = add_pairs(add_pairs(v[0], v[1]), add_pairs(v[2], v[3]));  // [s0, s1, s2, s3 | s0', s1', s2', s3']
  h += __builtin_shuffle(h, L{4, 5, 6, 7, 0, 1, 2, 3});
  typename SmallRoi<T>::Quad sums;
  std::memcpy(&sums, &h, sizeof sums);
  return sums;
}

// plane[y0 + i][x0 + j] += sum_pw (sum_ph R[ph][i] grad[ph][pw]) X[pw][j] for one channel, in the rows of
// `band`: the inner sums along a bin row (lane pw), then one lane sum per pixel. `end` is the end of the RoI's
// gradient: a bin row is read as a whole vector (its extra lanes masked) unless the vector would reach past it.
template <typename scalar_t, typename T>
void scatter_small_roi(const scalar_t* grad, const scalar_t* end, const SmallRoi<T>& r, const Shapes& s,
                       const RowBand& band, T* plane) {
  using V = typename Channels<T>::type;
  using L = typename Channels<T>::lanes;
  V p[kSmall] = {}, row;  // p[i][pw] = sum_ph R[ph][i] grad[ph][pw]
  for (int64_t ph = 0; ph < s.pooled_height; ++ph, grad += s.pooled_width) {
    if (std::is_same_v<scalar_t, T> && grad + kBlock <= end) {
      std::memcpy(&row, grad, sizeof row);
      row = reinterpret_cast<V>(reinterpret_cast<L>(row) & r.in_row);
    } else {
      row = V{};
      for (int64_t pw = 0; pw < s.pooled_width; ++pw) row[pw] = static_cast<T>(grad[pw]);
    }
    for (int64_t i = 0; i < kSmall; ++i) p[i] += r.rows[ph * kSmall + i] * row;
  }
  for (int64_t i = 0; i < kSmall; ++i) {  // a fixed count, so that the loop is unrolled
    if (r.y0 + i < band.lo || r.y0 + i >= band.hi) continue;
    V products[kSmall];
    for (int64_t j = 0; j < kSmall; ++j) products[j] = p[i] * r.columns[j];
    T* at = plane + (r.y0 + i) * s.width + r.x0;
    typename SmallRoi<T>::Quad pixels;
    std::memcpy(&pixels, at, sizeof pixels);
    pixels += lane_sums<T>(products);
    std::memcpy(at, &pixels, sizeof pixels);
  }
}

// One RoI's weights in the plain kernels: a small RoI's, or the taps of both axes (rows divided by the bin
// area).
template <typename T>
struct PlainWeights {
  bool small = false;
  SmallRoi<T> small_roi;
  AxisTaps<T> columns, rows;

  void fill(const RoiGeometry<T>& g, const Extent& e, const Shapes& s) {
    small = is_small(e, s);
    if (small) {
      small_roi.fill(g, e, s);
      return;
    }
    fill_bin_taps(g, s, columns, rows);
    rows.scale(T(1) / (g.bin_w * g.bin_h));
  }
};

// out[c][bin] = values[bin][c] for c < channels: one block of a RoI's pooled values, from the blocks'
// [bin][c] order to the tensor's. In the AVX2 build, kBlock bins at a time are transposed in registers.
template <typename scalar_t, typename T>
void store_bins(const T* values, int64_t bins, int64_t channels, scalar_t* out) {
  int64_t first = 0;
  if constexpr (kWideVectors) {
    typename Channels<T>::type tile[kBlock];
    for (; first + kBlock <= bins; first += kBlock) {
      std::memcpy(tile, values + first * kBlock, sizeof tile);
      transpose<T>(tile);
      for (int64_t c = 0; c < channels; ++c) store_lanes<T>(tile[c], out + c * bins + first);
    }
  }
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t bin = first; bin < bins; ++bin) out[c * bins + bin] = static_cast<scalar_t>(values[bin * kBlock + c]);
}

// values[ph][pw][c] = sum_ij A_y(ph; i) A_x(pw; j) w[i][j][c] for one block of channels of a RoI's window w,
// with the taps (rows already divided by the bin area)
template <typename T>
void pool_window(const Window<const T>& w, const AxisTaps<T>& rows, const AxisTaps<T>& columns, const Shapes& s,
                 T* __restrict strip, T* __restrict values) {
  for (int64_t ph = 0; ph < s.pooled_height; ++ph) {
    integrate_rows(w, rows[ph], strip);
    for (int64_t pw = 0; pw < s.pooled_width; ++pw) {
      const auto total = combine(strip, w.x0, columns[pw]);
      std::memcpy(values + (ph * s.pooled_width + pw) * kBlock, &total, sizeof total);
    }
  }
}

// output[k, c, ph, pw] = sum_ij A_y(ph; i) A_x(pw; j) w[c][i][j] / bin area, parallel over RoIs
template <typename scalar_t, typename acc_t>
void plain_forward_kernel(const scalar_t* input, const acc_t* blocks, const acc_t* rois, acc_t scale, const Shapes& s,
                          scalar_t* output) {
  const int64_t bins = s.bins();
  at::parallel_for(0, s.rois, grain(s.out_channels * bins), [&](int64_t begin, int64_t end) {
    BlockedPixels<scalar_t, acc_t> pixels(input, blocks, s);
    PlainWeights<acc_t> weights;
    std::vector<acc_t> strip(s.width * kBlock), values(bins * kBlock);
    for (int64_t k = begin; k < end; ++k) {
      scalar_t* out = output + k * s.out_channels * bins;
      scalar_t* const out_end = out + s.out_channels * bins;
      const auto g = roi_geometry(rois + 5 * k, scale, s.pooled_height, s.pooled_width, s.batch);
      if (!g.valid) {
        std::fill(out, out_end, scalar_t(0));
        continue;
      }
      const Extent e = roi_extent(g, s);
      weights.fill(g, e, s);
      if (weights.small) {
        for (int64_t c = 0; c < s.out_channels; ++c)
          pool_small_roi(input + s.plane_offset(g.batch, c, 0, 0), weights.small_roi, s, out + c * bins, out_end);
        continue;
      }
      for (int64_t b = 0; b < channel_blocks(s.out_channels); ++b) {
        pool_window(pixels.window(g.batch, e, b), weights.rows, weights.columns, s, strip.data(), values.data());
        store_bins(values.data(), bins, std::min(kBlock, s.out_channels - b * kBlock), out + b * kBlock * bins);
      }
    }
  });
}

// The forward's passes run backwards for one block of channels of a RoI's window, bin row by bin row, for the
// map rows in `band`:
//     strip[x][c] = sum_pw A_x(pw; x) grad[ph][pw][c],   window[i][x][c] += A_y(ph; i) / area * strip[x][c]
// The strip is built from the even bins, then the odd ones: neighbouring bins share a pixel, and adding
// into it right after the bin before has stored it would make each add wait for that store.
template <typename T>
void scatter_window(const T* __restrict grad, const AxisTaps<T>& rows, const AxisTaps<T>& columns, const Shapes& s,
                    const RowBand& band, T* __restrict strip, const Window<T>& w) {
  typename Channels<T>::type value, sum;
  const int64_t cols = w.cols;  // locals: the stores below could alias w as far as the compiler knows
  T* const data = w.data;
  for (int64_t ph = 0; ph < s.pooled_height; ++ph) {
    const Taps<T> taps = rows[ph];
    const auto [first, last] = band.rows(taps.first, taps.count);
    if (first >= last) continue;
    std::fill(strip, strip + cols * kBlock, T(0));
    for (int64_t parity = 0; parity < 2; ++parity)
      for (int64_t pw = parity; pw < s.pooled_width; pw += 2) {
        std::memcpy(&value, grad + (ph * s.pooled_width + pw) * kBlock, sizeof value);
        const Taps<T> taps = columns[pw];
        for (int64_t j = 0; j < taps.count; ++j) {
          T* at = strip + (taps.first + j - w.x0) * kBlock;
          std::memcpy(&sum, at, sizeof sum);
          sum += taps.weight[j] * value;
          std::memcpy(at, &sum, sizeof sum);
        }
      }
    for (int64_t i = first; i < last; ++i) {
      T* row = data + (taps.first + i - w.y0) * w.row_stride;
      const T weight = taps.weight[i];
      for (int64_t x = 0; x < cols; ++x) {
        std::memcpy(&sum, row + x * kBlock, sizeof sum);
        std::memcpy(&value, strip + x * kBlock, sizeof value);
        sum += weight * value;
        std::memcpy(row + x * kBlock, &sum, sizeof sum);
      }
    }
  }
}

// grad_input[n][c][i][j] += sum_{ph, pw} grad_output[k, c, ph, pw] A_y(ph; i) A_x(pw; j) / bin area, RoI by RoI:
// small RoIs straight into grad_input (scatter_small_roi), the others through the blocked gradient
// (scatter_window). A task writes one block of channels in one band of map rows, so no two threads write
// the same gradient; there are as many bands as threads, so that the threads share the work even when the
// channels make fewer blocks than there are threads (21 classes: 3 blocks). A thread takes its tasks RoI by RoI,
// and a RoI across two bands is scattered by both tasks, each into its own rows.
template <typename scalar_t, typename acc_t>
void plain_backward_input_kernel(const scalar_t* grad_output, const acc_t* rois, acc_t scale, const Shapes& s,
                                 acc_t* grad_input, acc_t* grad_blocks) {
  const int64_t bins = s.bins(), kh = s.pooled_height, kw = s.pooled_width, blocks = channel_blocks(s.out_channels);
  const int64_t bands = std::max<int64_t>(1, std::min<int64_t>(s.height, at::get_num_threads()));
  const auto band_of = [&](int64_t task) {  // tasks go band by band, block by block
    const int64_t band = task / blocks;
    return RowBand{band * s.height / bands, (band + 1) * s.height / bands};
  };
  at::parallel_for(0, bands * blocks, grain(s.rois * bins * kBlock / bands), [&](int64_t begin, int64_t end) {
    PlainWeights<acc_t> weights;
    BlockedGradient<acc_t> gradient(grad_input, grad_blocks, s);
    std::vector<acc_t> strip(s.width * kBlock), grad(bins * kBlock);
    for (int64_t k = 0; k < s.rois; ++k) {
      const auto g = roi_geometry(rois + 5 * k, scale, kh, kw, s.batch);
      if (!g.valid) continue;
      const Extent e = roi_extent(g, s);
      const RowBand written = window_rows(e, s);
      if (band_of(begin).lo >= written.hi || band_of(end - 1).hi <= written.lo) continue;
      weights.fill(g, e, s);
      const scalar_t* roi_grad = grad_output + k * s.out_channels * bins;
      for (int64_t task = begin; task < end; ++task) {
        const RowBand band = band_of(task);
        if (band.lo >= written.hi || band.hi <= written.lo) continue;
        const int64_t b = task % blocks;
        if (weights.small) {
          const int64_t last = std::min((b + 1) * kBlock, s.out_channels);
          for (int64_t c = b * kBlock; c < last; ++c)
            scatter_small_roi(roi_grad + c * bins, roi_grad + s.out_channels * bins, weights.small_roi, s, band,
                              grad_input + s.plane_offset(g.batch, c, 0, 0));
          continue;
        }
        gather_bins(roi_grad + b * kBlock * bins, std::min(kBlock, s.out_channels - b * kBlock), bins, grad.data());
        const Window<acc_t> w = gradient.open(g.batch, e, b);
        scatter_window(grad.data(), weights.rows, weights.columns, s, band, strip.data(), w);
        gradient.close(g.batch, e, b, band);
      }
    }
  });
}

// Per bin b of one RoI, summed over the channels c with the weights grad[c][b]: the bin's mean (grad_out), and
// the line integrals of f along its four edges divided by the bin area (left, right, top, bottom).
template <typename T>
struct EdgeSums {
  std::vector<T> grad_out, left, right, top, bottom;

  void reset(int64_t bins) {
    for (auto* sums : {&grad_out, &left, &right, &top, &bottom}) sums->assign(bins, T(0));
  }

  // grad_roi[1 .. 4] = d/dx1, d/dy1, d/dx2, d/dy2 of the RoI's image corners (seed 000, eq. 7):
  //     d out / d left = out / bin_w - (integral along the left edge) / area,   likewise the other edges,
  // and the bin edges move with the corners: left = x1 + pw / kw * (x2 - x1), right likewise with pw + 1.
  void corner_gradients(const RoiGeometry<T>& g, const Shapes& s, T scale, T* grad_roi) const {
    const int64_t kh = s.pooled_height, kw = s.pooled_width;
    T d_x1 = 0, d_y1 = 0, d_x2 = 0, d_y2 = 0;  // w.r.t. the scaled corners
    for (int64_t ph = 0; ph < kh; ++ph)
      for (int64_t pw = 0; pw < kw; ++pw) {
        const int64_t b = ph * kw + pw;
        const T d_left = grad_out[b] / g.bin_w - left[b];
        const T d_right = right[b] - grad_out[b] / g.bin_w;
        const T d_top = grad_out[b] / g.bin_h - top[b];
        const T d_bottom = bottom[b] - grad_out[b] / g.bin_h;
        const T fl = static_cast<T>(pw) / kw, fr = static_cast<T>(pw + 1) / kw;
        const T ft = static_cast<T>(ph) / kh, fb = static_cast<T>(ph + 1) / kh;
        d_x1 += d_left * (1 - fl) + d_right * (1 - fr);
        d_x2 += d_left * fl + d_right * fr;
        d_y1 += d_top * (1 - ft) + d_bottom * (1 - fb);
        d_y2 += d_top * ft + d_bottom * fb;
      }
    grad_roi[1] = d_x1 * scale;
    grad_roi[2] = d_y1 * scale;
    grad_roi[3] = d_x2 * scale;
    grad_roi[4] = d_y2 * scale;
  }
};

// The edge weights of a small RoI's window (see SmallRoi), for the line integrals along its bin edges:
//     vertical line x = x1 + e * bin_w (e = 0 .. kw):   columns[j][e] = hat(x - (x0 + j)),  0 in lanes e > kw
//     horizontal line y = y1 + e * bin_h (e = 0 .. kh): rows[e * kSmall + i] = hat(y - (y0 + i)) / bin area
// The integral along x = e over bin row ph is then sum_i R[ph][i] sum_j W[i][j] columns[j][e], and along
// y = e over bin column pw sum_i rows[e][i] sum_j W[i][j] X[pw][j]. Needs kw + 1 <= kBlock edges in a vector.
template <typename T>
struct SmallRoiEdges {
  using V = typename Channels<T>::type;
  V columns[kSmall];
  std::vector<T> rows;

  static bool fits(const Shapes& s) { return s.pooled_width + 1 <= kBlock; }

  void fill(const RoiGeometry<T>& g, const SmallRoi<T>& r, const Shapes& s) {
    const auto max = [](const V& a, const V& b) -> V { return a > b ? a : b; };
    V edge, in_range;
    for (int64_t l = 0; l < kBlock; ++l) {
      edge[l] = g.x1 + static_cast<T>(l) * g.bin_w;
      in_range[l] = l <= s.pooled_width ? T(1) : T(0);
    }
    const V zero = {}, one = zero + T(1);
    for (int64_t j = 0; j < kSmall; ++j) {
      const V t = edge - static_cast<T>(r.x0 + j);
      columns[j] = in_range * max(one - max(t, -t), zero);
    }
    const T inv_area = T(1) / (g.bin_w * g.bin_h);
    rows.resize((s.pooled_height + 1) * kSmall);
    for (int64_t e = 0; e <= s.pooled_height; ++e) {
      const T y = g.y1 + static_cast<T>(e) * g.bin_h;
      for (int64_t i = 0; i < kSmall; ++i) rows[e * kSmall + i] = hat(y - static_cast<T>(r.y0 + i)) * inv_area;
    }
  }
};

// EdgeSums of a small RoI straight from the [C][H][W] map (`input` at its image's channel 0), bin row by bin
// row with lanes along the row (pw, or the edge e): per channel N = W X^T and N_E = W E^T (E: the vertical
// edges' weights), then for each bin row the mean R[ph] N, the vertical edges R[ph] N_E (the right edge of bin pw
// is the left edge of pw + 1: lanes moved down by one) and the horizontal edges rows[e] N. `grad`: the RoI's
// gradient, [C][kh][kw], ending at `end`; `acc`: scratch of 5 * kh * kBlock values.
template <typename scalar_t, typename T>
void small_roi_edge_sums(const scalar_t* input, const scalar_t* grad, const scalar_t* end, const SmallRoi<T>& r,
                         const SmallRoiEdges<T>& edges, const Shapes& s, std::vector<T>& acc, EdgeSums<T>& sums) {
  using V = typename Channels<T>::type;
  using L = typename Channels<T>::lanes;
  const int64_t kh = s.pooled_height, kw = s.pooled_width, plane = s.height * s.width;
  acc.assign(5 * kh * kBlock, T(0));  // [grad_out, left, right, top, bottom][ph][lane]
  const auto add = [&](int64_t which, int64_t ph, const V& v) {
    T* at = acc.data() + (which * kh + ph) * kBlock;
    V total;
    std::memcpy(&total, at, sizeof total);
    total += v;
    std::memcpy(at, &total, sizeof total);
  };
  for (int64_t c = 0; c < s.out_channels; ++c, grad += s.bins()) {
    const scalar_t* window = input + c * plane + r.y0 * s.width + r.x0;
    V n[kSmall], n_edges[kSmall];  // n[i][pw] = sum_j W[i][j] X[pw][j], n_edges[i][e] = sum_j W[i][j] E[e][j]
    for (int64_t i = 0; i < kSmall; ++i) {
      n[i] = V{};
      n_edges[i] = V{};
      for (int64_t j = 0; j < kSmall; ++j) {
        const T pixel = static_cast<T>(window[i * s.width + j]);
        n[i] += pixel * r.columns[j];
        n_edges[i] += pixel * edges.columns[j];
      }
    }
    const auto row_edge = [&](int64_t e) {  // sum_i rows[e][i] n[i]: horizontal line e, lanes pw
      const T* w = edges.rows.data() + e * kSmall;
      return (w[0] * n[0] + w[1] * n[1]) + (w[2] * n[2] + w[3] * n[3]);
    };
    V upper = row_edge(0), row;
    for (int64_t ph = 0; ph < kh; ++ph) {
      const scalar_t* g = grad + ph * kw;
      if (std::is_same_v<scalar_t, T> && g + kBlock <= end) {
        std::memcpy(&row, g, sizeof row);
        row = reinterpret_cast<V>(reinterpret_cast<L>(row) & r.in_row);
      } else {
        row = V{};
        for (int64_t pw = 0; pw < kw; ++pw) row[pw] = static_cast<T>(g[pw]);
      }
      const T* weight = r.rows.data() + ph * kSmall;
      const V mean = (weight[0] * n[0] + weight[1] * n[1]) + (weight[2] * n[2] + weight[3] * n[3]);
      const V vertical = (weight[0] * n_edges[0] + weight[1] * n_edges[1]) +
                         (weight[2] * n_edges[2] + weight[3] * n_edges[3]);
      const V lower = row_edge(ph + 1);
      add(0, ph, row * mean);
      add(1, ph, row * vertical);
      add(2, ph, row * __builtin_shuffle(vertical, L{1, 2, 3, 4, 5, 6, 7, 7}));
      add(3, ph, row * upper);
      add(4, ph, row * lower);
      upper = lower;
    }
  }
  std::vector<T>* out[5] = {&sums.grad_out, &sums.left, &sums.right, &sums.top, &sums.bottom};
  for (int64_t which = 0; which < 5; ++which)
    for (int64_t ph = 0; ph < kh; ++ph)
      for (int64_t pw = 0; pw < kw; ++pw) (*out[which])[ph * kw + pw] = acc[(which * kh + ph) * kBlock + pw];
}

// grad_rois[k] = (0, d/dx1, d/dy1, d/dx2, d/dy2) of sum(grad_output * output), one RoI per task, from the RoI's
// EdgeSums. A small RoI (and at most kBlock - 1 bins per row) takes small_roi_edge_sums. Otherwise the edge
// integrals reuse the two passes of the forward: along the vertical line x = e, the integral over the bin's
// rows is sum_j hat(e - j) strip[ph][j] (edge taps instead of bin taps in the second pass), and along a
// horizontal line the same with rows and columns swapped.
template <typename scalar_t, typename acc_t>
void plain_backward_rois_kernel(const scalar_t* grad_output, const scalar_t* input, const acc_t* blocks,
                                const acc_t* rois, const scalar_t* output, acc_t scale, const Shapes& s,
                                acc_t* grad_rois) {
  const int64_t bins = s.bins(), kh = s.pooled_height, kw = s.pooled_width;
  at::parallel_for(0, s.rois, grain(s.out_channels * bins), [&](int64_t begin, int64_t end) {
    BlockedPixels<scalar_t, acc_t> pixels(input, blocks, s);
    AxisTaps<acc_t> columns, rows, column_edges, row_edges;
    SmallRoi<acc_t> small;
    SmallRoiEdges<acc_t> small_edges;
    EdgeSums<acc_t> sums;
    std::vector<acc_t> strip(std::max(s.height, s.width) * kBlock), grad(bins * kBlock), scratch;
    for (int64_t k = begin; k < end; ++k) {
      acc_t* grad_roi = grad_rois + 5 * k;
      std::fill(grad_roi, grad_roi + 5, acc_t(0));
      const auto g = roi_geometry(rois + 5 * k, scale, kh, kw, s.batch);
      if (!g.valid) continue;
      sums.reset(bins);
      const Extent e = roi_extent(g, s);
      const scalar_t* roi_grad = grad_output + k * s.out_channels * bins;
      if (is_small(e, s) && SmallRoiEdges<acc_t>::fits(s)) {
        small.fill(g, e, s);
        small_edges.fill(g, small, s);
        small_roi_edge_sums(input + s.plane_offset(g.batch, 0, 0, 0), roi_grad, roi_grad + s.out_channels * bins,
                            small, small_edges, s, scratch, sums);
        sums.corner_gradients(g, s, scale, grad_roi);
        continue;
      }
      fill_bin_taps(g, s, columns, rows);
      // both passes integrate over a bin: divide by its area once, here
      rows.scale(acc_t(1) / (g.bin_w * g.bin_h));
      columns.scale(acc_t(1) / (g.bin_w * g.bin_h));
      column_edges.fill_edges(g.x1, g.bin_w, kw, s.width);
      row_edges.fill_edges(g.y1, g.bin_h, kh, s.height);
      for (int64_t c = 0; c < s.out_channels; ++c) {
        const int64_t o = (k * s.out_channels + c) * bins;
        for (int64_t b = 0; b < bins; ++b)
          sums.grad_out[b] += static_cast<acc_t>(grad_output[o + b]) * static_cast<acc_t>(output[o + b]);
      }
      for (int64_t b = 0; b < channel_blocks(s.out_channels); ++b) {
        const Window<const acc_t> w = pixels.window(g.batch, e, b);
        gather_bins(roi_grad + b * kBlock * bins, std::min(kBlock, s.out_channels - b * kBlock), bins, grad.data());
        // vertical line x = column edge e: the left edge of bin pw = e and the right edge of bin e - 1
        for (int64_t ph = 0; ph < kh; ++ph) {
          integrate_rows(w, rows[ph], strip.data());
          for (int64_t e = 0; e <= kw; ++e) {
            const auto edge = combine(strip.data(), w.x0, column_edges[e]);
            const int64_t bin = ph * kw + e;
            if (e < kw) sums.left[bin] += dot(grad.data() + bin * kBlock, edge);
            if (e > 0) sums.right[bin - 1] += dot(grad.data() + (bin - 1) * kBlock, edge);
          }
        }
        // horizontal line y = row edge e: the top edge of bin ph = e and the bottom edge of bin e - 1
        for (int64_t pw = 0; pw < kw; ++pw) {
          integrate_columns(w, columns[pw], strip.data());
          for (int64_t e = 0; e <= kh; ++e) {
            const auto edge = combine(strip.data(), w.y0, row_edges[e]);
            const int64_t bin = e * kw + pw;
            if (e < kh) sums.top[bin] += dot(grad.data() + bin * kBlock, edge);
            if (e > 0) sums.bottom[bin - kw] += dot(grad.data() + (bin - kw) * kBlock, edge);
          }
        }
      }
      sums.corner_gradients(g, s, scale, grad_roi);
    }
  });
}

// Every RoI's batch index (column 0) is an integer in [0, batch): checked in one pass before any work. Done
// here rather than in Python, where the same test takes several small tensor ops, which cost more than
// pooling a few RoIs.
template <typename acc_t>
void check_batch_indices(const acc_t* rois, int64_t count, int64_t batch, bool position_sensitive) {
  for (int64_t k = 0; k < count; ++k) {
    const acc_t n = rois[5 * k];
    TORCH_CHECK_VALUE(n >= 0 && n < static_cast<acc_t>(batch) && n == std::trunc(n),
                      position_sensitive ? "ps_prroi_pool" : "prroi_pool",
                      ": rois[:, 0] must hold integer batch indices in [0, ", batch, "), got ", n, " in row ", k);
  }
}

// The feature map in channel blocks (see to_blocks), in the accumulation type.
template <typename scalar_t, typename acc_t>
at::Tensor blocked_map(const at::Tensor& input) {
  const int64_t batch = input.size(0), channels = input.size(1), height = input.size(2), width = input.size(3);
  auto blocks = at::empty({batch, channel_blocks(channels), height, width, kBlock},
                          input.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  to_blocks(input.template data_ptr<scalar_t>(), batch, channels, height * width, blocks.template data_ptr<acc_t>());
  return blocks;
}

}  // namespace

at::Tensor forward(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                       int64_t pooled_height, int64_t pooled_width, bool position_sensitive) {
  check_pooling_arguments(input, rois, pooled_height, pooled_width, position_sensitive);
  const Shapes s = shapes_of(input, rois, pooled_height, pooled_width, position_sensitive);
  const auto input_c = input.contiguous();
  const auto rois_c = rois.to(at::toOpMathType(input.scalar_type())).contiguous();
  auto output = at::empty({s.rois, s.out_channels, pooled_height, pooled_width}, input.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "prroi_pool_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto scale = static_cast<acc_t>(spatial_scale);
    check_batch_indices(rois_c.data_ptr<acc_t>(), s.rois, s.batch, position_sensitive);
    if (output.numel() == 0) return;
    if (position_sensitive) {
      ps_forward_kernel(input_c.data_ptr<scalar_t>(), rois_c.data_ptr<acc_t>(), scale, s, output.data_ptr<scalar_t>());
    } else {
      const auto blocks = rois_cover_map(rois_c.data_ptr<acc_t>(), scale, s, true) ? blocked_map<scalar_t, acc_t>(input_c)
                                                                             : at::Tensor();
      plain_forward_kernel(input_c.data_ptr<scalar_t>(), blocks.defined() ? blocks.data_ptr<acc_t>() : nullptr,
                           rois_c.data_ptr<acc_t>(), scale, s, output.data_ptr<scalar_t>());
    }
  });
  return output;
}

at::Tensor backward_input(const at::Tensor& grad_output, const at::Tensor& rois, double spatial_scale,
                              int64_t pooled_height, int64_t pooled_width, bool position_sensitive,
                              int64_t batch_size, int64_t channels, int64_t height, int64_t width) {
  const auto acc_type = at::toOpMathType(grad_output.scalar_type());
  auto grad_input = at::empty({batch_size, channels, height, width}, grad_output.options().dtype(acc_type));
  check_pooling_arguments(grad_input, rois, pooled_height, pooled_width, position_sensitive);
  const Shapes s = shapes_of(grad_input, rois, pooled_height, pooled_width, position_sensitive);
  check_backward_input_arguments(grad_output, s);
  if (grad_output.numel() == 0 || grad_input.numel() == 0) return grad_input.zero_().to(grad_output.scalar_type());
  if (!position_sensitive) grad_input.zero_();  // the plain kernels add into it; the PS kernel zeroes as it goes
  const auto grad_output_c = grad_output.contiguous();
  const auto rois_c = rois.to(acc_type).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(), "prroi_pool_backward_input_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto scale = static_cast<acc_t>(spatial_scale);
    // plain pooling over many RoIs accumulates in a blocked copy of the whole map, added to grad_input at
    // the end (small RoIs excepted, see plain_backward_input_kernel)
    const bool whole_map = !position_sensitive && rois_cover_map(rois_c.data_ptr<acc_t>(), scale, s, true);
    if (position_sensitive) {
      ps_backward_input_kernel(grad_output_c.data_ptr<scalar_t>(), rois_c.data_ptr<acc_t>(), scale, s,
                               grad_input.data_ptr<acc_t>());
    } else if (whole_map) {
      auto grad_blocks = at::zeros({batch_size, channel_blocks(channels), height, width, kBlock}, grad_input.options());
      plain_backward_input_kernel(grad_output_c.data_ptr<scalar_t>(), rois_c.data_ptr<acc_t>(), scale, s,
                                  grad_input.data_ptr<acc_t>(), grad_blocks.data_ptr<acc_t>());
      add_from_blocks(grad_blocks.data_ptr<acc_t>(), batch_size, channels, height * width, grad_input.data_ptr<acc_t>());
    } else {
      plain_backward_input_kernel(grad_output_c.data_ptr<scalar_t>(), rois_c.data_ptr<acc_t>(), scale, s,
                                  grad_input.data_ptr<acc_t>(), static_cast<acc_t*>(nullptr));
    }
  });
  return grad_input.to(grad_output.scalar_type());
}

at::Tensor backward_rois(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& rois,
                             const at::Tensor& output, double spatial_scale, int64_t pooled_height,
                             int64_t pooled_width, bool position_sensitive) {
  check_pooling_arguments(input, rois, pooled_height, pooled_width, position_sensitive);
  const Shapes s = shapes_of(input, rois, pooled_height, pooled_width, position_sensitive);
  check_backward_rois_arguments(grad_output, input, output, s);
  const BackwardRoisOperands op = backward_rois_operands(grad_output, input, rois, output);
  if (grad_output.numel() == 0) return op.grad_rois.to(rois.scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "prroi_pool_backward_rois_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto scale = static_cast<acc_t>(spatial_scale);
    if (position_sensitive) {
      ps_backward_rois_kernel(op.grad_output.data_ptr<scalar_t>(), op.input.data_ptr<scalar_t>(),
                              op.rois.data_ptr<acc_t>(), op.output.data_ptr<scalar_t>(), scale, s,
                              op.grad_rois.data_ptr<acc_t>());
    } else {
      const bool skip_small = SmallRoiEdges<acc_t>::fits(s);
      const auto blocks = rois_cover_map(op.rois.data_ptr<acc_t>(), scale, s, skip_small)
                              ? blocked_map<scalar_t, acc_t>(op.input)
                              : at::Tensor();
      plain_backward_rois_kernel(op.grad_output.data_ptr<scalar_t>(), op.input.data_ptr<scalar_t>(),
                                 blocks.defined() ? blocks.data_ptr<acc_t>() : nullptr, op.rois.data_ptr<acc_t>(),
                                 op.output.data_ptr<scalar_t>(), scale, s, op.grad_rois.data_ptr<acc_t>());
    }
  });
  return op.grad_rois.to(rois.scalar_type());
}

}  // namespace SODLIB_CPU_NAMESPACE
}  // namespace prroi
}  // namespace sodlib
