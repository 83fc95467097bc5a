// Kernels: correlated Gaussian residuals and pull-parameter realizations for
// many grid points and realizations at once.
#include "fcmlc/common.hpp"
#include "fcmlc/integrate.hpp"
#include "fcmlc/sampling.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace fcmlc {

namespace {

template <typename Out>
void copy_out(const double* src, Out* dst, int n) {
  for (int i = 0; i < n; ++i) dst[i] = static_cast<Out>(src[i]);
}

void check_points(const carray<std::int64_t>& point_ids, py::ssize_t n_points) {
  require_ndim(point_ids, 1, "point_ids");
  require(point_ids.shape(0) == n_points, "point_ids must have one entry per row of mu (" +
                                              std::to_string(n_points) + "), got " +
                                              std::to_string(point_ids.shape(0)));
  for (py::ssize_t i = 0; i < n_points; ++i)
    require(point_ids.data()[i] >= 0, "point_ids must be >= 0");
}

template <typename Out>
py::array_t<Out> gaussian_impl(const carray<double>& mu, const carray<double>& Ft, bool lower, std::uint64_t seed,
                               std::uint64_t stream, const carray<std::int64_t>& point_ids, py::ssize_t n_real,
                               std::int64_t real_offset, std::optional<int> threads,
                               const std::optional<carray<std::int64_t>>& groups, double sigma) {
  require_ndim(mu, 2, "mu");
  require_ndim(Ft, 2, "factor_t");
  const py::ssize_t np_ = mu.shape(0), n = mu.shape(1), k = Ft.shape(0);
  require(Ft.shape(1) == n, "factor_t must have shape (k, n_bins) = (k, " + std::to_string(n) + "), got " +
                                shape_str(Ft.shape(0), Ft.shape(1)));
  require(!lower || k == n, "a lower-triangular factor must be square (n_bins x n_bins)");
  require(n_real >= 1, "n_real must be >= 1");
  require(real_offset >= 0, "real_offset must be >= 0");
  require_finite(mu, "mu (model expectation)");
  require_finite(Ft, "covariance factor");
  check_points(point_ids, np_);
  require(std::isfinite(sigma) && sigma >= 0.0, "norm_sigma must be finite and >= 0, got " + std::to_string(sigma));
  // normalisation groups: drawn only when sigma > 0 (then every bin must belong to a group 0..kn-1)
  int kn = 0;
  const std::int64_t* gp = nullptr;
  if (sigma > 0.0) {
    require(groups.has_value(), "norm_sigma > 0 needs norm_groups");
    const auto& g = *groups;
    require_ndim(g, 1, "norm_groups");
    require(g.shape(0) == n, "norm_groups must have n_bins = " + std::to_string(n) + " entries");
    gp = g.data();
    for (py::ssize_t i = 0; i < n; ++i) {
      require(gp[i] >= 0, "norm_groups: with norm_sigma > 0 every bin must belong to a group (index >= 0)");
      kn = std::max<int>(kn, static_cast<int>(gp[i]) + 1);
    }
  }
  const int nt = resolve_threads(threads);
  py::array_t<Out> out({np_, n_real, n});
  const double* m = mu.data();
  const double* f = Ft.data();
  const std::int64_t* pid = point_ids.data();
  Out* o = out.mutable_data();
  ExceptionCapture ex;
  {
    py::gil_scoped_release nogil;
    // Per grid point: Z (n_real x k) of keyed normals, then X = Z Ft with the deterministic
    // register-blocked product of integrate.hpp (AVX2/FMA where available), x = mu + X row by
    // row. Every value depends only on (seed, stream, point, realization), never on threads.
    const std::size_t R = static_cast<std::size_t>(n_real);
#pragma omp parallel num_threads(nt)
    {
      std::vector<double> Z(R * k), X(R * n), scratch(gemm_scratch_doubles(1)), W(R * std::max(kn, 1));
#pragma omp for schedule(static)
      for (py::ssize_t p = 0; p < np_; ++p) {
        ex.run([&] {
          const auto point = static_cast<std::uint64_t>(pid[p]);
          for (std::size_t r = 0; r < R; ++r)
            normals(seed, stream, static_cast<std::uint64_t>(real_offset) + r, point, PURPOSE_RESIDUAL,
                    Z.data() + r * k, static_cast<std::size_t>(k));
          gemm_deterministic(Z.data(), k, f, n, X.data(), n, n_real, n, k, 1, scratch.data());
          const double* mp = m + p * n;
          Out* op = o + p * n_real * n;
          if (kn > 0) {  // x = mu (1 + sigma w_g(i)) + F z
            for (std::size_t r = 0; r < R; ++r) {
              double* w = W.data() + r * kn;
              normals(seed, stream, static_cast<std::uint64_t>(real_offset) + r, point, PURPOSE_NORM, w,
                      static_cast<std::size_t>(kn));
              for (py::ssize_t i = 0; i < n; ++i)
                op[r * n + i] = static_cast<Out>(mp[i] * (1.0 + sigma * w[gp[i]]) + X[r * n + i]);
            }
          } else {
            for (std::size_t r = 0; r < R; ++r)
              for (py::ssize_t i = 0; i < n; ++i) op[r * n + i] = static_cast<Out>(mp[i] + X[r * n + i]);
          }
        });
      }
    }
  }
  ex.rethrow();
  return out;
}

template <typename Out>
py::array_t<Out> pulls_impl(const carray<double>& mu, const carray<double>& J, const carray<double>& Lp,
                            const carray<double>& lo, const carray<double>& sigma, std::uint64_t seed,
                            std::uint64_t stream, const carray<std::int64_t>& point_ids, py::ssize_t n_real,
                            std::int64_t real_offset, std::optional<int> threads) {
  require_ndim(mu, 2, "mu");
  require_ndim(J, 2, "pull_jacobian");
  require_ndim(Lp, 2, "pull_factor");
  require_ndim(lo, 1, "pull_lower");
  require_ndim(sigma, 1, "stat_sigma");
  const py::ssize_t np_ = mu.shape(0), n = mu.shape(1), p = J.shape(1);
  require(J.shape(0) == n, "pull_jacobian must have shape (n_bins, n_pulls) with n_bins = " + std::to_string(n));
  require(Lp.shape(0) == p && Lp.shape(1) == p, "pull_factor must have shape (n_pulls, n_pulls) = " + shape_str(p, p));
  require(lo.shape(0) == p, "pull_lower must have n_pulls = " + std::to_string(p) + " entries");
  require(sigma.shape(0) == n, "stat_sigma must have n_bins = " + std::to_string(n) + " entries");
  require(n_real >= 1, "n_real must be >= 1");
  require(real_offset >= 0, "real_offset must be >= 0");
  require_finite(mu, "mu (model expectation)");
  require_finite(J, "pull_jacobian");
  require_finite(Lp, "pull_factor");
  require_finite(sigma, "stat_sigma");
  for (py::ssize_t q = 0; q < p; ++q) require(!std::isnan(lo.data()[q]), "pull_lower must not be NaN (use -inf for no bound)");
  for (py::ssize_t i = 0; i < n; ++i) require(sigma.data()[i] >= 0, "stat_sigma must be >= 0");
  check_points(point_ids, np_);
  const int nt = resolve_threads(threads);
  py::array_t<Out> out({np_, n_real, n});
  Out* o = out.mutable_data();
  ExceptionCapture ex;
  {
    py::gil_scoped_release nogil;
#pragma omp parallel num_threads(nt)
    {
      std::vector<double> scratch(2 * p + n), x(n);
      const long long total = static_cast<long long>(np_) * n_real;
#pragma omp for schedule(static)
      for (long long idx = 0; idx < total; ++idx) {
        ex.run([&] {
          const long long pt = idx / n_real, r = idx % n_real;
          pull_realization(mu.data() + pt * n, J.data(), Lp.data(), lo.data(), sigma.data(), static_cast<int>(n),
                           static_cast<int>(p), seed, stream, static_cast<std::uint64_t>(point_ids.data()[pt]),
                           static_cast<std::uint64_t>(real_offset + r), scratch.data(), x.data());
          copy_out(x.data(), o + idx * n, static_cast<int>(n));
        });
      }
    }
  }
  ex.rethrow();
  return out;
}

}  // namespace

