// CUDA kernels of PrRoI and PS-PrRoI pooling (forward, feature backward, RoI-coordinate backward).
//
// Forward and feature backward use one thread per output element and compute the pixel weights
// A(lo, hi; p) on the fly (prroi_math.h). The feature backward scatters into the input gradient with
// atomicAdd (RoIs overlap), into a float32/float64 buffer that is cast back at the end.
// The RoI-coordinate backward uses one block per RoI: every thread sums the four corner gradients of
// its share of (channel, bin) pairs, and the block reduces them in shared memory, so each RoI's gradient
// is written once, with no atomics.
// Half and bfloat16 are read as they are and accumulated in float32 (at::opmath_type). Kernels run on
// the current stream of the input's device; nothing synchronises.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "prroi_math.h"
#include "prroi_pool.h"

namespace sodlib {
namespace prroi {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;

int64_t blocks_for(int64_t n) { return std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks)); }

// Integral of f over [x1, x2] x [y1, y2]: sum_ij A(y1, y2; i) A(x1, x2; j) w[i][j].
template <typename acc_t, typename scalar_t>
__device__ acc_t bin_integral(const scalar_t* plane, const Shapes& s, acc_t x1, acc_t x2, acc_t y1, acc_t y2) {
  const int64_t i_last = last_pixel(y2, s.height), j_first = first_pixel(x1), j_last = last_pixel(x2, s.width);
  acc_t total = 0;
  for (int64_t i = first_pixel(y1); i <= i_last; ++i) {
    acc_t row = 0;
    for (int64_t j = j_first; j <= j_last; ++j)
      row += hat_integral(x1, x2, j) * static_cast<acc_t>(plane[i * s.width + j]);
    total += hat_integral(y1, y2, i) * row;
  }
  return total;
}

// Integral of f along the vertical segment x = x, y in [y1, y2].
template <typename acc_t, typename scalar_t>
__device__ acc_t vertical_line_integral(const scalar_t* plane, const Shapes& s, acc_t x, acc_t y1, acc_t y2) {
  const int64_t i_last = last_pixel(y2, s.height), j_first = first_pixel(x);
  const int64_t j_last = min(last_pixel(x, s.width), j_first + 1);
  acc_t total = 0;
  for (int64_t i = first_pixel(y1); i <= i_last; ++i) {
    acc_t row = 0;
    for (int64_t j = j_first; j <= j_last; ++j)
      row += hat(x - static_cast<acc_t>(j)) * static_cast<acc_t>(plane[i * s.width + j]);
    total += hat_integral(y1, y2, i) * row;
  }
  return total;
}

// Integral of f along the horizontal segment y = y, x in [x1, x2].
template <typename acc_t, typename scalar_t>
__device__ acc_t horizontal_line_integral(const scalar_t* plane, const Shapes& s, acc_t y, acc_t x1, acc_t x2) {
  const int64_t i_first = first_pixel(y), i_last = min(last_pixel(y, s.height), i_first + 1);
  const int64_t j_first = first_pixel(x1), j_last = last_pixel(x2, s.width);
  acc_t total = 0;
  for (int64_t i = i_first; i <= i_last; ++i) {
    acc_t row = 0;
    for (int64_t j = j_first; j <= j_last; ++j)
      row += hat_integral(x1, x2, j) * static_cast<acc_t>(plane[i * s.width + j]);
    total += hat(y - static_cast<acc_t>(i)) * row;
  }
  return total;
}

// Position (RoI k, channel c, bin row ph, bin column pw) of a flat index into the output [K, C', kh, kw].
struct BinIndex {
  int64_t k, c, ph, pw;
};

__device__ __forceinline__ BinIndex bin_index(int64_t index, const Shapes& s) {
  BinIndex bin;
  bin.pw = index % s.pooled_width;
  bin.ph = (index / s.pooled_width) % s.pooled_height;
  bin.c = (index / (s.pooled_width * s.pooled_height)) % s.out_channels;
  bin.k = index / (s.pooled_width * s.pooled_height * s.out_channels);
  return bin;
}

template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(const scalar_t* __restrict__ input, const acc_t* __restrict__ rois, acc_t scale,
                               Shapes s, int64_t total, scalar_t* __restrict__ output) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const auto [k, c, ph, pw] = bin_index(index, s);
    const auto g = roi_geometry(rois + 5 * k, scale, s.pooled_height, s.pooled_width, s.batch);
    if (!g.valid) {
      output[index] = scalar_t(0);
      continue;
    }
    const acc_t x1 = g.x1 + pw * g.bin_w, y1 = g.y1 + ph * g.bin_h;
    const scalar_t* plane = input + s.plane_offset(g.batch, c, ph, pw);
    const acc_t integral = bin_integral(plane, s, x1, g.x1 + (pw + 1) * g.bin_w, y1, g.y1 + (ph + 1) * g.bin_h);
    output[index] = static_cast<scalar_t>(integral / (g.bin_w * g.bin_h));
  }
}

