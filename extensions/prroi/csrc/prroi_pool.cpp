// The schemas of the pooling ops, registered once under the `sodlib` namespace, and the Python module sodlib._C.
// The kernels register themselves per device (cpu/prroi_pool_cpu.cpp, cuda/prroi_pool_kernel.cu), autograd in
// C++ (prroi_pool_autograd.cpp); the fake (meta) kernels are registered from Python (sodlib/ops/registrations.py).
//
// All three ops serve plain PrRoI pooling and its position-sensitive variant (PS-PrRoI), chosen by
// `position_sensitive`. Shapes: input Tensor[N, C, H, W], rois Tensor[K, 5], output Tensor[K, C', kh, kw]
// with C' = C (plain) or C / (kh * kw) (position-sensitive).

#include <Python.h>
#include <torch/library.h>

// An importable module with no Python functions: importing sodlib._C loads this library, and loading
// it runs the registrations below, which make the ops available as torch.ops.sodlib.*.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(sodlib, m) {
  // out[k, c, ph, pw] = mean of the bilinear interpolant of input channel c' over bin (ph, pw) of RoI k
  m.def(
      "prroi_pool_forward(Tensor input, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width, bool position_sensitive) -> Tensor");
  // d loss / d input, given d loss / d output
  m.def(
      "prroi_pool_backward_input(Tensor grad_output, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width, bool position_sensitive, int batch_size, int channels, int height, int width) "
      "-> Tensor");
  // d loss / d rois, given d loss / d output, the input and the forward output (column 0 gets 0)
  m.def(
      "prroi_pool_backward_rois(Tensor grad_output, Tensor input, Tensor rois, Tensor output, "
      "float spatial_scale, int pooled_height, int pooled_width, bool position_sensitive) -> Tensor");
}
