// Host check of the CUDA kernels' per-element math (csrc/cuda/act_kernels.cuh, BVAE_ACT_MATH_ONLY part):
// G-NoVa value and derivative against a long-double formula, the stable-sigmoid edge cases (+-inf, +-100,
// NaN, alpha == 0, beta == 0) and the channel-inner chunking. Built and run by tests/test_cuda_sources.py:
//   g++ -std=c++17 -O2 -I csrc/cuda tests/cuda_host_math_test.cpp && ./a.out     (exit 0: all passed)
#define BVAE_ACT_MATH_ONLY
#include "act_kernels.cuh"

#include <cmath>
#include <cstdio>
#include <limits>

using bvae::gpu::GnovaConsts;
using bvae::gpu::gnova_derivative;
using bvae::gpu::gnova_value;
using bvae::gpu::make_gnova_consts;

static int failures = 0;

static void expect(bool ok, const char* what, double got, double want) {
  if (!ok) {
    ++failures;
    std::printf("FAIL %s: got %.17g, want %.17g\n", what, got, want);
  }
}

// |got - want| <= tol; NaN never passes.
static void expect_within(const char* what, double got, double want, double tol) {
  const bool ok = !std::isnan(got) && !std::isnan(want) && (got == want || std::fabs(got - want) <= tol);
  expect(ok, what, got, want);
}

static void expect_nan(const char* what, double got) { expect(std::isnan(got), what, got, NAN); }

// The reference: a(u) and a'(u) in long double, from the textbook formula.
static long double ref_sigmoid(long double x) {
  return x >= 0 ? 1.0L / (1.0L + std::exp(-x)) : std::exp(x) / (1.0L + std::exp(x));
}
static long double ref_value(long double u, double a, double b, double g) {
  return (long double)a * u + (long double)b * ref_sigmoid((long double)g * u);
}
static long double ref_derivative(long double u, double a, double b, double g) {
  const long double s = ref_sigmoid((long double)g * u);
  return (long double)a + (long double)b * (long double)g * s * (1.0L - s);
}

// The formula's own conditioning sets the yardstick: a(u) is a sum of terms of size |alpha u| and |beta|
// (it cancels near its zero), and 1 - s cancels for large gamma u, so errors are measured against
// |alpha u| + |beta| for the value and |alpha| + |beta gamma| for the derivative, times `rtol` (a few ulps).
template <typename acc_t>
static void check_against_reference(const char* name, double rtol) {
  const double params[][3] = {{0.1, 1.0, 1.0}, {0.0, 1.0, 1.0}, {1.0, 0.0, 1.0}, {0.25, 2.0, 3.5}, {0.05, 0.5, 0.2}};
  char what[128];
  for (const auto& p : params) {
    const auto k = make_gnova_consts<acc_t>(p[0], p[1], p[2]);
    for (int i = -400; i <= 400; ++i) {
      const acc_t u = static_cast<acc_t>(i * 0.05);  // -20 .. 20
      std::snprintf(what, sizeof(what), "%s value(%g) a=%g b=%g g=%g", name, (double)u, p[0], p[1], p[2]);
      const double value_scale = std::fabs(p[0] * (double)u) + std::fabs(p[1]);
      expect_within(what, (double)gnova_value<acc_t>(u, k), (double)ref_value(u, p[0], p[1], p[2]),
                    rtol * value_scale);
      std::snprintf(what, sizeof(what), "%s derivative(%g) a=%g b=%g g=%g", name, (double)u, p[0], p[1], p[2]);
      const double derivative_scale = std::fabs(p[0]) + std::fabs(p[1] * p[2]);
      expect_within(what, (double)gnova_derivative<acc_t>(u, k), (double)ref_derivative(u, p[0], p[1], p[2]),
                    rtol * derivative_scale);
    }
  }
}

