// Kernel: the radial Laplace integral of the exact posterior's shape-only experiments
// (fcmlc.exact._ShapePart). For each grid point p, with H (k x k, positive definite, the
// data's part), b_p (k) and m (k, every m_g >= 1):
//
//   phi(r) = r^T H r / 2 - b_p^T r - sum_g m_g log r_g      (strictly convex on r > 0)
//
// its minimiser r_hat > 0 by safeguarded Newton, phi(r_hat), and
// log det(H + diag(m / r_hat^2)) - log det H. The same iteration as the NumPy reference
// fcmlc.reference.radial_laplace: start at H^-1 b floored at sqrt(m_g / H_gg); per step the
// Newton step s = K^-1 g (K the Hessian, g the gradient) and decrement lambda = sqrt(g.s);
// the full step when it stays inside r > 0 and lowers phi by at least lambda - log(1 + lambda)
// (what the damped step guarantees), else the damped step s / (1 + lambda) while
// lambda > 1/4 (self-concordance: stays inside, converges from any start), else the full
// step; done when no damped step was taken and (lambda / (1 - min(lambda, 1/2)))^4 <= tol.
// Points come in rows of `row` consecutive points (a grid's |Ue4| axis), each started from its
// predecessor's minimiser instead (fewer steps); rows are independent, so the result does not
// depend on the thread count.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "fcmlc/common.hpp"

