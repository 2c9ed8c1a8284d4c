#pragma once
// Plain PrRoI pooling: where the kernels of cpu/plain_kernels.h find a RoI's pixels and put its feature
// gradient. The pixels a RoI touches (Extent) and the map rows that one task writes (RowBand); whether the
// RoI is small (is_small), which sends it to cpu/plain_small.h; otherwise its window in one block of kBlock
// channels, read from the blocked copy of the whole map or copied when needed (BlockedPixels), its gradient
// accumulated likewise (BlockedGradient), and which of the two a call takes (rois_cover_map). Then what the
// passes are built from: their inner loops over one window (integrate_rows, integrate_columns, combine), one
// block of a RoI's output gradient with the channels innermost (gather_bins), and a dot product over the
// kBlock channels (dot).
//
// Part of cpu/prroi_pool_kernels.h, which includes it inside its namespaces, after cpu/taps.h and cpu/vec.h.

#ifndef SODLIB_CPU_KERNEL_PARTS
#error "cpu/plain_blocked.h is part of cpu/prroi_pool_kernels.h: include that file instead"
#endif

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

// Whether a RoI takes the small-RoI path of the plain kernels (see SmallRoi in cpu/plain_small.h): its
// pixels fit a kSmall x kSmall window.
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
