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

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
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
  // centred, optional (set_prune_factors with a reference): per dm2 row the float64 copy of the
  // float32 factor Lf at the row's reference point (n_dm2 x kn(kn+1)/2) and |R_j|_F^2 (< 0: row
  // without a reference), per point the factors A_p, B_p of the reference bound (chi2.cpp)
  std::vector<double> Rref, FR, Ab, Bb;
};

// The chi2 structure of a set of experiments on a grid of n_ue4 values s2 = sin^2(2 theta) (any
// order) times n_dm2 rows dm2_j: grid point p = j * n_ue4 + u, n_points = n_ue4 * n_dm2. The
// experiments' bins are concatenated in the order they are added (data vectors x have n_bins()
// entries). All arrays are row-major C arrays, copied in (inputs) or filled (outputs, allocated by
// the caller). The caller checks the arguments (the Python binding, register_chi2 at the end of
// chi2.cpp, raises ValueError naming the argument): shapes as documented, finite values,
// s2 >= 0, n_ue4, n_dm2 >= 1, threads nt >= 1. Thrown here: std::invalid_argument for an
// experiment index out of range, std::runtime_error when pull sampling rejects too many draws.
// The const methods keep their scratch per call (the pruning counters are atomic).
class Chi2Kernel {
 public:
  Chi2Kernel(const double* s2, int n_ue4, int n_dm2);
  ~Chi2Kernel();
  Chi2Kernel(const Chi2Kernel&) = delete;
  Chi2Kernel& operator=(const Chi2Kernel&) = delete;

  // ---- experiments (each call returns the new experiment's index) ----
  // Linear: expectation N0 - s2 D(dm2_j); A (k, n_bins), N0 (n_bins), D (n_dm2, n_bins).
  int add_linear(const std::string& name, const double* A, int k, const double* N0, int n_bins, const double* D);
  // General: expectation mu_grid (n_points, n_bins) at every grid point.
  int add_general(const std::string& name, const double* A, int k, const double* N0, int n_bins,
                  const double* mu_grid);
  // Normalisation groups: Aw (kw, n_bins) the projection at the null expectation (whiten only),
  // Ci = C^+ (n_bins, n_bins), groups (n_bins) >= 0 (kn = max + 1 groups), prior = 1/sigma^2 >= 0
  // (0: free), factors (n_points, kn(kn+1)/2) the packed L_p^-1, table D (n_dm2, n_bins) when
  // linear, else mu_grid (n_points, n_bins).
  int add_norm(const std::string& name, const double* Aw, int kw, const double* N0, int n_bins, const double* Ci,
               const std::int64_t* groups, double prior, const double* factors, bool linear, const double* table);

  // ---- toy generators (the samplers of simulate_gaussian / simulate_pulls) ----
  // factor_t = F^T (kg >= 1, n_bins); norm_sigma >= 0, > 0 only for an experiment with groups.
  void set_gaussian_generator(int index, std::uint64_t stream, const double* factor_t, int kg, double norm_sigma);
  // J (n_bins, n_pulls), Lp (n_pulls, n_pulls) lower triangular, lo (n_pulls, not NaN; -inf: no
  // bound), sigma (n_bins, >= 0); not for an experiment with groups.
  void set_pull_generator(int index, std::uint64_t stream, const double* J, int n_pulls, const double* Lp,
                          const double* lo, const double* sigma);
  // FC pruning factors K (n_points, finite, >= 0) of a linear experiment with groups; optionally
  // (ref != nullptr) the reference bound: ref (n_dm2, 0 <= ref_j < n_ue4 or -1: none), A, B
  // (n_points, finite, >= 0), see general_lanes_pruned in chi2.cpp.
  void set_prune_factors(int index, const double* K, const std::int64_t* ref = nullptr, const double* A = nullptr,
                         const double* B = nullptr);

  // ---- options (see the Python docstrings in register_chi2) ----
  bool centred() const;
  void set_centred(bool on);
  bool prune() const;
  void set_prune(bool on);
  std::pair<std::int64_t, std::int64_t> prune_stats() const;  // (points computed, points scanned)
  void reset_prune_stats();

  // ---- structure ----
  int n_ue4() const;
  int n_dm2() const;
  std::int64_t n_points() const;
  int n_bins() const;
  int n_experiments() const;
  bool linear_only() const;
  std::vector<int> dims() const;  // per experiment: rows of A (kw with groups)
  std::vector<bool> linear() const;
  std::vector<std::string> generators() const;  // "gaussian", "pulls" or "none"
  std::vector<int> norm_groups_count() const;
  int whiten_width() const;  // columns of whiten: the sum of dims()
  int toy_width() const;     // columns of whitened_toys: the sum of k over the experiments without groups
  const Chi2Experiment& experiment(int index) const;

  // ---- computations ----
  // out (n_data, whiten_width()): A_e (x_e - N0_e) per experiment (Aw_e with groups), concatenated.
  void whiten(const double* x, std::ptrdiff_t n_data, double* out) const;
  // chi2 (n_data, n_points) of each data vector x (n_data, n_bins), its minimum and argmin (ties:
  // the smaller point index); at least one experiment.
  void scan(const double* x, std::ptrdiff_t n_data, int nt, double* chi2, double* min, std::int64_t* argmin) const;
  // Feldman-Cousins toys t = toy_offset .. toy_offset + n_toys - 1 (n_toys >= 1, toy_offset >= 0)
  // at the true points point_ids (n, each in [0, n_points)) with expectations mu[e] (n, n_bins_e)
  // per experiment (every generator set): delta (n, n_toys) = chi2(p) - min over the grid and,
  // when best is not null, the best point (n, n_toys).
  void fc_toys(const std::int64_t* point_ids, std::ptrdiff_t n, const double* const* mu, std::ptrdiff_t n_toys,
               std::uint64_t seed, std::int64_t toy_offset, int nt, double* delta, std::int64_t* best) const;
  // The whitened toys r (n, n_toys, toy_width()) that fc_toys scans; arguments as fc_toys.
  void whitened_toys(const std::int64_t* point_ids, std::ptrdiff_t n, const double* const* mu,
                     std::ptrdiff_t n_toys, std::uint64_t seed, std::int64_t toy_offset, int nt, double* out) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fcmlc
