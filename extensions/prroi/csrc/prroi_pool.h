#pragma once
// Argument checks, output shapes and backward operands shared by the CPU and the CUDA kernels of PrRoI pooling.
// The friendly, argument-by-argument errors are raised in Python (sodlib/ops/arguments.py); these checks
// keep the kernels safe when the ops are called directly through torch.ops.sodlib.

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include "prroi_math.h"

namespace sodlib {
namespace prroi {

inline void check_pooling_arguments(const at::Tensor& input, const at::Tensor& rois, int64_t pooled_height,
                                    int64_t pooled_width, bool position_sensitive) {
  TORCH_CHECK(input.dim() == 4, "prroi_pool: input must be Tensor[N, C, H, W], got ", input.dim(), " dims");
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5,
              "prroi_pool: rois must be Tensor[K, 5] (batch_index, x1, y1, x2, y2), got ", rois.sizes());
  TORCH_CHECK(at::isFloatingType(input.scalar_type()) && at::isFloatingType(rois.scalar_type()),
              "prroi_pool: input and rois must be floating point");
  TORCH_CHECK(input.device() == rois.device(), "prroi_pool: input is on ", input.device(), " but rois on ",
              rois.device());
  TORCH_CHECK(pooled_height > 0 && pooled_width > 0, "prroi_pool: output size must be positive");
  if (position_sensitive) {
    TORCH_CHECK(input.size(1) % (pooled_height * pooled_width) == 0,
                "ps_prroi_pool: input channels (", input.size(1), ") must be a multiple of pooled_height * ",
                "pooled_width (", pooled_height * pooled_width, ")");
  }
}

// Channels of the pooled output: C for plain pooling, C / (kh * kw) for position-sensitive pooling.
inline int64_t output_channels(int64_t input_channels, int64_t pooled_height, int64_t pooled_width,
                               bool position_sensitive) {
  return position_sensitive ? input_channels / (pooled_height * pooled_width) : input_channels;
}

// The sizes of a call from its input (or, for the feature gradient, the gradient's shape) and RoIs.
inline Shapes shapes_of(const at::Tensor& input, const at::Tensor& rois, int64_t pooled_height, int64_t pooled_width,
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

// prroi_pool_backward_input: grad_output must be [K, C', kh, kw]
inline void check_backward_input_arguments(const at::Tensor& grad_output, const Shapes& s) {
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == s.rois && grad_output.size(1) == s.out_channels &&
                  grad_output.size(2) == s.pooled_height && grad_output.size(3) == s.pooled_width,
              "prroi_pool_backward_input: grad_output has shape ", grad_output.sizes(), ", expected [", s.rois,
              ", ", s.out_channels, ", ", s.pooled_height, ", ", s.pooled_width, "]");
}

// prroi_pool_backward_rois: grad_output and output must both be [K, C', kh, kw], in the input's dtype
inline void check_backward_rois_arguments(const at::Tensor& grad_output, const at::Tensor& input,
                                          const at::Tensor& output, const Shapes& s) {
  TORCH_CHECK(grad_output.sizes() == output.sizes() && output.dim() == 4 && output.size(0) == s.rois &&
                  output.size(1) == s.out_channels,
              "prroi_pool_backward_rois: grad_output ", grad_output.sizes(), " and output ", output.sizes(),
              " must both be [", s.rois, ", ", s.out_channels, ", ", s.pooled_height, ", ", s.pooled_width, "]");
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type() && output.scalar_type() == input.scalar_type(),
              "prroi_pool_backward_rois: grad_output, input and output must share a dtype");
}

// The operands of prroi_pool_backward_rois made contiguous, its RoIs in the accumulation type, and the
// gradient it fills, Tensor[K, 5] of zeros in that type.
struct BackwardRoisOperands {
  at::Tensor grad_output, input, rois, output, grad_rois;
};

inline BackwardRoisOperands backward_rois_operands(const at::Tensor& grad_output, const at::Tensor& input,
                                                   const at::Tensor& rois, const at::Tensor& output) {
  const auto acc_type = at::toOpMathType(input.scalar_type());
  return {grad_output.contiguous(), input.contiguous(), rois.to(acc_type).contiguous(), output.contiguous(),
          at::zeros({rois.size(0), 5}, rois.options().dtype(acc_type))};
}

}  // namespace prroi
}  // namespace sodlib
