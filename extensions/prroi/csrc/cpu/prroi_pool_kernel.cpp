// CPU kernels of PrRoI and PS-PrRoI pooling (forward, feature backward, RoI-coordinate backward).
//
// The integral over a bin factorises into one weight per pixel column and one per pixel row
// (see prroi_math.h). For each RoI the kernels first list, along each axis, the pixels under every bin
// with their weights A(lo, hi; p) ("taps"); for each bin they multiply them out into a short list of
// (pixel offset, weight) pairs, then apply that list to every channel.
// Half and bfloat16 inputs are read as they are and accumulated in float32 (at::opmath_type).

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "prroi_math.h"
#include "prroi_pool.h"

namespace sodlib {
namespace prroi {
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

  // plane[offset[t]] += value * weight[t]
  void scatter(T* plane, T value) const {
    for (size_t t = 0; t < offset_.size(); ++t) plane[offset_[t]] += value * weight_[t];
  }

 private:
  std::vector<int64_t> offset_;
  std::vector<T> weight_;
};

// Work items per task below which at::parallel_for stays on one thread (ATen's own grain is 32768
// elements); the kernels count one item per pooled output.
constexpr int64_t kGrainOutputs = 32768;

int64_t grain(int64_t outputs_per_item) { return std::max<int64_t>(1, kGrainOutputs / std::max<int64_t>(1, outputs_per_item)); }

struct Shapes {
  int64_t rois, batch, in_channels, height, width, out_channels, pooled_height, pooled_width;
  bool position_sensitive;
  int64_t bins() const { return pooled_height * pooled_width; }
  int64_t plane_offset(int64_t n, int64_t c, int64_t ph, int64_t pw) const {
    return (n * in_channels + input_channel(c, ph, pw, pooled_height, pooled_width, position_sensitive)) *
           height * width;
  }
};

// output[k, c, ph, pw] = sum over the bin's pixels of A_y(i) A_x(j) w[i][j] / bin area
template <typename scalar_t, typename acc_t>
void forward_kernel(const scalar_t* input, const acc_t* rois, acc_t scale, const Shapes& s, scalar_t* output) {
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
      columns.fill_bins(g.x1, g.bin_w, s.pooled_width, s.width);
      rows.fill_bins(g.y1, g.bin_h, s.pooled_height, s.height);
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

// grad_input[n, c', i, j] += grad_output[k, c, ph, pw] * A_y(i) * A_x(j) / bin area.
// Threads split the output channels: the input channels fed by different output channels are disjoint,
// so no two threads write the same gradient.
template <typename scalar_t, typename acc_t>
void backward_input_kernel(const scalar_t* grad_output, const acc_t* rois, acc_t scale, const Shapes& s,
                           acc_t* grad_input) {
  at::parallel_for(0, s.out_channels, grain(s.rois * s.bins()), [&](int64_t begin, int64_t end) {
    AxisTaps<acc_t> columns, rows;
    PlaneTaps<acc_t> bin;
    for (int64_t k = 0; k < s.rois; ++k) {
      const auto g = roi_geometry(rois + 5 * k, scale, s.pooled_height, s.pooled_width, s.batch);
      if (!g.valid) continue;
      columns.fill_bins(g.x1, g.bin_w, s.pooled_width, s.width);
      rows.fill_bins(g.y1, g.bin_h, s.pooled_height, s.height);
      const acc_t inv_area = acc_t(1) / (g.bin_w * g.bin_h);
      for (int64_t ph = 0; ph < s.pooled_height; ++ph)
        for (int64_t pw = 0; pw < s.pooled_width; ++pw) {
          bin.fill(rows[ph], columns[pw], s.width, inv_area);
          for (int64_t c = begin; c < end; ++c) {
            const acc_t grad = static_cast<acc_t>(
                grad_output[((k * s.out_channels + c) * s.pooled_height + ph) * s.pooled_width + pw]);
            if (grad != acc_t(0)) bin.scatter(grad_input + s.plane_offset(g.batch, c, ph, pw), grad);
          }
        }
    }
  });
}

// grad_rois[k] = (0, d/dx1, d/dy1, d/dx2, d/dy2) of sum(grad_output * output), one RoI per task:
// each RoI's four sums are accumulated locally and written once.
template <typename scalar_t, typename acc_t>
void backward_rois_kernel(const scalar_t* grad_output, const scalar_t* input, const acc_t* rois,
                          const scalar_t* output, acc_t scale, const Shapes& s, acc_t* grad_rois) {
  at::parallel_for(0, s.rois, grain(s.out_channels * s.bins()), [&](int64_t begin, int64_t end) {
    AxisTaps<acc_t> columns, rows, column_edges, row_edges;
    PlaneTaps<acc_t> left, right, top, bottom;
    for (int64_t k = begin; k < end; ++k) {
      acc_t* grad_roi = grad_rois + 5 * k;
      std::fill(grad_roi, grad_roi + 5, acc_t(0));
      const auto g = roi_geometry(rois + 5 * k, scale, s.pooled_height, s.pooled_width, s.batch);
      if (!g.valid) continue;
      columns.fill_bins(g.x1, g.bin_w, s.pooled_width, s.width);
      rows.fill_bins(g.y1, g.bin_h, s.pooled_height, s.height);
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

Shapes shapes_of(const at::Tensor& input, const at::Tensor& rois, int64_t pooled_height, int64_t pooled_width,
                 bool position_sensitive) {
  Shapes s;
  s.rois = rois.size(0);
  s.batch = input.size(0);
  s.in_channels = input.size(1);
  s.height = input.size(2);
  s.width = input.size(3);
  s.out_channels = output_channels(s.in_channels, pooled_height, pooled_width, position_sensitive);
  s.pooled_height = pooled_height;
  s.pooled_width = pooled_width;
  s.position_sensitive = position_sensitive;
  return s;
}

at::Tensor forward_cpu(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                       int64_t pooled_height, int64_t pooled_width, bool position_sensitive) {
  check_pooling_arguments(input, rois, pooled_height, pooled_width, position_sensitive);
  const Shapes s = shapes_of(input, rois, pooled_height, pooled_width, position_sensitive);
  const auto input_c = input.contiguous();
  const auto rois_c = rois.to(at::toOpMathType(input.scalar_type())).contiguous();
  auto output = at::empty({s.rois, s.out_channels, pooled_height, pooled_width}, input.options());
  if (output.numel() == 0) return output;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "prroi_pool_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    forward_kernel<scalar_t, acc_t>(input_c.data_ptr<scalar_t>(), rois_c.data_ptr<acc_t>(),
                                    static_cast<acc_t>(spatial_scale), s, output.data_ptr<scalar_t>());
  });
  return output;
}

at::Tensor backward_input_cpu(const at::Tensor& grad_output, const at::Tensor& rois, double spatial_scale,
                              int64_t pooled_height, int64_t pooled_width, bool position_sensitive,
                              int64_t batch_size, int64_t channels, int64_t height, int64_t width) {
  const auto acc_type = at::toOpMathType(grad_output.scalar_type());
  auto grad_input = at::zeros({batch_size, channels, height, width}, grad_output.options().dtype(acc_type));
  check_pooling_arguments(grad_input, rois, pooled_height, pooled_width, position_sensitive);
  const Shapes s = shapes_of(grad_input, rois, pooled_height, pooled_width, position_sensitive);
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == s.rois && grad_output.size(1) == s.out_channels &&
                  grad_output.size(2) == pooled_height && grad_output.size(3) == pooled_width,
              "prroi_pool_backward_input: grad_output has shape ", grad_output.sizes(), ", expected [", s.rois,
              ", ", s.out_channels, ", ", pooled_height, ", ", pooled_width, "]");
  if (grad_output.numel() == 0 || grad_input.numel() == 0) return grad_input.to(grad_output.scalar_type());
  const auto grad_output_c = grad_output.contiguous();
  const auto rois_c = rois.to(acc_type).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(), "prroi_pool_backward_input_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    backward_input_kernel<scalar_t, acc_t>(grad_output_c.data_ptr<scalar_t>(), rois_c.data_ptr<acc_t>(),
                                           static_cast<acc_t>(spatial_scale), s, grad_input.data_ptr<acc_t>());
  });
  return grad_input.to(grad_output.scalar_type());
}

