#pragma once
// Plain PrRoI pooling on the CPU: the forward (plain_forward_kernel), the feature gradient
// (plain_backward_input_kernel) and the box gradient (plain_backward_rois_kernel). Every bin of a RoI reads
// the same channels, so its integral is done in two passes whose 1-D weights A_y, A_x are computed once per
// RoI:
//
//     strip[ph][x][c] = sum_i A_y(ph; i) / area * w[c][i][x]     (rows first, at every column x of the RoI)
//     out[c][ph][pw]  = sum_j A_x(pw; j) * strip[ph][j][c]       (then each bin's few columns)
//
// Both passes run over channels innermost, kBlock channels at a time, on pixels copied into blocks
// [...][H][W][kBlock] (channels past C are 0): the whole map once, or each RoI's window (BlockedPixels),
// so that the innermost loops work on one vector of kBlock channels (the Channels type). The feature
// gradient is accumulated in the same layout and added back to grad_input (BlockedGradient). Small RoIs are
// pooled straight from the map instead (cpu/plain_small.h). The box gradient sums, per bin, the bin means and
// the line integrals along the bin edges (EdgeSums): for a small RoI with small_roi_edge_sums, otherwise with
// the forward's two passes and the edges' taps.
//
// Part of cpu/prroi_pool_kernels.h, which includes it inside its namespaces, after cpu/taps.h, cpu/vec.h,
// cpu/plain_blocked.h and cpu/plain_small.h.

#ifndef SODLIB_CPU_KERNEL_PARTS
#error "cpu/plain_kernels.h is part of cpu/prroi_pool_kernels.h: include that file instead"
#endif

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

  // grad_roi[1 .. 4] = d/dx1, d/dy1, d/dx2, d/dy2 of the RoI's image corners (Zhang et al. 2021, eq. 7):
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
