#pragma once
// Taps: the pixels under a bin (or along a bin edge) with their weights, listed once per RoI and reused for
// every channel by the kernels of both ops. Along one axis of one RoI (Taps, AxisTaps, fill_bin_taps),
// multiplied out over one bin of a plane (PlaneTaps), and along one axis of every RoI of a call, bin by bin
// (TapsByBin, AllRoiTaps). Also grain(), the work per task that the kernels give at::parallel_for.
//
// Part of cpu/prroi_pool_kernels.h, which includes it inside its namespaces, after the headers it needs.

#ifndef SODLIB_CPU_KERNEL_PARTS
#error "cpu/taps.h is part of cpu/prroi_pool_kernels.h: include that file instead"
#endif

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

// Work items per task below which at::parallel_for stays on one thread (ATen's own grain is 32768
// elements); the kernels count one item per pooled output.
constexpr int64_t kGrainOutputs = 32768;

int64_t grain(int64_t outputs_per_item) { return std::max<int64_t>(1, kGrainOutputs / std::max<int64_t>(1, outputs_per_item)); }