void register_sampling(py::module_& m) {
  m.def(
      "simulate_gaussian",
      [](const carray<double>& mu, const carray<double>& factor_t, bool lower, std::uint64_t seed,
         std::uint64_t stream, const carray<std::int64_t>& point_ids, py::ssize_t n_real, std::int64_t real_offset,
         bool float32, std::optional<int> threads, std::optional<carray<std::int64_t>> norm_groups,
         double norm_sigma) -> py::object {
        if (float32)
          return gaussian_impl<float>(mu, factor_t, lower, seed, stream, point_ids, n_real, real_offset, threads,
                                      norm_groups, norm_sigma);
        return gaussian_impl<double>(mu, factor_t, lower, seed, stream, point_ids, n_real, real_offset, threads,
                                     norm_groups, norm_sigma);
      },
      py::arg("mu"), py::arg("factor_t"), py::arg("lower"), py::arg("seed"), py::arg("stream"), py::arg("point_ids"),
      py::arg("n_real"), py::arg("real_offset") = 0, py::arg("float32") = false, py::arg("threads") = py::none(),
      py::arg("norm_groups") = py::none(), py::arg("norm_sigma") = 0.0,
      "Correlated Gaussian realizations x = mu (1 + norm_sigma E w) + F z for each row of mu (n_points, n_bins) and "
      "n_real realizations; factor_t = F^T (k, n_bins); w ~ N(0, I) per normalisation group (norm_groups: group "
      "index of each bin), drawn from the PURPOSE_NORM stream only when norm_sigma > 0 (else x = mu + F z). "
      "Returns (n_points, n_real, n_bins).");
  m.def(
      "simulate_pulls",
      [](const carray<double>& mu, const carray<double>& J, const carray<double>& Lp, const carray<double>& lo,
         const carray<double>& sigma, std::uint64_t seed, std::uint64_t stream, const carray<std::int64_t>& point_ids,
         py::ssize_t n_real, std::int64_t real_offset, bool float32, std::optional<int> threads) -> py::object {
        if (float32) return pulls_impl<float>(mu, J, Lp, lo, sigma, seed, stream, point_ids, n_real, real_offset, threads);
        return pulls_impl<double>(mu, J, Lp, lo, sigma, seed, stream, point_ids, n_real, real_offset, threads);
      },
      py::arg("mu"), py::arg("pull_jacobian"), py::arg("pull_factor"), py::arg("pull_lower"), py::arg("stat_sigma"),
      py::arg("seed"), py::arg("stream"), py::arg("point_ids"), py::arg("n_real"), py::arg("real_offset") = 0,
      py::arg("float32") = false, py::arg("threads") = py::none(),
      "Pull-parameter realizations x = mu (1 + J pi) + sigma s with truncated correlated Gaussian pulls. "
      "Returns (n_points, n_real, n_bins).");
}

}  // namespace fcmlc
