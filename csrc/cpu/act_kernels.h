// The CPU backend's two fused passes, written once and compiled per CPU capability (DEFAULT, AVX2):
// the including .cpp defines CPU_CAPABILITY, which puts ATen's Vectorized<T> (and these kernels) in a
// namespace of its own, as ATen does for its own kernels. bvae_ops.cpp picks a capability at run time.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../bvae_common.h"

namespace bvae {
namespace CPU_CAPABILITY {

using at::vec::Vectorized;

constexpr int64_t kBlock = 256;          // elements converted to opmath at a time
constexpr int64_t kGrainElems = 32768;   // minimum elements per parallel task
constexpr int64_t kRowsPerChunk = 256;   // fixed row chunk of the bias-gradient reduction (deterministic)

// y = a(u) for n contiguous opmath values. alpha == 0 skips the linear term so that sigmoid(-inf) = 0
// instead of 0 * -inf = NaN. sigmoid via 1 / (1 + exp(-g u)) is exact at the ends: exp overflow gives
// 1 / inf = 0, never NaN.
template <typename acc_t>
inline void act_values(const acc_t* u, acc_t* y, int64_t n, const ActParams& p) {
  using Vec = Vectorized<acc_t>;
  const acc_t alpha = p.alpha, beta = p.beta, gamma = p.gamma;
  const Vec va(alpha), vb(beta), vng(-gamma), one(acc_t(1));
  int64_t i = 0;
  for (; i + Vec::size() <= n; i += Vec::size()) {
    Vec x = Vec::loadu(u + i);
    Vec out = beta != 0 ? vb * (one / (one + (vng * x).exp())) : Vec(acc_t(0));
    if (alpha != 0) out = out + va * x;
    out.store(y + i);
  }
  for (; i < n; ++i) {
    acc_t out = beta != 0 ? beta / (acc_t(1) + std::exp(-gamma * u[i])) : acc_t(0);
    if (alpha != 0) out += alpha * u[i];
    y[i] = out;
  }
}

// du = g * a'(u), a'(u) = alpha + beta * gamma * s * (1 - s), for n contiguous opmath values.
template <typename acc_t>
inline void act_grad_values(const acc_t* g, const acc_t* u, acc_t* du, int64_t n, const ActParams& p) {
  using Vec = Vectorized<acc_t>;
  const acc_t alpha = p.alpha, bg = p.beta * p.gamma, gamma = p.gamma;
  const Vec va(alpha), vbg(bg), vng(-gamma), one(acc_t(1));
  int64_t i = 0;
  for (; i + Vec::size() <= n; i += Vec::size()) {
    Vec x = Vec::loadu(u + i);
    Vec d = va;
    if (bg != 0) {
      Vec s = one / (one + (vng * x).exp());
      d = d + vbg * s * (one - s);
    }
    (Vec::loadu(g + i) * d).store(du + i);
  }
  for (; i < n; ++i) {
    acc_t d = alpha;
    if (bg != 0) {
      acc_t s = acc_t(1) / (acc_t(1) + std::exp(-gamma * u[i]));
      d += bg * s * (acc_t(1) - s);
    }
    du[i] = g[i] * d;
  }
}

// One contiguous run of n elements: u += bias (scalar or per-element vector), y = a(u).
// For reduced types u is rounded before a(u) so y matches the u that backward will see.
template <typename scalar_t>
void bias_act_run(scalar_t* u, scalar_t* y, int64_t n, const scalar_t* bias_vec, const scalar_t* bias_scalar,
                  const ActParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    if (bias_vec) {
      for (int64_t i = 0; i < n; ++i) u[i] += bias_vec[i];
    } else if (bias_scalar) {
      const acc_t b = *bias_scalar;
      for (int64_t i = 0; i < n; ++i) u[i] += b;
    }
    act_values<acc_t>(u, y, n, p);
  } else {
    acc_t ubuf[kBlock], ybuf[kBlock];
    for (int64_t start = 0; start < n; start += kBlock) {
      const int64_t len = std::min(kBlock, n - start);
      for (int64_t i = 0; i < len; ++i) {
        acc_t v = static_cast<acc_t>(u[start + i]);
        if (bias_vec) v += static_cast<acc_t>(bias_vec[start + i]);
        if (bias_scalar) v += static_cast<acc_t>(*bias_scalar);
        const scalar_t rounded = static_cast<scalar_t>(v);
        u[start + i] = rounded;
        ubuf[i] = static_cast<acc_t>(rounded);
      }
      act_values<acc_t>(ubuf, ybuf, len, p);
      for (int64_t i = 0; i < len; ++i) y[start + i] = static_cast<scalar_t>(ybuf[i]);
    }
  }
}

// One contiguous run: du = g * a'(u); also accumulates du (as stored, like the reference's sum of the
// rounded du) into `acc_scalar` (one sum) or `acc_vec` (elementwise, length n) when given.
template <typename scalar_t>
void act_backward_run(const scalar_t* g, const scalar_t* u, scalar_t* du, int64_t n, const ActParams& p,
                      at::opmath_type<scalar_t>* acc_scalar, at::opmath_type<scalar_t>* acc_vec) {
  using acc_t = at::opmath_type<scalar_t>;
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    act_grad_values<acc_t>(g, u, du, n, p);
  } else {
    acc_t gbuf[kBlock], ubuf[kBlock], dbuf[kBlock];
    for (int64_t start = 0; start < n; start += kBlock) {
      const int64_t len = std::min(kBlock, n - start);
      for (int64_t i = 0; i < len; ++i) {
        gbuf[i] = static_cast<acc_t>(g[start + i]);
        ubuf[i] = static_cast<acc_t>(u[start + i]);
      }
      act_grad_values<acc_t>(gbuf, ubuf, dbuf, len, p);
      for (int64_t i = 0; i < len; ++i) du[start + i] = static_cast<scalar_t>(dbuf[i]);
    }
  }
  if (acc_scalar) {
    acc_t sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += static_cast<acc_t>(du[i]);
    *acc_scalar += sum;
  }
  if (acc_vec) {
    for (int64_t i = 0; i < n; ++i) acc_vec[i] += static_cast<acc_t>(du[i]);
  }
}