template <typename scalar_t, typename acc_t>
__global__ void backward_input_kernel(const scalar_t* __restrict__ grad_output, const acc_t* __restrict__ rois,
                                      acc_t scale, Shapes s, int64_t total, acc_t* __restrict__ grad_input) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const auto [k, c, ph, pw] = bin_index(index, s);
    const auto g = roi_geometry(rois + 5 * k, scale, s.pooled_height, s.pooled_width, s.batch);
    if (!g.valid) continue;
    const acc_t grad = static_cast<acc_t>(grad_output[index]) / (g.bin_w * g.bin_h);
    if (grad == acc_t(0)) continue;
    const acc_t x1 = g.x1 + pw * g.bin_w, x2 = g.x1 + (pw + 1) * g.bin_w;
    const acc_t y1 = g.y1 + ph * g.bin_h, y2 = g.y1 + (ph + 1) * g.bin_h;
    acc_t* plane = grad_input + s.plane_offset(g.batch, c, ph, pw);
    const int64_t i_last = last_pixel(y2, s.height), j_first = first_pixel(x1), j_last = last_pixel(x2, s.width);
    for (int64_t i = first_pixel(y1); i <= i_last; ++i) {
      const acc_t row_grad = grad * hat_integral(y1, y2, i);
      for (int64_t j = j_first; j <= j_last; ++j) atomicAdd(plane + i * s.width + j, row_grad * hat_integral(x1, x2, j));
    }
  }
}

template <typename scalar_t, typename acc_t>
__global__ void backward_rois_kernel(const scalar_t* __restrict__ grad_output, const scalar_t* __restrict__ input,
                                     const acc_t* __restrict__ rois, const scalar_t* __restrict__ output,
                                     acc_t scale, Shapes s, acc_t* __restrict__ grad_rois) {
  __shared__ acc_t partial[4][kThreads];
  const int64_t k = blockIdx.x;
  const auto g = roi_geometry(rois + 5 * k, scale, s.pooled_height, s.pooled_width, s.batch);
  acc_t d_x1 = 0, d_y1 = 0, d_x2 = 0, d_y2 = 0;  // w.r.t. the scaled corners
  if (g.valid) {
    const acc_t inv_area = acc_t(1) / (g.bin_w * g.bin_h);
    const int64_t per_roi = s.out_channels * s.pooled_height * s.pooled_width;
    for (int64_t t = threadIdx.x; t < per_roi; t += blockDim.x) {
      const int64_t o = k * per_roi + t;
      const acc_t grad = static_cast<acc_t>(grad_output[o]);
      if (grad == acc_t(0)) continue;
      const int64_t pw = t % s.pooled_width;
      const int64_t ph = (t / s.pooled_width) % s.pooled_height;
      const int64_t c = t / (s.pooled_width * s.pooled_height);
      const acc_t x1 = g.x1 + pw * g.bin_w, x2 = g.x1 + (pw + 1) * g.bin_w;
      const acc_t y1 = g.y1 + ph * g.bin_h, y2 = g.y1 + (ph + 1) * g.bin_h;
      const scalar_t* plane = input + s.plane_offset(g.batch, c, ph, pw);
      const acc_t out = static_cast<acc_t>(output[o]);
      // derivative of the bin mean with respect to each of its edges (Zhang et al. 2021, eq. 7)
      const acc_t d_left = out / g.bin_w - vertical_line_integral(plane, s, x1, y1, y2) * inv_area;
      const acc_t d_right = vertical_line_integral(plane, s, x2, y1, y2) * inv_area - out / g.bin_w;
      const acc_t d_top = out / g.bin_h - horizontal_line_integral(plane, s, y1, x1, x2) * inv_area;
      const acc_t d_bottom = horizontal_line_integral(plane, s, y2, x1, x2) * inv_area - out / g.bin_h;
      // bin edges move with the RoI corners: left = x1 + pw / kw * (x2 - x1), right likewise with pw + 1
      const acc_t fl = static_cast<acc_t>(pw) / s.pooled_width, fr = static_cast<acc_t>(pw + 1) / s.pooled_width;
      const acc_t ft = static_cast<acc_t>(ph) / s.pooled_height, fb = static_cast<acc_t>(ph + 1) / s.pooled_height;
      d_x1 += grad * (d_left * (1 - fl) + d_right * (1 - fr));
      d_x2 += grad * (d_left * fl + d_right * fr);
      d_y1 += grad * (d_top * (1 - ft) + d_bottom * (1 - fb));
      d_y2 += grad * (d_top * ft + d_bottom * fb);
    }
  }
  partial[0][threadIdx.x] = d_x1;
  partial[1][threadIdx.x] = d_y1;
  partial[2][threadIdx.x] = d_x2;
  partial[3][threadIdx.x] = d_y2;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride)
      for (int v = 0; v < 4; ++v) partial[v][threadIdx.x] += partial[v][threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    grad_rois[5 * k] = acc_t(0);
    for (int v = 0; v < 4; ++v) grad_rois[5 * k + 1 + v] = partial[v][0] * scale;
  }
}

