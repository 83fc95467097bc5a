// chi2 scans over the (|Ue4|, dm2) grid and the fused Feldman-Cousins toy loop.
//
// Every experiment e is reduced once (in Python) to a whitening-projection A_e
// (k_e x n_e): with W_e a whitener of its chi2 covariance C_e (W C W^T = I on the
// non-null subspace) and Q an orthonormal basis of W_e V_e (V_e the shape-only
// nuisance directions), A_e = B^T W_e where B spans the orthogonal complement of Q.
// Then the chi2 with the nuisances profiled exactly is
//     chi2_e(x; mu) = |A_e (x - mu)|^2,
// and everything is centred on the null expectation N0_e: r_e = A_e (x - N0_e).
//
// Linear experiments (mu = N0 - s2 D(dm2)): d_e(j) = A_e D_e(dm2_j) and
//     chi2_e(u, j) = |r_e|^2 + s2_u (2 r_e.d_e(j) + s2_u |d_e(j)|^2),
// so a data vector costs n_dm2 dot products. General experiments keep offsets
// m_e(p) = A_e (mu_e(p) - N0_e) for every grid point: chi2_e(p) = |r_e - m_e(p)|^2.
// This route serves experiments without normalisation groups (k_norm = 0: pulls, or no
// normalisation).
//
// Experiments with k_norm > 0 normalisation groups ("norm" experiments, x ~ N(diag(mu) E beta, C))
// use the exact multiplicative profile
//     chi2_e(x; p) = q - b'(p)^T G'(p)^-1 b'(p),
//     y = C^+ x,  q = x.y + k_norm / sigma^2,  b'(p) = E^T (mu_p * y) + 1/sigma^2,
//     G'(p) = E^T diag(mu_p) C^+ diag(mu_p) E + I / sigma^2   (1/sigma^2 -> 0 for free groups),
// with the inverse Cholesky factor L_p^-1 of G'(p) precomputed per grid point (packed lower
// triangular, row by row), so chi2_e = q - |L_p^-1 b'(p)|^2. Linear: b'(p) = b0' - s2 b1(dm2_j)
// with b0' = E^T (N0 * y) + 1/sigma^2 and b1(j) = E^T (D_j * y); general: mu_p per grid point.
// The FC toys of linear ones use the centred form (fcmlc.frequentist docstring, chi2.cpp
// centred_rows / centred_row): float64 row terms, float32 quadratic form per grid point.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fcmlc {

enum class Chi2Generator { none, gaussian, pulls };

struct Chi2Experiment {
  std::string name;
  int n = 0;       // bins of the raw data vector
  int k = 0;       // whitened, nuisance-projected dimension
  int offset = 0;  // first bin in the concatenated data vector
  bool linear = false;
  std::vector<double> A;   // k x n
  std::vector<double> N0;  // n
  std::vector<double> d;   // linear: n_dm2 x k
  std::vector<double> dn;  // linear: n_dm2, |d_j|^2
  std::vector<double> m;   // general: n_points x k
  // generator (toys), same sampler and keying as `simulate`
  Chi2Generator gen = Chi2Generator::none;
  std::uint64_t stream = 0;
  int kg = 0;              // gaussian: columns of the generation factor F
  std::vector<double> M;   // gaussian: k x kg, M = A F
  std::vector<double> G;   // gaussian + linear: n_dm2 x kg, G = d M
  int np = 0;              // pulls: number of pull parameters
  std::vector<double> J, Lp, lo, sigma;
  // multiplicative normalisation groups (norm experiments; k == 0 there, A unused by the scans)
  bool norm = false;
  int kn = 0;                  // number of normalisation groups
  double prior = 0.0;          // 1 / sigma^2 of the normalisation prior (0: free)
  std::vector<int> gid;        // n: group of each bin
  std::vector<double> Ci;      // n x n: C^+
  std::vector<double> Lfac;    // n_points x kn(kn+1)/2: packed L_p^-1
  std::vector<double> Draw;    // linear: n_dm2 x n, the deficits D_j
  std::vector<double> mug;     // general: n_points x n, the expectations mu_p
  std::vector<double> Fm;      // gaussian generator: n x kg, F row-major
  double gen_sigma = 0.0;      // generator: normalisation spread (draws w only when > 0)
  int kw = 0;                  // whiten(): rows of Aw (the projection at the null expectation)
  std::vector<double> Aw;      // kw x n
  // centred form (linear norm experiments, see chi2.cpp): G0 = G'(s2 = 0) and its inverse,
  // per dm2 row H_j = G01_j + G01_j^T and G11_j (G'(p) = G0 - s2 H_j + s2^2 G11_j), L_p^-1 in float32
  bool centred = false;
  std::vector<double> G0inv;   // kn x kn
  std::vector<double> Hrow;    // n_dm2 x kn x kn
  std::vector<double> G11row;  // n_dm2 x kn x kn
  std::vector<float> Lf;       // n_points x kn(kn+1)/2: float32 copy of Lfac
  std::vector<double> Lt;      // linear: Lfac interleaved by blocks of four s2 points (the scan)
  std::vector<double> Kb;      // centred: n_points, the FC pruning factors K_p (set_prune_factors)
};

}  // namespace fcmlc