std::tuple<at::Tensor, at::Tensor> bias_act_cpu(at::Tensor z, const c10::optional<at::Tensor>& bias,
                                                ActParams act) {
  z = to_kernel_layout(z);
  auto y = at::empty_like(z);
  if (z.numel() == 0) return {y, z};
  const auto view = layout_of(z);
  at::Tensor b;
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == view.channels, "bvae: bias must have shape [",
                view.channels, "], got ", bias->sizes());
    b = bias->to(z.scalar_type()).contiguous();
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, z.scalar_type(), "bvae_bias_act_cpu", [&] {
    scalar_t* u_ptr = z.data_ptr<scalar_t>();
    scalar_t* y_ptr = y.data_ptr<scalar_t>();
    const scalar_t* b_ptr = b.defined() ? b.data_ptr<scalar_t>() : nullptr;
    if (!b_ptr) {
      const int64_t total = z.numel();
      at::parallel_for(0, total, kGrainElems, [&](int64_t begin, int64_t end) {
        bias_act_run<scalar_t>(u_ptr + begin, y_ptr + begin, end - begin, nullptr, nullptr, act);
      });
    } else if (view.layout == ChannelLayout::kChannelOuter) {
      const int64_t rows = view.outer * view.channels, len = view.inner, c = view.channels;
      at::parallel_for(0, rows, std::max<int64_t>(1, kGrainElems / std::max<int64_t>(len, 1)),
                       [&](int64_t begin, int64_t end) {
                         for (int64_t r = begin; r < end; ++r)
                           bias_act_run<scalar_t>(u_ptr + r * len, y_ptr + r * len, len, nullptr, b_ptr + r % c,
                                                  act);
                       });
    } else {
      const int64_t rows = view.outer, len = view.channels;
      at::parallel_for(0, rows, std::max<int64_t>(1, kGrainElems / std::max<int64_t>(len, 1)),
                       [&](int64_t begin, int64_t end) {
                         for (int64_t r = begin; r < end; ++r)
                           bias_act_run<scalar_t>(u_ptr + r * len, y_ptr + r * len, len, b_ptr, nullptr, act);
                       });
    }
  });
  return {y, z};
}

