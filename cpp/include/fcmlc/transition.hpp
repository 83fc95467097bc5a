// Exact evaluation of a trained 2-D conditional rational-quadratic spline flow (normflows'
// ConditionalNormalizingFlow of AutoregressiveRationalQuadraticSpline or
// CoupledRationalQuadraticSpline layers, each followed by LULinearPermute, DiagGaussian base)
// on every (y point, context) pair of two grids: the FCMLC transition matrix
// T[k, c] = p(y_c | y_hat_k), rows normalised.
//
// log q(y | ctx) is computed as normflows' log_prob does (the flow's layers from last to first,
// each in its inverse direction), in float64. What makes it cheap is the structure of a 2-D
// spline layer: coordinate `cond` gets a spline with FIXED parameters, and the other coordinate a
// spline whose 3K-1 parameters are the output of a ReLU residual network of (z[cond], ctx), in
// which the context enters only additively in the first layer and as a multiplicative gate
// sigmoid(W ctx + b) per residual block. For a fixed context that network is a continuous
// piecewise-LINEAR function of the scalar z[cond]. Per (context, layer) the kernel finds its
// linear pieces exactly over the range of z[cond] values met (insert the zero crossings of each
// ReLU's input, layer by layer: between two consecutive points every pre-activation is affine, so
// its crossing is found by linear interpolation, and every quantity at an inserted point is the
// interpolation of its neighbours), evaluating the network at those points only (typically
// 60-250 per context and layer instead of one per y point); every pair then interpolates the
// network output on its piece. The splines, LU layers and base density are evaluated per pair
// as in normflows (splines.py: softmax knots with minimum bin width/height, softplus
// derivatives, linear tails outside [-B, B]).
//
// Each row (context) is computed by one thread with a fixed sequence of operations, so results
// are bit-identical for any thread count.
#pragma once

#include <cstddef>
#include <vector>

namespace fcmlc {

// One spline layer, as log_prob applies it: coordinate `cond` is splined with the fixed
// parameters `fixed`, the other coordinate with the parameters
//   out = w_out h_nb + b_out,  h_0 = w_in z[cond] + w_ctx ctx + b_in,
//   h_{b+1} = h_b + (w1_b relu(w0_b relu(h_b) + b0_b) + b1_b) * sigmoid(w_gate_b ctx + b_gate_b).
// Spline parameters (3 n_bins - 1): unnormalised widths (n_bins), heights (n_bins), interior
// derivatives (n_bins - 1), already divided by any scale normflows applies to them.
// Matrices are row-major (out x in), as torch stores them.
struct RqsLayer {
  int cond = 0;
  int hidden = 0, n_blocks = 0, n_bins = 0;
  double tail_bound = 0.0, min_bin_width = 0.0, min_bin_height = 0.0, min_derivative = 0.0;
  const double* w_in = nullptr;    // hidden
  const double* w_ctx = nullptr;   // hidden x 2
  const double* b_in = nullptr;    // hidden
  const double* w0 = nullptr;      // n_blocks x hidden x hidden
  const double* b0 = nullptr;      // n_blocks x hidden
  const double* w1 = nullptr;      // n_blocks x hidden x hidden
  const double* b1 = nullptr;      // n_blocks x hidden
  const double* w_gate = nullptr;  // n_blocks x hidden x 2
  const double* b_gate = nullptr;  // n_blocks x hidden
  const double* w_out = nullptr;   // (3 n_bins - 1) x hidden
  const double* b_out = nullptr;   // 3 n_bins - 1
  const double* fixed = nullptr;   // 3 n_bins - 1
};

// LULinearPermute as log_prob applies it: z <- lower (upper z[perm]) + bias, log|det| = logdet.
struct LuLayer {
  int perm[2] = {0, 1};
  double upper[4] = {1, 0, 0, 1}, lower[4] = {1, 0, 0, 1}, bias[2] = {0, 0};
  double logdet = 0.0;
};

struct FlowLayer {
  bool is_spline = false;
  RqsLayer rqs;
  LuLayer lu;
};

// Layers in the order log_prob applies them (the flow's last layer first); then the diagonal
// Gaussian base density with mean loc and standard deviation exp(log_scale).
struct RqsFlowSpec {
  std::vector<FlowLayer> layers;
  double loc[2] = {0, 0}, log_scale[2] = {0, 0};
};

// out[k, c] = log q(y_c | ctx_k) (n_k x n_c, row-major); y: n_c x 2, ctx: n_k x 2. Non-finite
// network weights give NaN densities (no error). nt threads. May throw std::bad_alloc before any
// parallel region, or rethrow one caught inside it.
void rqs_flow_log_prob_grid(const RqsFlowSpec& spec, const double* y, std::ptrdiff_t n_c, const double* ctx,
                            std::ptrdiff_t n_k, double* out, int nt);

// T[k, c] = q(y_c | ctx_k) / (cell_area sum_c' q(y_c' | ctx_k)) as float32, with non-finite log
// densities counted as zero density; row_ok[k] = 0 where row k has no finite density (its T row
// is then left as NaN).
void rqs_flow_transition(const RqsFlowSpec& spec, const double* y, std::ptrdiff_t n_c, const double* ctx,
                         std::ptrdiff_t n_k, double cell_area, float* T, unsigned char* row_ok, int nt);

}  // namespace fcmlc