at::Tensor forward_cuda(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                        int64_t pooled_height, int64_t pooled_width, bool position_sensitive) {
  check_pooling_arguments(input, rois, pooled_height, pooled_width, position_sensitive);
  const c10::cuda::CUDAGuard device_guard(input.device());
  const Shapes s = shapes_of(input, rois, pooled_height, pooled_width, position_sensitive);
  const auto input_c = input.contiguous();
  const auto rois_c = rois.to(at::toOpMathType(input.scalar_type())).contiguous();
  auto output = at::empty({s.rois, s.out_channels, pooled_height, pooled_width}, input.options());
  const int64_t total = output.numel();
  if (total == 0) return output;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "prroi_pool_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    forward_kernel<scalar_t, acc_t><<<blocks_for(total), kThreads, 0, stream>>>(
        input_c.data_ptr<scalar_t>(), rois_c.data_ptr<acc_t>(), static_cast<acc_t>(spatial_scale), s, total,
        output.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return output;
}

at::Tensor backward_input_cuda(const at::Tensor& grad_output, const at::Tensor& rois, double spatial_scale,
                               int64_t pooled_height, int64_t pooled_width, bool position_sensitive,
                               int64_t batch_size, int64_t channels, int64_t height, int64_t width) {
  const c10::cuda::CUDAGuard device_guard(grad_output.device());
  const auto acc_type = at::toOpMathType(grad_output.scalar_type());
  auto grad_input = at::zeros({batch_size, channels, height, width}, grad_output.options().dtype(acc_type));
  check_pooling_arguments(grad_input, rois, pooled_height, pooled_width, position_sensitive);
  const Shapes s = shapes_of(grad_input, rois, pooled_height, pooled_width, position_sensitive);
  check_backward_input_arguments(grad_output, s);
  const int64_t total = grad_output.numel();
  if (total == 0 || grad_input.numel() == 0) return grad_input.to(grad_output.scalar_type());
  const auto grad_output_c = grad_output.contiguous();
  const auto rois_c = rois.to(acc_type).contiguous();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(), "prroi_pool_backward_input_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    backward_input_kernel<scalar_t, acc_t><<<blocks_for(total), kThreads, 0, stream>>>(
        grad_output_c.data_ptr<scalar_t>(), rois_c.data_ptr<acc_t>(), static_cast<acc_t>(spatial_scale), s, total,
        grad_input.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_input.to(grad_output.scalar_type());
}

at::Tensor backward_rois_cuda(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& rois,
                              const at::Tensor& output, double spatial_scale, int64_t pooled_height,
                              int64_t pooled_width, bool position_sensitive) {
  check_pooling_arguments(input, rois, pooled_height, pooled_width, position_sensitive);
  const c10::cuda::CUDAGuard device_guard(input.device());
  const Shapes s = shapes_of(input, rois, pooled_height, pooled_width, position_sensitive);
  check_backward_rois_arguments(grad_output, input, output, s);
  const BackwardRoisOperands op = backward_rois_operands(grad_output, input, rois, output);
  if (grad_output.numel() == 0) return op.grad_rois.to(rois.scalar_type());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "prroi_pool_backward_rois_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    backward_rois_kernel<scalar_t, acc_t><<<s.rois, kThreads, 0, stream>>>(
        op.grad_output.data_ptr<scalar_t>(), op.input.data_ptr<scalar_t>(), op.rois.data_ptr<acc_t>(),
        op.output.data_ptr<scalar_t>(), static_cast<acc_t>(spatial_scale), s, op.grad_rois.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return op.grad_rois.to(rois.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(sodlib, CUDA, m) {
  m.impl("prroi_pool_forward", &forward_cuda);
  m.impl("prroi_pool_backward_input", &backward_input_cuda);
  m.impl("prroi_pool_backward_rois", &backward_rois_cuda);
}

}  // namespace prroi
}  // namespace sodlib
