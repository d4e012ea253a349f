// The bvae op schemas (declared once, here) and their CPU kernels.
//
// Every public op comes in three parts, e.g. for the forward direction of a conv layer:
//   bi_conv2d      -> y           what a call without grad runs: no pre-activation is kept
//   bi_conv2d_fwd  -> (y, u)      what autograd's forward runs: u = the pre-activation, saved for backward
//   bi_conv2d_bwd  -> gradients   autograd's backward (recomputes a'(u) on the fly)
// Autograd and autocast live at their own dispatch keys (csrc/autograd.cpp), so no call enters Python.
//
// The same schemas are declared a second time under the prefix `triton_` (bvae::triton_bi_conv2d, ...): the
// Triton backend registers its kernels (Python, bvae_kernels/triton/) for those, and shares everything else
// with these ops: one schema text, one fake (bvae_kernels/_library.py), one autograd (autograd.cpp).
//
// The CPU kernels use ATen's convolution / matmul (oneDNN, BLAS) for the contraction and add two fused,
// vectorized passes (csrc/cpu/act_kernels.h), computed in opmath (float for bfloat16/half/float, double for
// double).
#include <Python.h>

#include "bvae.h"

extern "C" {
// An importable, empty Python module: the ops register themselves with the dispatcher at load time.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace bvae {
namespace DEFAULT {
std::tuple<Tensor, Tensor> bias_act_cpu(Tensor z, const BiasActArgs& args);
std::tuple<Tensor, Tensor> act_backward_cpu(const Tensor& grad, const OptTensor& u, ActParams act,
                                            const OptTensor& log_scale, bool bias_grad);
}  // namespace DEFAULT
namespace AVX2 {
std::tuple<Tensor, Tensor> bias_act_cpu(Tensor z, const BiasActArgs& args);
std::tuple<Tensor, Tensor> act_backward_cpu(const Tensor& grad, const OptTensor& u, ActParams act,
                                            const OptTensor& log_scale, bool bias_grad);
}  // namespace AVX2

namespace {

bool use_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return supported;
#else
  return false;
#endif
}

std::tuple<Tensor, Tensor> bias_act_cpu(Tensor z, const BiasActArgs& args) {
  return use_avx2() ? AVX2::bias_act_cpu(std::move(z), args) : DEFAULT::bias_act_cpu(std::move(z), args);
}

std::tuple<Tensor, Tensor> act_backward_cpu(const Tensor& grad, const OptTensor& u, ActParams act,
                                            const OptTensor& log_scale, bool bias_grad) {
  return use_avx2() ? AVX2::act_backward_cpu(grad, u, act, log_scale, bias_grad)
                    : DEFAULT::act_backward_cpu(grad, u, act, log_scale, bias_grad);
}

// name, then the schema after the name. `Tensor? u` of a backward op is absent when the activation's slope is
// constant (beta == 0): then nothing was saved for it. Backward outputs not asked for by output_mask are None.
// Every layer op ends in its input activation (in_alpha, in_beta, in_gamma), identity by default: the op reads
// a_in(input), so a layer can take the previous layer's pre-activation and keep only that for its backward
// (one saved activation per layer where eager keeps two); its backward recomputes a_in(input) and returns the
// gradient of the pre-activation.
#define BVAE_IN_ACT ", float in_alpha=1.0, float in_beta=0.0, float in_gamma=1.0"
// Conv ops end in the rest of nn.Conv2d's geometry, dilation and groups (ATen's meaning; 1 and 1 by default).
#define BVAE_CONV_GEOM ", int[2] dilation=1, int groups=1"
constexpr const char* kSchemas[][2] = {
    {"gnova", "(Tensor u, float alpha, float beta, float gamma) -> Tensor"},
    {"gnova_bwd", "(Tensor grad, Tensor u, float alpha, float beta, float gamma) -> Tensor"},
    {"bi_conv2d",
     "(Tensor x, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, float alpha, float beta, float gamma"
     BVAE_IN_ACT BVAE_CONV_GEOM ") -> Tensor"},
    {"bi_conv2d_fwd",
     "(Tensor x, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, float alpha, float beta, float gamma"
     BVAE_IN_ACT BVAE_CONV_GEOM ") -> (Tensor, Tensor)"},
    {"bi_conv2d_bwd",
     "(Tensor grad, Tensor x, Tensor weight, Tensor? u, int[2] stride, int[2] padding, float alpha, float beta, "
     "float gamma, bool[3] output_mask" BVAE_IN_ACT BVAE_CONV_GEOM ") -> (Tensor, Tensor, Tensor)"},
    {"bi_conv2d_reverse",
     "(Tensor z, Tensor weight, Tensor? bias, Tensor? log_scale, int[2] stride, int[2] padding, "
     "int[2] output_padding, float alpha, float beta, float gamma" BVAE_IN_ACT BVAE_CONV_GEOM ") -> Tensor"},
    {"bi_conv2d_reverse_fwd",
     "(Tensor z, Tensor weight, Tensor? bias, Tensor? log_scale, int[2] stride, int[2] padding, "
     "int[2] output_padding, float alpha, float beta, float gamma" BVAE_IN_ACT BVAE_CONV_GEOM ") -> (Tensor, Tensor)"},
    {"bi_conv2d_reverse_bwd",
     "(Tensor grad, Tensor z, Tensor weight, Tensor? u, Tensor? log_scale, int[2] stride, int[2] padding, "
     "int[2] output_padding, float alpha, float beta, float gamma, bool[4] output_mask" BVAE_IN_ACT BVAE_CONV_GEOM
     ") -> (Tensor, Tensor, Tensor, Tensor)"},
    {"bi_linear", "(Tensor x, Tensor weight, Tensor? bias, float alpha, float beta, float gamma" BVAE_IN_ACT
                  ") -> Tensor"},
    {"bi_linear_fwd",
     "(Tensor x, Tensor weight, Tensor? bias, float alpha, float beta, float gamma" BVAE_IN_ACT
     ") -> (Tensor, Tensor)"},
    {"bi_linear_bwd",
     "(Tensor grad, Tensor x, Tensor weight, Tensor? u, float alpha, float beta, float gamma, bool[3] output_mask"
     BVAE_IN_ACT ") -> (Tensor, Tensor, Tensor)"},
    {"bi_linear_reverse",
     "(Tensor z, Tensor weight, Tensor? bias, Tensor? log_scale, float alpha, float beta, float gamma" BVAE_IN_ACT
     ") -> Tensor"},
    {"bi_linear_reverse_fwd",
     "(Tensor z, Tensor weight, Tensor? bias, Tensor? log_scale, float alpha, float beta, float gamma" BVAE_IN_ACT
     ") -> (Tensor, Tensor)"},
    {"bi_linear_reverse_bwd",
     "(Tensor grad, Tensor z, Tensor weight, Tensor? u, Tensor? log_scale, float alpha, float beta, float gamma, "
     "bool[4] output_mask" BVAE_IN_ACT ") -> (Tensor, Tensor, Tensor, Tensor)"},
};
#undef BVAE_IN_ACT
#undef BVAE_CONV_GEOM

}  // namespace

TORCH_LIBRARY(bvae, m) {
  // Fake kernels for torch.compile live in Python; the dispatcher imports this module when it needs them.
  m.set_python_module("bvae_kernels._library");
  for (const auto& entry : kSchemas) {
    for (const std::string prefix : {"", "triton_"}) m.def((prefix + entry[0] + entry[1]).c_str());
  }
}

TORCH_LIBRARY_IMPL(bvae, CPU, m) { DeviceOps<bias_act_cpu, act_backward_cpu>::register_all(m); }

}  // namespace bvae
