// Registers the CPU kernels of the sodlib ops (the AVX2 build where the CPU has AVX2 and FMA, else the baseline
// build; SODLIB_CPU_KERNELS=baseline forces the baseline) and the op cpu_kernels(), which says which one runs.

#include <torch/library.h>

#include <cstdlib>
#include <cstring>

#include "cpu/prroi_pool_cpu.h"

namespace sodlib {
namespace prroi {
namespace {

bool use_avx2() {
  static const bool use = [] {
    const char* choice = std::getenv("SODLIB_CPU_KERNELS");
    if (choice != nullptr && std::strcmp(choice, "baseline") == 0) return false;
#if defined(__x86_64__) && defined(__GNUC__)
    return avx2::compiled() && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
  }();
  return use;
}

at::Tensor forward(const at::Tensor& input, const at::Tensor& rois, double spatial_scale, int64_t pooled_height,
                   int64_t pooled_width, bool position_sensitive) {
  return use_avx2() ? avx2::forward(input, rois, spatial_scale, pooled_height, pooled_width, position_sensitive)
                    : baseline::forward(input, rois, spatial_scale, pooled_height, pooled_width, position_sensitive);
}

at::Tensor backward_input(const at::Tensor& grad_output, const at::Tensor& rois, double spatial_scale,
                          int64_t pooled_height, int64_t pooled_width, bool position_sensitive, int64_t batch_size,
                          int64_t channels, int64_t height, int64_t width) {
  auto kernel = use_avx2() ? &avx2::backward_input : &baseline::backward_input;
  return kernel(grad_output, rois, spatial_scale, pooled_height, pooled_width, position_sensitive, batch_size,
                channels, height, width);
}

at::Tensor backward_rois(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& rois,
                         const at::Tensor& output, double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                         bool position_sensitive) {
  auto kernel = use_avx2() ? &avx2::backward_rois : &baseline::backward_rois;
  return kernel(grad_output, input, rois, output, spatial_scale, pooled_height, pooled_width, position_sensitive);
}

// which kernels run: "avx2" or "baseline"
std::string cpu_kernels() { return use_avx2() ? "avx2" : "baseline"; }

}  // namespace

TORCH_LIBRARY_IMPL(sodlib, CPU, m) {
  m.impl("prroi_pool_forward", &forward);
  m.impl("prroi_pool_backward_input", &backward_input);
  m.impl("prroi_pool_backward_rois", &backward_rois);
}

TORCH_LIBRARY_FRAGMENT(sodlib, m) { m.def("cpu_kernels() -> str", &cpu_kernels); }

}  // namespace prroi
}  // namespace sodlib
