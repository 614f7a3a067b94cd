// Central-difference gradient checks, in double, of every float64 reference backward in
// reference/ops_ref.h: with a random projection L = Σ r · forward(x), the reference backward
// fed dout = r must equal (L(x + h e_i) - L(x - h e_i)) / 2h for every input element. This is
// what makes the references trustworthy as the yardstick of the kernel tests.
#include <functional>

#include "reference/ops_ref.h"
#include "tests/harness.h"

using namespace elmo;
using namespace elmo_test;

namespace {

using Vec = std::vector<double>;

Vec rand_d(int64_t n, uint64_t seed, double lo = -1, double hi = 1) {
  Rng r(seed);
  Vec v(static_cast<size_t>(n));
  for (auto& x : v) x = r.uniform(lo, hi);
  return v;
}
double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Compares analytic[i] with the central difference of loss() in x[i], for every i.
void gradcheck(const char* what, Vec& x, const Vec& analytic, const std::function<double()>& loss,
               double h = 1e-6, double tol = 1e-6) {
  double worst = 0;
  int64_t worst_i = -1;
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double lp = loss();
    x[i] = x0 - h;
    const double lm = loss();
    x[i] = x0;
    const double num = (lp - lm) / (2 * h);
    const double err = std::fabs(num - analytic[i]) / (1.0 + std::fabs(num));
    if (err > worst) worst = err, worst_i = static_cast<int64_t>(i);
  }
  if (worst > tol) {
    ++failures();
    std::fprintf(stderr, "  %s: gradient mismatch %.3g at %lld (analytic %.12g)\n", what, worst,
                 static_cast<long long>(worst_i), analytic[static_cast<size_t>(worst_i)]);
  }
}

}  // namespace

TEST_CASE(layernorm_reference_gradients) {
  for (int64_t C : {1, 3, 17}) {
    const int64_t T = 3;
    Vec x = rand_d(T * C, 1 + C, -2, 2), w = rand_d(C, 2, 0.5, 1.5), b = rand_d(C, 3), r = rand_d(T * C, 4);
    const double eps = 1e-5;
    auto loss = [&] {
      Vec out(T * C);
      ref::layernorm_forward(out.data(), nullptr, nullptr, nullptr, x.data(), nullptr, w.data(), b.data(), T, C, eps);
      return dot(out, r);
    };
    Vec out(T * C), mean(T), rstd(T), dx(T * C), dw(C, 0.0), db(C, 0.0);
    ref::layernorm_forward(out.data(), nullptr, mean.data(), rstd.data(), x.data(), nullptr, w.data(), b.data(), T, C,
                           eps);
    ref::layernorm_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), mean.data(), rstd.data(), T,
                            C);
    // C == 1 normalizes to exactly 0 whatever x is: the gradient is 0 and so is the difference.
    gradcheck("layernorm dinp", x, dx, loss, 1e-6, 1e-5);
    gradcheck("layernorm dweight", w, dw, loss);
    gradcheck("layernorm dbias", b, db, loss);
  }
  // the fused residual: x = inp + residual, so both receive dinp
  const int64_t T = 2, C = 5;
  Vec inp = rand_d(T * C, 5), res = rand_d(T * C, 6), w = rand_d(C, 7), b = rand_d(C, 8), r = rand_d(T * C, 9);
  auto loss = [&] {
    Vec out(T * C);
    ref::layernorm_forward(out.data(), nullptr, nullptr, nullptr, inp.data(), res.data(), w.data(), b.data(), T, C,
                           1e-5);
    return dot(out, r);
  };
  Vec out(T * C), sum(T * C), mean(T), rstd(T), dx(T * C), dw(C, 0.0), db(C, 0.0);
  ref::layernorm_forward(out.data(), sum.data(), mean.data(), rstd.data(), inp.data(), res.data(), w.data(), b.data(),
                         T, C, 1e-5);
  ref::layernorm_backward(dx.data(), dw.data(), db.data(), r.data(), sum.data(), w.data(), mean.data(), rstd.data(), T,
                          C);
  gradcheck("layernorm d(residual)", res, dx, loss, 1e-6, 1e-5);
  gradcheck("layernorm d(inp)", inp, dx, loss, 1e-6, 1e-5);
}

TEST_CASE(gelu_and_tanh_reference_gradients) {
  const int64_t n = 41;
  Vec x = rand_d(n, 11, -6, 6), r = rand_d(n, 12);
  x[0] = 0.0;
  x[1] = -0.7518;
  auto gelu_loss = [&] {
    Vec out(n);
    ref::gelu_forward(out.data(), x.data(), n);
    return dot(out, r);
  };
  Vec dx(n);
  ref::gelu_backward(dx.data(), r.data(), x.data(), n);
  gradcheck("gelu", x, dx, gelu_loss);
  auto tanh_loss = [&] {
    Vec out(n);
    ref::tanh_forward(out.data(), x.data(), n);
    return dot(out, r);
  };
  Vec y(n);
  ref::tanh_forward(y.data(), x.data(), n);
  ref::tanh_backward(dx.data(), r.data(), y.data(), n);
  gradcheck("tanh", x, dx, tanh_loss);
}