std::tuple<at::Tensor, at::Tensor> act_backward_cpu(const at::Tensor& grad, const at::Tensor& u_in, ActParams act,
                                                    bool bias_grad) {
  auto u = to_kernel_layout(u_in);
  TORCH_CHECK(grad.sizes() == u.sizes(), "bvae: grad_output has shape ", grad.sizes(), ", expected ", u.sizes());
  auto g = grad.to(u.scalar_type()).contiguous(memory_format_of(u));
  if (u.dim() == 2 && !g.is_contiguous()) g = g.contiguous();
  auto du = at::empty_like(u);
  const auto view = layout_of(u);
  at::Tensor db;
  if (bias_grad) db = at::zeros({view.channels}, u.options());
  if (u.numel() == 0) return {du, db};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, u.scalar_type(), "bvae_act_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* g_ptr = g.data_ptr<scalar_t>();
    const scalar_t* u_ptr = u.data_ptr<scalar_t>();
    scalar_t* du_ptr = du.data_ptr<scalar_t>();
    if (!bias_grad) {
      at::parallel_for(0, u.numel(), kGrainElems, [&](int64_t begin, int64_t end) {
        act_backward_run<scalar_t>(g_ptr + begin, u_ptr + begin, du_ptr + begin, end - begin, act, nullptr,
                                   nullptr);
      });
      return;
    }
    const int64_t c = view.channels;
    if (view.layout == ChannelLayout::kChannelOuter) {
      // One partial sum per (n, c) row, then a fixed-order sum over n: deterministic for any thread count.
      const int64_t rows = view.outer * c, len = view.inner;
      std::vector<acc_t> row_sums(rows, acc_t(0));
      at::parallel_for(0, rows, std::max<int64_t>(1, kGrainElems / std::max<int64_t>(len, 1)),
                       [&](int64_t begin, int64_t end) {
                         for (int64_t r = begin; r < end; ++r)
                           act_backward_run<scalar_t>(g_ptr + r * len, u_ptr + r * len, du_ptr + r * len, len,
                                                      act, &row_sums[r], nullptr);
                       });
      auto db_acc = db.data_ptr<scalar_t>();
      for (int64_t ch = 0; ch < c; ++ch) {
        acc_t s = 0;
        for (int64_t n = 0; n < view.outer; ++n) s += row_sums[n * c + ch];
        db_acc[ch] = static_cast<scalar_t>(s);
      }
    } else {
      // Fixed chunks of rows, one [C] partial each, then a fixed-order sum over chunks.
      const int64_t rows = view.outer;
      const int64_t chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
      std::vector<acc_t> partial(chunks * c, acc_t(0));
      at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
          const int64_t r_end = std::min(rows, (k + 1) * kRowsPerChunk);
          for (int64_t r = k * kRowsPerChunk; r < r_end; ++r)
            act_backward_run<scalar_t>(g_ptr + r * c, u_ptr + r * c, du_ptr + r * c, c, act, nullptr,
                                       partial.data() + k * c);
        }
      });
      auto db_acc = db.data_ptr<scalar_t>();
      for (int64_t ch = 0; ch < c; ++ch) {
        acc_t s = 0;
        for (int64_t k = 0; k < chunks; ++k) s += partial[k * c + ch];
        db_acc[ch] = static_cast<scalar_t>(s);
      }
    }
  });
  return {du, db};
}

}  // namespace CPU_CAPABILITY
}  // namespace bvae
