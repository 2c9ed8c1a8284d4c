#pragma once
// Argument checks and output shapes shared by the CPU and the CUDA kernels of PrRoI pooling.
// The friendly, argument-by-argument errors are raised in Python (sodlib/ops/arguments.py); these checks
// keep the kernels safe when the ops are called directly through torch.ops.sodlib.

#include <ATen/ATen.h>

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

}  // namespace prroi
}  // namespace sodlib
