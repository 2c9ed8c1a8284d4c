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
// Plain PrRoI shares the channels between bins: two separable passes over blocks of channels
// (cpu/plain_kernels.h).
// Half and bfloat16 inputs are read as they are and accumulated in float32 (at::opmath_type).
//
// This file includes every header the kernels use, opens their namespaces and includes the kernels' parts
// inside them, each after the parts it uses:
//     cpu/taps.h           the pixels under each bin and their weights ("taps"); grain() of at::parallel_for
//     cpu/ps_kernels.h     PS-PrRoI: forward, feature gradient, box gradient
//     cpu/vec.h            the vector of kBlock channels (Channels), register transposes, channel blocks
//     cpu/plain_blocked.h  plain PrRoI: a RoI's pixels and gradient in channel blocks, the passes' loops
//     cpu/plain_small.h    plain PrRoI: RoIs whose pixels fit a 4 x 4 window, as small matrix products
//     cpu/plain_kernels.h  plain PrRoI: forward, feature gradient, box gradient
// The parts include no headers themselves (the system and ATen headers must stay outside the namespaces),
// each stops with an error unless included here (SODLIB_CPU_KERNEL_PARTS), and each is compiled once in each
// of the two files that include this one. After them come check_rois and the entry points declared
// in prroi_pool_cpu.h, which check their arguments and pick the kernels.

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

#define SODLIB_CPU_KERNEL_PARTS
#include "cpu/taps.h"
#include "cpu/ps_kernels.h"
#include "cpu/vec.h"
#include "cpu/plain_blocked.h"
#include "cpu/plain_small.h"
#include "cpu/plain_kernels.h"
#undef SODLIB_CPU_KERNEL_PARTS

// Every RoI's batch index (column 0) is an integer in [0, batch), and its four coordinates are finite (a NaN
// or infinite box, from a diverging box regression, would otherwise pool zeros with a zero gradient and hide
// the divergence): checked in one pass before any work. Done here rather than in Python, where the same test
// takes several small tensor ops, which cost more than pooling a few RoIs.
template <typename acc_t>
void check_rois(const acc_t* rois, int64_t count, int64_t batch, bool position_sensitive) {
  const char* op = position_sensitive ? "ps_prroi_pool" : "prroi_pool";
  for (int64_t k = 0; k < count; ++k) {
    const acc_t* roi = rois + 5 * k;
    const acc_t n = roi[0];
    TORCH_CHECK_VALUE(n >= 0 && n < static_cast<acc_t>(batch) && n == std::trunc(n), op,
                      ": rois[:, 0] must hold integer batch indices in [0, ", batch, "), got ", n, " in row ", k);
    TORCH_CHECK_VALUE(std::isfinite(roi[1]) && std::isfinite(roi[2]) && std::isfinite(roi[3]) && std::isfinite(roi[4]),
                      op, ": rois[:, 1:] must be finite box coordinates, got (", roi[1], ", ", roi[2], ", ", roi[3],
                      ", ", roi[4], ") in row ", k, " (a diverging box regression?)");
  }
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
    check_rois(rois_c.data_ptr<acc_t>(), s.rois, s.batch, position_sensitive);
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