at::Tensor backward_rois_cpu(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& rois,
                             const at::Tensor& output, double spatial_scale, int64_t pooled_height,
                             int64_t pooled_width, bool position_sensitive) {
  check_pooling_arguments(input, rois, pooled_height, pooled_width, position_sensitive);
  const Shapes s = shapes_of(input, rois, pooled_height, pooled_width, position_sensitive);
  TORCH_CHECK(grad_output.sizes() == output.sizes() && output.dim() == 4 && output.size(0) == s.rois &&
                  output.size(1) == s.out_channels,
              "prroi_pool_backward_rois: grad_output ", grad_output.sizes(), " and output ", output.sizes(),
              " must both be [", s.rois, ", ", s.out_channels, ", ", pooled_height, ", ", pooled_width, "]");
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type() && output.scalar_type() == input.scalar_type(),
              "prroi_pool_backward_rois: grad_output, input and output must share a dtype");
  const auto acc_type = at::toOpMathType(input.scalar_type());
  auto grad_rois = at::zeros({s.rois, 5}, rois.options().dtype(acc_type));
  if (grad_output.numel() == 0) return grad_rois.to(rois.scalar_type());
  const auto rois_c = rois.to(acc_type).contiguous();
  const auto grad_output_c = grad_output.contiguous();
  const auto input_c = input.contiguous();
  const auto output_c = output.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "prroi_pool_backward_rois_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    backward_rois_kernel<scalar_t, acc_t>(grad_output_c.data_ptr<scalar_t>(), input_c.data_ptr<scalar_t>(),
                                          rois_c.data_ptr<acc_t>(), output_c.data_ptr<scalar_t>(),
                                          static_cast<acc_t>(spatial_scale), s, grad_rois.data_ptr<acc_t>());
  });
  return grad_rois.to(rois.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(sodlib, CPU, m) {
  m.impl("prroi_pool_forward", &forward_cpu);
  m.impl("prroi_pool_backward_input", &backward_input_cpu);
  m.impl("prroi_pool_backward_rois", &backward_rois_cpu);
}

}  // namespace prroi
}  // namespace sodlib
