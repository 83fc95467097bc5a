"""The conditional density p(y | y_hat) of the FCMLC method (paper Sec. I B 2, Fig. 7, Table IV),
and the transition matrix T built from it.

y = (log10|Ue4|, log10 dm2) are the true parameters, y_hat the regressor's MC-dropout
prediction. Both enter the flow standardised with the regressor's target scaler. The flow is
a normflows rational-quadratic neural spline flow (Durkan et al. 2019):

    base N(0, I_2)  <-  [RQ-spline layer(context = y_hat) -> LU-linear permutation] x n_layers

In two dimensions the masked autoregressive spline layer (default, ``transform="autoregressive"``)
is a coupling layer: y2 is splined as a function of (y1, y_hat), while y1's spline has fixed
parameters (normflows' MADE connects the first coordinate's outputs to nothing but their bias,
so they see neither y nor y_hat; the LU permutations between layers mix the coordinates, so
the flow as a whole conditions both on y_hat). normflows' coupling layer (``transform="coupling"``,
the paper's wording) has the same structure with an unconditional spline on the identity half;
both are available.

The transition matrix is T[k, c] = p(y = centre of y cell c | y_hat = centre of y_hat cell k),
a density per unit (log10|Ue4|, log10 dm2) area, normalised so that sum_c T[k, c] dA_c = 1.
It is stored as float32 (densities to 7 significant digits; the posterior is renormalised
afterwards, so the rounding is far below the flow's own error). :mod:`fcmlc.models.transition`
evaluates it exactly in seconds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .._checks import check_positive_int, check_threads
from .regressor import Standardizer
from .transition import fast_transition_matrix, flow_layers, reference_transition_matrix

__all__ = ["CellGrid", "build_flow", "ConditionalFlow", "transition_matrix"]


@dataclass(frozen=True)
class CellGrid:
    """A grid of cells, uniform in (log10|Ue4|, log10 dm2), over the given ranges (linear units).

    Cells are ordered with |Ue4| fastest: flat index k = i_dm2 * n_ue4 + i_ue4, matching
    :class:`fcmlc.physics.Grid` and 2-D maps of shape (n_dm2, n_ue4).
    """

    ue4_range: tuple
    dm2_range: tuple
    shape: tuple  # (n_ue4, n_dm2)

    def __post_init__(self):
        (u0, u1), (d0, d1) = self.ue4_range, self.dm2_range
        object.__setattr__(self, "ue4_range", (float(u0), float(u1)))
        object.__setattr__(self, "dm2_range", (float(d0), float(d1)))
        object.__setattr__(self, "shape", (int(self.shape[0]), int(self.shape[1])))
        if not (0 < u0 < u1 and 0 < d0 < d1):
            raise ValueError(f"cell grid ranges must be positive and increasing, got {self.ue4_range}, {self.dm2_range}")
        if min(self.shape) < 1:
            raise ValueError(f"cell grid shape must be positive, got {self.shape}")

    @classmethod
    def over(cls, grid, shape, margin: float = 0.0) -> "CellGrid":
        """Cells over the ranges of a :class:`fcmlc.physics.Grid` (or anything with ue4_range/dm2_range),
        optionally widened by ``margin`` times the log-width on each side."""
        (u0, u1), (d0, d1) = grid.ue4_range, grid.dm2_range
        lu0, lu1, ld0, ld1 = np.log10([u0, u1, d0, d1])
        wu, wd = lu1 - lu0, ld1 - ld0
        lu0, lu1, ld0, ld1 = lu0 - margin * wu, lu1 + margin * wu, ld0 - margin * wd, ld1 + margin * wd
        return cls((10 ** lu0, 10 ** lu1), (10 ** ld0, 10 ** ld1), tuple(shape))

    @property
    def n_ue4(self) -> int:
        return self.shape[0]

    @property
    def n_dm2(self) -> int:
        return self.shape[1]

    @property
    def n_cells(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def log_ue4_edges(self) -> np.ndarray:
        return np.linspace(math.log10(self.ue4_range[0]), math.log10(self.ue4_range[1]), self.n_ue4 + 1)

    @property
    def log_dm2_edges(self) -> np.ndarray:
        return np.linspace(math.log10(self.dm2_range[0]), math.log10(self.dm2_range[1]), self.n_dm2 + 1)

    @property
    def log_ue4_centres(self) -> np.ndarray:
        e = self.log_ue4_edges
        return 0.5 * (e[:-1] + e[1:])

    @property
    def log_dm2_centres(self) -> np.ndarray:
        e = self.log_dm2_edges
        return 0.5 * (e[:-1] + e[1:])

    @property
    def ue4_centres(self) -> np.ndarray:
        """Cell centres in |Ue4| (geometric centres of the log cells)."""
        return 10.0 ** self.log_ue4_centres

    @property
    def dm2_centres(self) -> np.ndarray:
        return 10.0 ** self.log_dm2_centres

    def log_points(self) -> np.ndarray:
        """(n_cells, 2) cell centres in (log10|Ue4|, log10 dm2), |Ue4| fastest."""
        u, d = np.meshgrid(self.log_ue4_centres, self.log_dm2_centres, indexing="xy")
        return np.column_stack([u.ravel(), d.ravel()])

    @property
    def cell_area(self) -> float:
        """Area of one cell in (log10|Ue4|, log10 dm2) units."""
        du = np.diff(self.log_ue4_edges)[0]
        dd = np.diff(self.log_dm2_edges)[0]
        return float(du * dd)

    def cell_areas(self) -> np.ndarray:
        return np.full(self.n_cells, self.cell_area, dtype=np.float64)

    def to_dict(self) -> dict:
        return {"ue4_range": list(self.ue4_range), "dm2_range": list(self.dm2_range), "shape": list(self.shape),
                "variables": "log10|Ue4|, log10 dm2 (uniform cells); flat index = i_dm2 * n_ue4 + i_ue4"}

    @classmethod
    def from_dict(cls, d: dict) -> "CellGrid":
        return cls(tuple(d["ue4_range"]), tuple(d["dm2_range"]), tuple(d["shape"]))


def build_flow(n_layers: int = 4, hidden: int = 64, n_blocks: int = 2, n_bins: int = 8,
               dropout: float = 0.15, tail_bound: float = 4.0, transform: str = "autoregressive",
               seed: int = 0, context_size: int = 2):
    """A normflows ``ConditionalNormalizingFlow`` for 2-D y with a context of ``context_size``
    values (2 for FCMLC's y_hat; the embedding of the data vector for :mod:`fcmlc.estimators.npe`).

    Construction draws random numbers (weight initialisation, permutations); they come from
    ``seed`` inside a forked RNG, so the global torch RNG is left untouched.
    """
    import normflows as nf

    if transform not in ("autoregressive", "coupling"):
        raise ValueError(f"flow transform must be 'autoregressive' or 'coupling', got {transform!r}")
    if int(n_layers) < 1:
        raise ValueError(f"the flow needs at least one layer, got n_layers={n_layers}")
    context_size = check_positive_int(context_size, "context_size")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        layers = []
        for i in range(int(n_layers)):
            if transform == "autoregressive":
                layers.append(nf.flows.AutoregressiveRationalQuadraticSpline(
                    2, int(n_blocks), int(hidden), num_context_channels=context_size, num_bins=int(n_bins),
                    tail_bound=float(tail_bound), dropout_probability=float(dropout)))
            else:
                layers.append(nf.flows.CoupledRationalQuadraticSpline(
                    2, int(n_blocks), int(hidden), num_context_channels=context_size, num_bins=int(n_bins),
                    tail_bound=float(tail_bound), dropout_probability=float(dropout), reverse_mask=bool(i % 2)))
            layers.append(nf.flows.LULinearPermute(2))
        q0 = nf.distributions.DiagGaussian(2, trainable=False)
        return nf.ConditionalNormalizingFlow(q0, layers)


class ConditionalFlow:
    """p(y | y_hat) in (log10|Ue4|, log10 dm2) units, wrapping a normflows flow that works in
    standardised variables (both y and y_hat standardised with ``y_scaler``)."""

    def __init__(self, flow, y_scaler: Standardizer, architecture: dict, device=None):
        self.flow = flow
        self.y_scaler = y_scaler
        self.architecture = dict(architecture)
        dev = device if device is not None else next(flow.parameters()).device
        self.to(dev)

    @classmethod
    def create(cls, y_scaler: Standardizer, seed: int = 0, device=None, **architecture) -> "ConditionalFlow":
        arch = dict(n_layers=4, hidden=64, n_blocks=2, n_bins=8, dropout=0.15, tail_bound=4.0,
                    transform="autoregressive")
        unknown = set(architecture) - set(arch)
        if unknown:
            raise ValueError(f"unknown flow architecture options: {sorted(unknown)}")
        arch.update(architecture)
        return cls(build_flow(seed=seed, **arch), y_scaler, arch, device=device or "cpu")

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device) -> "ConditionalFlow":
        self._device = torch.device(device)
        self.flow.to(self._device)
        return self

    def log_prob_std(self, y_std: torch.Tensor, yhat_std: torch.Tensor) -> torch.Tensor:
        """log density in standardised variables (differentiable; respects train/eval mode)."""
        return self.flow.log_prob(y_std, context=yhat_std)

    @torch.no_grad()
    def log_prob(self, y_log, yhat_log, batch_rows: int = 262144) -> np.ndarray:
        """log p(y | y_hat) per unit (log10|Ue4|, log10 dm2) area; y_log, yhat_log: (n, 2) float arrays."""
        y_log = np.asarray(y_log, dtype=np.float64).reshape(-1, 2)
        yhat_log = np.asarray(yhat_log, dtype=np.float64).reshape(-1, 2)
        if y_log.shape != yhat_log.shape:
            raise ValueError(f"y and y_hat must have the same shape, got {y_log.shape} and {yhat_log.shape}")
        was = self.flow.training
        self.flow.eval()
        try:
            out = np.empty(len(y_log))
            for r0 in range(0, len(y_log), batch_rows):
                r1 = min(len(y_log), r0 + batch_rows)
                ys = torch.as_tensor(self.y_scaler.transform(y_log[r0:r1]), dtype=torch.float32, device=self.device)
                cs = torch.as_tensor(self.y_scaler.transform(yhat_log[r0:r1]), dtype=torch.float32, device=self.device)
                out[r0:r1] = self.flow.log_prob(ys, context=cs).double().cpu().numpy()
        finally:
            self.flow.train(was)
        return out + self.y_scaler.log_jacobian()

    def state_dict(self) -> dict:
        return {k: v.detach().cpu() for k, v in self.flow.state_dict().items()}


def transition_matrix(flow: ConditionalFlow, yhat_grid: CellGrid, y_grid: CellGrid,
                      batch_pairs: int = 16384, progress: bool = True, threads=None) -> np.ndarray:
    """T[k, c] = p(y = y-cell centre c | y_hat = y_hat-cell centre k), float32 (n_k, n_c).

    Rows are normalised over the y grid: sum_c T[k, c] * dA_c = 1 (dA in log10 units), so that
    p(y|x)_c = sum_k T[k, c] p(y_hat_k|x) dA_k is a density on the y grid. The densities are the
    flow's (dropout off) in standardised variables; the constant Jacobian of the standardisation
    cancels in the normalisation. Raises FloatingPointError when a row has no finite density
    (a diverged flow).

    Computed by :func:`fcmlc.models.transition.fast_transition_matrix`: exact, in float64, on
    ``threads`` threads (None: torch's thread count), the same result for any thread count; a
    few seconds for the default 50x50 y_hat and 100x100 y grids on 2 CPU cores
    (``benchmarks/results/transition.md``). Flows the compiled kernel does not implement (none
    that :func:`build_flow` makes) are evaluated by normflows pair by pair in batches of about
    ``batch_pairs`` pairs, in float32 (:func:`fcmlc.models.transition.reference_transition_matrix`,
    minutes).
    """
    check_positive_int(batch_pairs, "batch_pairs")
    check_threads(threads)
    try:
        flow_layers(flow.flow)
    except ValueError:
        return reference_transition_matrix(flow, yhat_grid, y_grid, batch_pairs, progress)
    return fast_transition_matrix(flow, yhat_grid, y_grid, progress=progress, threads=threads)