namespace fcmlc {

namespace {

using idx = std::ptrdiff_t;

// In-place lower Cholesky factor of the k x k row-major matrix a, with inv[j] = 1 / L_jj;
// false if a is not positive definite.
bool cholesky(double* a, idx k, double* inv) {
  for (idx j = 0; j < k; ++j) {
    double d = a[j * k + j];
    for (idx t = 0; t < j; ++t) d -= a[j * k + t] * a[j * k + t];
    if (!(d > 0.0)) return false;
    const double l = std::sqrt(d);
    a[j * k + j] = l;
    inv[j] = 1.0 / l;
    for (idx i = j + 1; i < k; ++i) {
      double s = a[i * k + j];
      for (idx t = 0; t < j; ++t) s -= a[i * k + t] * a[j * k + t];
      a[i * k + j] = s * inv[j];
    }
  }
  return true;
}

// x <- (L L^T)^-1 x for the lower factor L (row-major k x k) with inv[i] = 1 / L_ii.
void chol_solve(const double* L, const double* inv, idx k, double* x) {
  for (idx i = 0; i < k; ++i) {
    double s = x[i];
    for (idx t = 0; t < i; ++t) s -= L[i * k + t] * x[t];
    x[i] = s * inv[i];
  }
  for (idx i = k - 1; i >= 0; --i) {
    double s = x[i];
    for (idx t = i + 1; t < k; ++t) s -= L[t * k + i] * x[t];
    x[i] = s * inv[i];
  }
}

double log_det_factor(const double* L, idx k) {
  double s = 0.0;
  for (idx i = 0; i < k; ++i) s += std::log(L[i * k + i]);
  return 2.0 * s;
}

double phi_at(const double* H, const double* b, const double* m, const double* r, idx k) {
  double q = 0.0, lin = 0.0, lg = 0.0;
  for (idx i = 0; i < k; ++i) {
    double hr = 0.0;
    for (idx j = 0; j < k; ++j) hr += H[i * k + j] * r[j];
    q += r[i] * hr;
    lin += b[i] * r[i];
    lg += m[i] * std::log(r[i]);
  }
  return 0.5 * q - lin - lg;
}

py::tuple radial_laplace(const carray<double>& H_, const carray<double>& b_, const carray<double>& m_, double tol,
                         int max_iter, idx row, std::optional<int> threads) {
  require_ndim(H_, 2, "H");
  require_ndim(b_, 2, "b");
  require_ndim(m_, 1, "m");
  const idx k = m_.shape(0);
  const idx P = b_.shape(0);
  require(k >= 1 && H_.shape(0) == k && H_.shape(1) == k && b_.shape(1) == k,
          "radial_laplace: H must be (k, k) and b (P, k) with k = len(m) = " + std::to_string(k));
  require(tol > 0.0 && max_iter >= 1, "radial_laplace: tol must be > 0 and max_iter >= 1");
  require(row >= 1, "radial_laplace: row must be >= 1");
  const int nt = resolve_threads(threads);
  const double* H = H_.data();
  const double* b = b_.data();
  const double* m = m_.data();
  for (idx g = 0; g < k; ++g)
    require(std::isfinite(m[g]) && m[g] >= 1.0, "radial_laplace: every m_g must be >= 1 (groups of two or more bins)");
  for (idx i = 0; i < k * k; ++i) require(std::isfinite(H[i]), "radial_laplace: H has a non-finite entry");
  for (idx i = 0; i < P * k; ++i) require(std::isfinite(b[i]), "radial_laplace: b has a non-finite entry");
  std::vector<double> L(H, H + k * k), Linv(k);
  require(cholesky(L.data(), k, Linv.data()), "radial_laplace: H is not positive definite");
  const double logdet_H = log_det_factor(L.data(), k);
  std::vector<double> floor(k);
  for (idx g = 0; g < k; ++g) floor[g] = std::sqrt(m[g] / H[g * k + g]);

  carray<double> r_out({P, k});
  carray<double> phi_out(P);
  carray<double> logdet_out(P);
  double* R = r_out.mutable_data();
  double* PHI = phi_out.mutable_data();
  double* LD = logdet_out.mutable_data();
  const idx n_rows = (P + row - 1) / row;
  idx failed = 0;
  {
    py::gil_scoped_release nogil;
#pragma omp parallel num_threads(nt) reduction(+ : failed)
    {
      std::vector<double> K(k * k), Kinv(k), g(k), s(k), full(k);
      // rows of `row` consecutive points, each point started from its predecessor's minimiser
      // (the first of a row from H^-1 b): the same work whatever the thread count
#pragma omp for schedule(dynamic, 1)
      for (idx j = 0; j < n_rows; ++j) {
        for (idx p = j * row; p < std::min(P, (j + 1) * row); ++p) {
          const double* bp = b + p * k;
          double* r = R + p * k;
          if (p == j * row || !std::isfinite(PHI[p - 1])) {
            for (idx i = 0; i < k; ++i) r[i] = bp[i];
            chol_solve(L.data(), Linv.data(), k, r);
          } else {
            for (idx i = 0; i < k; ++i) r[i] = r[i - k];
          }
          for (idx i = 0; i < k; ++i) r[i] = std::max(r[i], floor[i]);
          bool done = false;
          for (int it = 0; it < max_iter && !done; ++it) {
            for (idx i = 0; i < k; ++i) {
              double hr = 0.0;
              for (idx t = 0; t < k; ++t) hr += H[i * k + t] * r[t];
              g[i] = hr - bp[i] - m[i] / r[i];
            }
            for (idx i = 0; i < k * k; ++i) K[i] = H[i];
            for (idx i = 0; i < k; ++i) K[i * k + i] += m[i] / (r[i] * r[i]);
            if (!cholesky(K.data(), k, Kinv.data())) break;  // not for H positive definite; counted as failed
            for (idx i = 0; i < k; ++i) s[i] = g[i];
            chol_solve(K.data(), Kinv.data(), k, s.data());
            double lam2 = 0.0;
            for (idx i = 0; i < k; ++i) lam2 += g[i] * s[i];
            const double lam = std::sqrt(std::max(lam2, 0.0));
            bool damped = false;
            if (lam > 0.25) {  // below, the full step is taken (inside r > 0 for lambda < 1)
              bool inside = true;
              for (idx i = 0; i < k; ++i) {
                full[i] = r[i] - s[i];
                inside = inside && full[i] > 0.0;
              }
              damped = !(inside && phi_at(H, bp, m, full.data(), k) - phi_at(H, bp, m, r, k) <=
                                       -(lam - std::log1p(lam)));
            }
            const double f = damped ? 1.0 / (1.0 + lam) : 1.0;
            for (idx i = 0; i < k; ++i) r[i] -= f * s[i];
            const double q = lam / (1.0 - std::min(lam, 0.5));
            done = !damped && q * q * q * q <= tol;
          }
          if (!done) {
            ++failed;
            PHI[p] = LD[p] = std::nan("");
            continue;
          }
          PHI[p] = phi_at(H, bp, m, r, k);
          for (idx i = 0; i < k * k; ++i) K[i] = H[i];
          for (idx i = 0; i < k; ++i) K[i * k + i] += m[i] / (r[i] * r[i]);
          LD[p] = cholesky(K.data(), k, Kinv.data()) ? log_det_factor(K.data(), k) - logdet_H : std::nan("");
        }
      }
    }
  }
  if (failed)
    throw std::runtime_error("radial_laplace: Newton's method did not converge at " + std::to_string(failed) +
                             " grid point(s) within " + std::to_string(max_iter) + " steps");
  return py::make_tuple(r_out, phi_out, logdet_out);
}

}  // namespace

void register_exact(py::module_& m) {
  m.def("radial_laplace", &radial_laplace, py::arg("H"), py::arg("b"), py::arg("m"), py::arg("tol") = 1e-10,
        py::arg("max_iter") = 200, py::arg("row") = 1, py::arg("threads") = py::none(),
        "For each row b_p of b (P, k): the minimiser r > 0 of phi(r) = r^T H r / 2 - b_p^T r - m^T log r "
        "(H positive definite, every m_g >= 1), phi there and log det(H + diag(m / r^2)) - log det H, by "
        "safeguarded Newton -> (r (P, k), phi (P,), logdet (P,)). Points are taken in rows of `row` consecutive "
        "points, each started from its predecessor's minimiser (the first from H^-1 b). The radial Laplace integral of "
        "fcmlc.exact's shape-only experiments; NumPy reference fcmlc.reference.radial_laplace.");
}

}  // namespace fcmlc
