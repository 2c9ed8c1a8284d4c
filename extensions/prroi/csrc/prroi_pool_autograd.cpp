// The autograd formula of sodlib::prroi_pool_forward, registered for every device under the Autograd key.
//
// The forward saves the input, the RoIs and the output; the backward calls the two backward ops, each only
// when that input needs a gradient: prroi_pool_backward_input (features) and prroi_pool_backward_rois
// (RoI coordinates, Zhang et al. 2021, eq. 7). Gradients are first order only (no double backward).
// Written in C++ rather than with torch.library.register_autograd so that a training step pays no
// Python work for it; the fake (meta) kernels are registered from Python (sodlib/ops/registrations.py).

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace sodlib {
namespace prroi {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor call_forward(const at::Tensor& input, const at::Tensor& rois, double spatial_scale, int64_t pooled_height,
                        int64_t pooled_width, bool position_sensitive) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("sodlib::prroi_pool_forward", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double, int64_t, int64_t, bool)>();
  return op.call(input, rois, spatial_scale, pooled_height, pooled_width, position_sensitive);
}

at::Tensor call_backward_input(const at::Tensor& grad_output, const at::Tensor& rois, double spatial_scale,
                               int64_t pooled_height, int64_t pooled_width, bool position_sensitive,
                               const at::Tensor& input) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("sodlib::prroi_pool_backward_input", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double, int64_t, int64_t, bool, int64_t, int64_t,
                            int64_t, int64_t)>();
  return op.call(grad_output, rois, spatial_scale, pooled_height, pooled_width, position_sensitive, input.size(0),
                 input.size(1), input.size(2), input.size(3));
}

at::Tensor call_backward_rois(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& rois,
                              const at::Tensor& output, double spatial_scale, int64_t pooled_height,
                              int64_t pooled_width, bool position_sensitive) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("sodlib::prroi_pool_backward_rois", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                               const at::Tensor&, double, int64_t, int64_t, bool)>();
  return op.call(grad_output, input, rois, output, spatial_scale, pooled_height, pooled_width, position_sensitive);
}

class PrRoIPoolFunction : public torch::autograd::Function<PrRoIPoolFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& rois,
                            double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                            bool position_sensitive) {
    at::Tensor output;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      output = call_forward(input, rois, spatial_scale, pooled_height, pooled_width, position_sensitive);
    }
    ctx->save_for_backward({input, rois, output});
    ctx->saved_data["spatial_scale"] = spatial_scale;
    ctx->saved_data["pooled_height"] = pooled_height;
    ctx->saved_data["pooled_width"] = pooled_width;
    ctx->saved_data["position_sensitive"] = position_sensitive;
    return output;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &input = saved[0], &rois = saved[1], &output = saved[2];
    const double spatial_scale = ctx->saved_data["spatial_scale"].toDouble();
    const int64_t pooled_height = ctx->saved_data["pooled_height"].toInt();
    const int64_t pooled_width = ctx->saved_data["pooled_width"].toInt();
    const bool position_sensitive = ctx->saved_data["position_sensitive"].toBool();
    const at::Tensor grad = grad_outputs[0].contiguous();
    at::Tensor grad_input, grad_rois;
    if (ctx->needs_input_grad(0))
      grad_input = call_backward_input(grad, rois, spatial_scale, pooled_height, pooled_width, position_sensitive, input);
    if (ctx->needs_input_grad(1))
      grad_rois = call_backward_rois(grad, input, rois, output, spatial_scale, pooled_height, pooled_width,
                                     position_sensitive);
    return {grad_input, grad_rois, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor forward_autograd(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                            int64_t pooled_height, int64_t pooled_width, bool position_sensitive) {
  return PrRoIPoolFunction::apply(input, rois, spatial_scale, pooled_height, pooled_width, position_sensitive);
}

}  // namespace

TORCH_LIBRARY_IMPL(sodlib, Autograd, m) { m.impl("prroi_pool_forward", &forward_autograd); }

}  // namespace prroi
}  // namespace sodlib