TEST_CASE(dropout_reference_gradient) {
  // Linear in x: the backward is the same masked scaling applied to dout.
  const int64_t n = 64;
  Vec x = rand_d(n, 13), r = rand_d(n, 14);
  const float p = 0.3f;
  auto loss = [&] {
    Vec out(n);
    ref::dropout_forward(out.data(), x.data(), n, p, 99, 5);
    return dot(out, r);
  };
  Vec dx(n);
  ref::dropout_forward(dx.data(), r.data(), n, p, 99, 5);
  gradcheck("dropout", x, dx, loss);
}

TEST_CASE(embedding_and_gather_reference_gradients) {
  const int64_t V = 7, P = 6, TV = 2, H = 3;
  std::vector<int32_t> off = {0, 4, 5, 5, 11};
  std::vector<int32_t> ids = {1, 3, 1, 6, 0, 2, 2, 2, 5, 4, 1}, types = {0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 0};
  const int64_t T = 11;
  Vec wte = rand_d(V * H, 15), wpe = rand_d(P * H, 16), wtt = rand_d(TV * H, 17), r = rand_d(T * H, 18);
  auto loss = [&] {
    Vec out(T * H);
    ref::embedding_forward(out.data(), ids.data(), types.data(), off.data(), 4, wte.data(), wpe.data(), wtt.data(), H);
    return dot(out, r);
  };
  Vec dwte(V * H, 0.0), dwpe(P * H, 0.0), dwtt(TV * H, 0.0);
  ref::embedding_backward(dwte.data(), dwpe.data(), dwtt.data(), r.data(), ids.data(), types.data(), off.data(), 4, H);
  gradcheck("embedding dwte", wte, dwte, loss);
  gradcheck("embedding dwpe", wpe, dwpe, loss);
  gradcheck("embedding dwtt", wtt, dwtt, loss);

  // scatter_add_rows is the adjoint of gather_rows (repeated indices included)
  const int64_t Tg = 5, N = 7, C = 2;
  std::vector<int32_t> idx = {4, 0, 4, 2, 4, 1, 0};
  Vec inp = rand_d(Tg * C, 19), rg = rand_d(N * C, 20);
  auto gloss = [&] {
    Vec out(N * C);
    ref::gather_rows(out.data(), inp.data(), idx.data(), N, C);
    return dot(out, rg);
  };
  Vec dinp(Tg * C, 0.0);
  ref::scatter_add_rows(dinp.data(), rg.data(), idx.data(), N, C);
  gradcheck("gather/scatter", inp, dinp, gloss);
}

TEST_CASE(loss_reference_gradients) {
  const int64_t N = 4, V = 9;
  Vec logits = rand_d(N * V, 21, -3, 3);
  std::vector<int32_t> t = {2, -100, 8, 0};
  const double scale = 0.5;
  // L = scale * Σ losses, so dL/dlogits is cross_entropy_backward with that scale
  auto ce = [&] {
    Vec loss(N), lse(N);
    ref::cross_entropy_forward(loss.data(), lse.data(), logits.data(), t.data(), N, V, -100);
    double s = 0;
    for (double l : loss) s += l;
    return scale * s;
  };
  Vec dl(N * V);
  ref::cross_entropy_backward(dl.data(), logits.data(), t.data(), N, V, scale, -100);
  gradcheck("cross_entropy", logits, dl, ce);

  const int64_t n = 30;
  Vec x = rand_d(n, 22, -8, 8), y = rand_d(n, 23, 0, 1);
  y[0] = 0.0;
  y[1] = 1.0;
  auto bce = [&] {
    Vec loss(n);
    ref::bce_forward(loss.data(), x.data(), y.data(), n);
    double s = 0;
    for (double l : loss) s += l;
    return scale * s;
  };
  Vec dx(n);
  ref::bce_backward(dx.data(), x.data(), y.data(), n, scale);
  gradcheck("bce", x, dx, bce);
}

TEST_CASE(gradcheck_detects_a_wrong_gradient) {
  // The checker itself must fail on a wrong analytic gradient.
  Vec x = rand_d(5, 30), r = rand_d(5, 31);
  auto loss = [&] {
    Vec out(5);
    ref::gelu_forward(out.data(), x.data(), 5);
    return dot(out, r);
  };
  Vec dx(5);
  ref::gelu_backward(dx.data(), r.data(), x.data(), 5);
  dx[3] *= 1.01;
  const int before = failures();
  gradcheck("deliberately wrong gradient (expected to be caught)", x, dx, loss);
  const bool caught = failures() == before + 1;
  failures() = before;
  CHECK(caught);
}

int main() { return run_all_tests(); }