template <typename acc_t>
static void check_edges(const char* name) {
  const acc_t inf = std::numeric_limits<acc_t>::infinity();
  const acc_t nan = std::numeric_limits<acc_t>::quiet_NaN();
  const auto sigmoid = make_gnova_consts<acc_t>(0.0, 1.0, 1.0);
  const auto nova = make_gnova_consts<acc_t>(0.1, 1.0, 1.0);
  const auto identity = make_gnova_consts<acc_t>(1.0, 0.0, 1.0);
  const auto zero = make_gnova_consts<acc_t>(0.0, 0.0, 1.0);
  char what[128];
#define CHECK_EQ(expr, want)                                                    \
  do {                                                                          \
    const double got_ = (double)(expr);                                         \
    std::snprintf(what, sizeof(what), "%s: %s", name, #expr);                   \
    expect(!std::isnan(got_) && got_ == (double)(want), what, got_, (double)(want)); \
  } while (0)

  // sigmoid (alpha == 0): exact 0 and 1 at the ends, never NaN; derivative 0 there.
  CHECK_EQ(gnova_value<acc_t>(inf, sigmoid), 1.0);
  CHECK_EQ(gnova_value<acc_t>(-inf, sigmoid), 0.0);
  CHECK_EQ(gnova_value<acc_t>(acc_t(0), sigmoid), 0.5);
  CHECK_EQ(gnova_derivative<acc_t>(inf, sigmoid), 0.0);
  CHECK_EQ(gnova_derivative<acc_t>(-inf, sigmoid), 0.0);
  CHECK_EQ(gnova_derivative<acc_t>(acc_t(0), sigmoid), 0.25);
  CHECK_EQ(gnova_value<acc_t>(acc_t(100), sigmoid), 1.0);
  CHECK_EQ(gnova_derivative<acc_t>(acc_t(100), sigmoid), 0.0);
  // sigmoid(-100) = 3.72e-44: a float denormal, flushed or not; never negative or NaN.
  {
    const double got = (double)gnova_value<acc_t>(acc_t(-100), sigmoid);
    std::snprintf(what, sizeof(what), "%s: sigmoid(-100)", name);
    expect(got >= 0.0 && got <= 4e-44 && (sizeof(acc_t) == 4 || got > 3.7e-44), what, got, 3.7200759760208361e-44);
  }
  {  // exp(-gamma * u) overflows for u < -88.8 in float (-709.8 in double): 1 / (1 + inf) = 0.
    const acc_t big = sizeof(acc_t) == 4 ? acc_t(-1000) : acc_t(-1e6);
    CHECK_EQ(gnova_value<acc_t>(big, sigmoid), 0.0);
    CHECK_EQ(gnova_derivative<acc_t>(big, sigmoid), 0.0);
  }
  // default NoVa: +-inf pass through the linear term; the derivative is alpha there.
  CHECK_EQ(gnova_value<acc_t>(inf, nova), inf);
  CHECK_EQ(gnova_value<acc_t>(-inf, nova), -inf);
  CHECK_EQ(gnova_derivative<acc_t>(inf, nova), acc_t(0.1));
  CHECK_EQ(gnova_derivative<acc_t>(-inf, nova), acc_t(0.1));
  CHECK_EQ(gnova_value<acc_t>(acc_t(0), nova), 0.5);
  CHECK_EQ(gnova_derivative<acc_t>(acc_t(0), nova), acc_t(0.1) + acc_t(0.25));
  // identity (beta == 0): exactly u and 1, also at +-inf.
  CHECK_EQ(gnova_value<acc_t>(acc_t(3.25), identity), 3.25);
  CHECK_EQ(gnova_value<acc_t>(-inf, identity), -inf);
  CHECK_EQ(gnova_derivative<acc_t>(-inf, identity), 1.0);
  CHECK_EQ(gnova_derivative<acc_t>(acc_t(7), identity), 1.0);
  // alpha == beta == 0: zero everywhere (the CPU kernels do the same).
  CHECK_EQ(gnova_value<acc_t>(-inf, zero), 0.0);
  CHECK_EQ(gnova_derivative<acc_t>(inf, zero), 0.0);
#undef CHECK_EQ

  // NaN in, NaN out (never a silent number).
  std::snprintf(what, sizeof(what), "%s: value(NaN)", name);
  expect_nan(what, (double)gnova_value<acc_t>(nan, nova));
  std::snprintf(what, sizeof(what), "%s: sigmoid(NaN)", name);
  expect_nan(what, (double)gnova_value<acc_t>(nan, sigmoid));
  std::snprintf(what, sizeof(what), "%s: derivative(NaN)", name);
  expect_nan(what, (double)gnova_derivative<acc_t>(nan, nova));
}

static void check_chunks() {
  using bvae::gpu::num_chunks;
  using bvae::gpu::rows_per_chunk;
  const long long cases[] = {0, 1, 63, 64, 65, 1000, 65536, 65537, 524288, 1000003, 123456789};
  for (long long rows : cases) {
    const long long per = rows_per_chunk(rows), n = num_chunks(rows);
    // The chunks tile [0, rows) exactly: n - 1 full chunks and a non-empty last one; at most kMaxChunks.
    const bool ok = rows == 0 ? n == 0
                              : (per >= bvae::gpu::kMinRowsPerChunk && n >= 1 && n <= bvae::gpu::kMaxChunks &&
                                 (n - 1) * per < rows && n * per >= rows);
    expect(ok, "chunk tiling", (double)n, (double)rows);
  }
}

int main() {
  check_against_reference<double>("double", 8 * std::numeric_limits<double>::epsilon());
  check_against_reference<float>("float", 8 * std::numeric_limits<float>::epsilon());
  check_edges<double>("double");
  check_edges<float>("float");
  check_chunks();
  if (failures) {
    std::printf("%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("cuda host math: all checks passed\n");
  return 0;
}
