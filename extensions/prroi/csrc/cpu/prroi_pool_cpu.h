#pragma once
// The CPU kernels' entry points, once per instruction set they are compiled for (see prroi_pool_kernels.h).
// Arguments and shapes as in the op schemas of prroi_pool.cpp.

#include <ATen/ATen.h>

namespace sodlib {
namespace prroi {

#define SODLIB_DECLARE_CPU_KERNELS                                                                                \
  at::Tensor forward(const at::Tensor& input, const at::Tensor& rois, double spatial_scale, int64_t pooled_height, \
                     int64_t pooled_width, bool position_sensitive);                                              \
  at::Tensor backward_input(const at::Tensor& grad_output, const at::Tensor& rois, double spatial_scale,          \
                            int64_t pooled_height, int64_t pooled_width, bool position_sensitive,                 \
                            int64_t batch_size, int64_t channels, int64_t height, int64_t width);                 \
  at::Tensor backward_rois(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& rois,        \
                           const at::Tensor& output, double spatial_scale, int64_t pooled_height,                 \
                           int64_t pooled_width, bool position_sensitive);

namespace baseline {
SODLIB_DECLARE_CPU_KERNELS
}  // namespace baseline

namespace avx2 {
SODLIB_DECLARE_CPU_KERNELS
// whether this build holds the AVX2 kernels at all (x86-64 with GCC); the CPU may still lack AVX2
bool compiled();
}  // namespace avx2

#undef SODLIB_DECLARE_CPU_KERNELS

}  // namespace prroi
}  // namespace sodlib
