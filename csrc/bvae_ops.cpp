// bvae op schemas (declared once, here) and their CPU implementations.
//
// The CPU backend uses ATen's convolution / matmul (oneDNN, BLAS) for the contraction and adds two fused,
// vectorized OpenMP passes: bias + activation after the forward contraction, activation-gradient +
// bias-gradient before the backward contractions. Everything is computed in opmath (float for
// bfloat16/half/float, double for double).
#include <Python.h>

#include "bvae_common.h"

extern "C" {
// An importable, empty Python module: the ops register themselves with the dispatcher at load time.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace bvae {
namespace DEFAULT {
std::tuple<at::Tensor, at::Tensor> bias_act_cpu(at::Tensor z, const c10::optional<at::Tensor>& bias, ActParams act);
std::tuple<at::Tensor, at::Tensor> act_backward_cpu(const at::Tensor& grad, const at::Tensor& u, ActParams act,
                                                    bool bias_grad);
}  // namespace DEFAULT
namespace AVX2 {
std::tuple<at::Tensor, at::Tensor> bias_act_cpu(at::Tensor z, const c10::optional<at::Tensor>& bias, ActParams act);
std::tuple<at::Tensor, at::Tensor> act_backward_cpu(const at::Tensor& grad, const at::Tensor& u, ActParams act,
                                                    bool bias_grad);
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

std::tuple<at::Tensor, at::Tensor> bias_act_cpu(at::Tensor z, const c10::optional<at::Tensor>& bias,
                                                ActParams act) {
  return use_avx2() ? AVX2::bias_act_cpu(std::move(z), bias, act) : DEFAULT::bias_act_cpu(std::move(z), bias, act);
}

std::tuple<at::Tensor, at::Tensor> act_backward_cpu(const at::Tensor& grad, const at::Tensor& u, ActParams act,
                                                    bool bias_grad) {
  return use_avx2() ? AVX2::act_backward_cpu(grad, u, act, bias_grad)
                    : DEFAULT::act_backward_cpu(grad, u, act, bias_grad);
}

}  // namespace

TORCH_LIBRARY(bvae, m) {
  m.def("gnova(Tensor u, float alpha, float beta, float gamma) -> Tensor");
  m.def("gnova_backward(Tensor grad, Tensor u, float alpha, float beta, float gamma) -> Tensor");
  m.def(
      "bi_conv2d(Tensor x, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, float alpha, float beta, "
      "float gamma) -> (Tensor, Tensor)");
  m.def(
      "bi_conv2d_backward(Tensor grad, Tensor x, Tensor weight, Tensor u, int[2] stride, int[2] padding, "
      "float alpha, float beta, float gamma, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  m.def(
      "bi_conv2d_reverse(Tensor z, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, "
      "int[2] output_padding, float alpha, float beta, float gamma) -> (Tensor, Tensor)");
  m.def(
      "bi_conv2d_reverse_backward(Tensor grad, Tensor z, Tensor weight, Tensor u, int[2] stride, "
      "int[2] padding, int[2] output_padding, float alpha, float beta, float gamma, bool[3] output_mask) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "bi_linear(Tensor x, Tensor weight, Tensor? bias, float alpha, float beta, float gamma) "
      "-> (Tensor, Tensor)");
  m.def(
      "bi_linear_backward(Tensor grad, Tensor x, Tensor weight, Tensor u, float alpha, float beta, "
      "float gamma, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  m.def(
      "bi_linear_reverse(Tensor z, Tensor weight, Tensor? bias, float alpha, float beta, float gamma) "
      "-> (Tensor, Tensor)");
  m.def(
      "bi_linear_reverse_backward(Tensor grad, Tensor z, Tensor weight, Tensor u, float alpha, float beta, "
      "float gamma, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(bvae, CPU, m) {
  m.impl("gnova", &gnova_impl<bias_act_cpu>);
  m.impl("gnova_backward", &gnova_backward_impl<act_backward_cpu>);
  m.impl("bi_conv2d", &bi_conv2d_impl<bias_act_cpu>);
  m.impl("bi_conv2d_backward", &bi_conv2d_backward_impl<act_backward_cpu>);
  m.impl("bi_conv2d_reverse", &bi_conv2d_reverse_impl<bias_act_cpu>);
  m.impl("bi_conv2d_reverse_backward", &bi_conv2d_reverse_backward_impl<act_backward_cpu>);
  m.impl("bi_linear", &bi_linear_impl<bias_act_cpu>);
  m.impl("bi_linear_backward", &bi_linear_backward_impl<act_backward_cpu>);
  m.impl("bi_linear_reverse", &bi_linear_reverse_impl<bias_act_cpu>);
  m.impl("bi_linear_reverse_backward", &bi_linear_reverse_backward_impl<act_backward_cpu>);
}

}  // namespace bvae
