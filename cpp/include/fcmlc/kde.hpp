// 2-D Gaussian product-kernel density estimate on a rectilinear grid.
//
//   f(a_i, b_l) = 1 / (m h_a h_b) sum_j phi((x_j - a_i) / h_a) phi((y_j - b_l) / h_b),
//   phi(u) = exp(-u^2 / 2) / sqrt(2 pi)
//
// (statsmodels' KDEMultivariate with var_type='cc' and a Gaussian kernel). The sum
// is separable: with Ka[j, i] = exp(-(x_j - a_i)^2 / (2 h_a^2)) (m x n_a) and
// Kb[l, j] = exp(-(y_j - b_l)^2 / (2 h_b^2)) (n_b x m), f = Kb Ka / (2 pi m h_a h_b),
// i.e. n_a m + n_b m exponentials and one (n_b x m)(m x n_a) product instead of
// n_a n_b m kernel evaluations.
#pragma once

#include <cstddef>

namespace fcmlc {

// samples: m x 2 row-major (column 0 on axis a, column 1 on axis b); a: n_a
// centres; b: n_b centres; out: n_b x n_a (rows follow axis b); work: at least
// kde2d_work_doubles(m, n_a, n_b, nt) doubles. nt threads (1 = serial, safe inside
// a parallel region). Allocates nothing and throws nothing. Inputs must be
// validated by the caller (finite samples and centres, h > 0).
void kde2d_grid(const double* samples, std::ptrdiff_t m, const double* a, std::ptrdiff_t n_a, const double* b,
                std::ptrdiff_t n_b, double h_a, double h_b, double* out, double* work, int nt);

std::size_t kde2d_work_doubles(std::ptrdiff_t m, std::ptrdiff_t n_a, std::ptrdiff_t n_b, int nt);

}  // namespace fcmlc
