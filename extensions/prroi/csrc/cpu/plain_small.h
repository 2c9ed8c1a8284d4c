#pragma once
// Plain PrRoI pooling of small RoIs. A RoI whose pixels fit a kSmall x kSmall window (most small objects on
// a stride-16 map) is pooled straight from the [C][H][W] map, without channel blocks, as small matrix
// products per channel c:
//
//     out[c] = R W[c] X^T,    R[ph][i] = A_y(ph; y0 + i) / bin area,    X[pw][j] = A_x(pw; x0 + j),
//
// W[c] the window's kSmall x kSmall pixels from (y0, x0). First N = W[c] X^T (pixels enter as broadcast
// scalars), then each bin row R[ph] N; the vectors run along a bin row (lane pw), so a row is stored as the
// output lays it out. The feature gradient is the transpose, grad W[c] += R^T G[c] X. A window is moved
// inside the map at the bottom and right borders, so that it is always whole: pixels the RoI does not touch
// have weight 0. Bin rows of at most kBlock bins.
//
// Here: the weights (SmallRoi), one channel's forward (pool_small_roi) and feature gradient
// (scatter_small_roi), and the weights of the bin edges for the box gradient (SmallRoiEdges), whose sums
// (small_roi_edge_sums) are in cpu/plain_kernels.h with the EdgeSums they fill.
//
// Part of cpu/prroi_pool_kernels.h, which includes it inside its namespaces, after cpu/vec.h and
// cpu/plain_blocked.h.

#ifndef SODLIB_CPU_KERNEL_PARTS
#error "cpu/plain_small.h is part of cpu/prroi_pool_kernels.h: include that file instead"
#endif

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
