// Realization samplers shared by `simulate` and the Feldman-Cousins toys, so that
// both use one generator and one keying: the stream of experiment `stream` at
// grid point `point`, realization `real`, under `seed`.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "fcmlc/rng.hpp"

namespace fcmlc {

// Covariance-type experiment: x = mu * (1 + sigma E w) + F z, z ~ N(0, I_k) drawn from
// normals(seed, stream, c1=real, c2=point, c3=PURPOSE_RESIDUAL) and, only when sigma > 0,
// the normalisations w ~ N(0, I_kn) of the groups (group[i] = group of bin i, 0..kn-1; every
// bin is grouped when sigma > 0) from the PURPOSE_NORM stream; with sigma == 0, x = mu + F z.
// Ft is F transposed (k x n, row-major: row j is column j of F); if `lower` is
// set, F is lower triangular (Cholesky, k == n) and column j is zero above row j.
// z (k values) and w (kn values) are scratch; out (n values) receives x.
inline void gaussian_realization(const double* mu, const double* Ft, int n, int k, bool lower, std::uint64_t seed,
                                 std::uint64_t stream, std::uint64_t point, std::uint64_t real, double* z,
                                 double* out, const std::int64_t* group = nullptr, int kn = 0, double sigma = 0.0,
                                 double* w = nullptr) {
  normals(seed, stream, real, point, PURPOSE_RESIDUAL, z, static_cast<std::size_t>(k));
  for (int i = 0; i < n; ++i) out[i] = 0.0;
  for (int j = 0; j < k; ++j) {
    const double zj = z[j];
    const double* col = Ft + static_cast<std::size_t>(j) * n;
    for (int i = lower ? j : 0; i < n; ++i) out[i] += col[i] * zj;
  }
  if (sigma > 0.0 && kn > 0) {
    normals(seed, stream, real, point, PURPOSE_NORM, w, static_cast<std::size_t>(kn));
    for (int i = 0; i < n; ++i) out[i] = mu[i] * (1.0 + sigma * w[group[i]]) + out[i];
  } else {
    for (int i = 0; i < n; ++i) out[i] = mu[i] + out[i];
  }
}

// Pull-type experiment: pulls pi = Lp w, w ~ N(0, I_p), redrawn (attempt a encoded in
// the counter) until every pi_q >= lo_q (a truncated multivariate normal: exact
// rejection sampling); then x_i = mu_i (1 + sum_q J_iq pi_q) + sigma_i s_i with
// s ~ N(0, I_n) from the PURPOSE_STAT stream.
// J is n x p row-major, Lp is p x p row-major lower triangular. scratch needs 2p + n.
inline void pull_realization(const double* mu, const double* J, const double* Lp, const double* lo,
                             const double* sigma, int n, int p, std::uint64_t seed, std::uint64_t stream,
                             std::uint64_t point, std::uint64_t real, double* scratch, double* out) {
  double* w = scratch;
  double* pi = scratch + p;
  double* s = scratch + 2 * p;
  constexpr int max_attempts = 100000;
  int attempt = 0;
  for (;; ++attempt) {
    if (attempt >= max_attempts)
      throw std::runtime_error("pull sampling: truncation bounds rejected " + std::to_string(max_attempts) +
                               " draws in a row; check pull_lower against the pull covariance");
    const std::uint64_t purpose = PURPOSE_PULL | (static_cast<std::uint64_t>(attempt) << 32);
    normals(seed, stream, real, point, purpose, w, static_cast<std::size_t>(p));
    bool ok = true;
    for (int q = 0; q < p; ++q) {
      double acc = 0.0;
      for (int r = 0; r <= q; ++r) acc += Lp[q * p + r] * w[r];
      pi[q] = acc;
      if (acc < lo[q]) ok = false;
    }
    if (ok) break;
  }
  normals(seed, stream, real, point, PURPOSE_STAT, s, static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    double f = 1.0;
    for (int q = 0; q < p; ++q) f += J[i * p + q] * pi[q];
    out[i] = mu[i] * f + sigma[i] * s[i];
  }
}

}  // namespace fcmlc
