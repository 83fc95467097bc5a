"""The transition matrix by the compiled kernel (fcmlc.models.transition, cpp/src/transition.cpp)
against its definition, normflows' log_prob on every (y, y_hat) pair."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from fcmlc import _core
from fcmlc.models import CellGrid, ConditionalFlow, Standardizer, transition_matrix
from fcmlc.models.transition import (fast_transition_matrix, flow_layers, grid_log_prob,
                                     reference_transition_matrix)
from fcmlc.physics import Grid

# standardised y of the paper grid spans about [-2.8, -0.3] x [-1.8, 0.8] with this scaler, so
# tail bounds of 1 and 1.5 put many pairs in the splines' linear tails
SCALER = Standardizer([-1.5, -0.5], [0.5, 0.6])
GRID = Grid.paper()
YHAT_GRID, Y_GRID = CellGrid.over(GRID, (7, 6)), CellGrid.over(GRID, (9, 8))

SETTINGS = [
    {},  # the defaults: 4 layers, hidden 64, 2 blocks, 8 bins, tail bound 4
    {"n_layers": 2, "hidden": 5, "n_blocks": 1, "n_bins": 3, "tail_bound": 1.0},
    {"n_layers": 3, "hidden": 16, "n_blocks": 3, "n_bins": 5, "tail_bound": 1.5},
]


def random_flow(transform: str, seed: int, **arch) -> ConditionalFlow:
    """A flow with every parameter perturbed by N(0, 0.3^2): normflows initialises the spline
    networks' output layers and the LU layers to the identity, which would test nothing."""
    flow = ConditionalFlow.create(SCALER, seed=seed, transform=transform, **arch)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.flow.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return flow


def normflows_log_prob64(flow: ConditionalFlow, yhat_log, y_log) -> np.ndarray:
    """log p(y_c | y_hat_k) per unit log10 area, (n_k, n_c), by normflows on a float64 copy."""
    nf64 = copy.deepcopy(flow.flow).double().eval()
    y = torch.as_tensor(flow.y_scaler.transform(y_log))
    c = torch.as_tensor(flow.y_scaler.transform(yhat_log))
    with torch.no_grad():
        lp = nf64.log_prob(y.repeat(len(c), 1), context=c.repeat_interleave(len(y), dim=0)).numpy()
    return lp.reshape(len(c), len(y)) + flow.y_scaler.log_jacobian()


@pytest.mark.parametrize("transform", ["autoregressive", "coupling"])
@pytest.mark.parametrize("arch", SETTINGS, ids=["defaults", "small-tail1", "3blocks-tail1.5"])
def test_fast_transition_is_the_normflows_definition(transform, arch):
    flow = random_flow(transform, 3, **arch)
    # the pairs reach the linear tails (outside [-B, B]) in both coordinates of the first layer
    layers, _, _ = flow_layers(flow.flow)
    lu = layers[0]
    z = flow.y_scaler.transform(Y_GRID.log_points())[:, lu["perm"]] @ lu["upper"].T @ lu["lower"].T + lu["bias"]
    bound = arch.get("tail_bound", 4.0)
    if bound < 4.0:
        assert np.all(np.abs(z).max(axis=0) > bound)
    # log densities: float64 both, operations in another order (the network interpolated on its
    # exact linear pieces, own exp/log of ~1 ulp): measured <= 7e-11 on these flows and ~1e-12 on
    # trained ones, for |log p| up to ~100; 1e-9 leaves margin and is 10^4 below float32 rounding
    lq = grid_log_prob(flow, YHAT_GRID.log_points(), Y_GRID.log_points())
    ref = normflows_log_prob64(flow, YHAT_GRID.log_points(), Y_GRID.log_points())
    np.testing.assert_allclose(lq, ref, rtol=0, atol=1e-9)
    # T: the float32 roundings of two float64 values that agree to ~1e-10 relative differ by at
    # most one float32 ulp (measured: bit-identical here)
    T = transition_matrix(flow, YHAT_GRID, Y_GRID, progress=False)
    T64 = reference_transition_matrix(flow, YHAT_GRID, Y_GRID, float64=True)
    assert T.dtype == np.float32 and T.shape == (YHAT_GRID.n_cells, Y_GRID.n_cells)
    np.testing.assert_array_max_ulp(T, T64, maxulp=1)
    # rows normalise: float32 entries summed in float64 are off by at most 2^-24 relative
    np.testing.assert_allclose(T.astype(np.float64).sum(axis=1) * Y_GRID.cell_area, 1.0, rtol=1e-6)
    # the float32 normflows path (the previous implementation) is no closer to the definition
    T32 = reference_transition_matrix(flow, YHAT_GRID, Y_GRID)
    scale = T64.max(axis=1, keepdims=True)
    assert np.max(np.abs(T - T64) / scale) <= max(np.max(np.abs(T32 - T64) / scale), 2.0 ** -23)


def test_default_architecture_on_the_default_y_grid():
    """Default architecture, whole rows of the default 100x100 y grid (many pieces per row)."""
    flow = random_flow("autoregressive", 5)
    yhat_grid = CellGrid(YHAT_GRID.ue4_range, YHAT_GRID.dm2_range, (3, 2))
    y_grid = CellGrid.over(GRID, (100, 100))
    T = fast_transition_matrix(flow, yhat_grid, y_grid, progress=False)
    T64 = reference_transition_matrix(flow, yhat_grid, y_grid, float64=True)
    np.testing.assert_array_max_ulp(T, T64, maxulp=1)


@pytest.mark.parametrize("transform", ["autoregressive", "coupling"])
def test_same_result_for_any_thread_count_and_chunking(transform):
    flow = random_flow(transform, 4, n_layers=2, hidden=16)
    T1 = fast_transition_matrix(flow, YHAT_GRID, Y_GRID, progress=False, threads=1)
    for threads, rows in ((2, 64), (3, 5), (1, 1), (4, 17)):
        T = fast_transition_matrix(flow, YHAT_GRID, Y_GRID, progress=False, threads=threads, rows_per_call=rows)
        np.testing.assert_array_equal(T, T1)
    for batch_pairs in (1, 100, 16384):
        np.testing.assert_array_equal(transition_matrix(flow, YHAT_GRID, Y_GRID, batch_pairs, False, threads=2), T1)
    # a row alone, and the y points in another order (other neighbours in the eight-pair packs,
    # other padding): each pair's log density is the same to the bit
    layers, loc, log_scale = flow_layers(flow.flow)
    y = flow.y_scaler.transform(Y_GRID.log_points())
    c = flow.y_scaler.transform(YHAT_GRID.log_points())
    lq = _core.flow_grid_log_prob(y, c, layers, loc, log_scale, 2)
    order = np.random.default_rng(0).permutation(len(y))
    np.testing.assert_array_equal(_core.flow_grid_log_prob(y[order], c[[5]], layers, loc, log_scale, 1)[0],
                                  lq[5, order])
    Tk, ok = _core.flow_transition(y, c[[11]], layers, loc, log_scale, Y_GRID.cell_area, 1)
    assert ok.all()
    np.testing.assert_array_equal(Tk[0], T1[11])


def test_single_y_cell_and_grid_points_on_piece_ends():
    """One y cell (the network's input range is a single point) and a 1-cell y_hat grid."""
    flow = random_flow("autoregressive", 6, n_layers=2, hidden=8)
    y1 = CellGrid(Y_GRID.ue4_range, Y_GRID.dm2_range, (1, 1))
    T = fast_transition_matrix(flow, YHAT_GRID, y1, progress=False)
    np.testing.assert_allclose(T[:, 0], 1.0 / y1.cell_area, rtol=1e-7)
    lq = grid_log_prob(flow, YHAT_GRID.log_points(), y1.log_points())
    np.testing.assert_allclose(lq, normflows_log_prob64(flow, YHAT_GRID.log_points(), y1.log_points()), atol=1e-9)


@pytest.mark.parametrize("fast", [True, False])
def test_diverged_flow_is_a_clear_error(fast):
    flow = random_flow("autoregressive", 7, n_layers=2, hidden=8)
    with torch.no_grad():
        flow.flow.flows[0].mprqat.autoregressive_net.final_layer.bias.fill_(float("nan"))
    fn = fast_transition_matrix if fast else reference_transition_matrix
    with pytest.raises(FloatingPointError, match="no finite density on the y grid for y_hat cell 0"):
        fn(flow, YHAT_GRID, Y_GRID, progress=False)
    with pytest.raises(FloatingPointError, match="diverged"):
        transition_matrix(flow, YHAT_GRID, Y_GRID, progress=False)


def test_flows_the_kernel_does_not_implement_use_the_normflows_path():
    import normflows as nf

    flow = random_flow("autoregressive", 8, n_layers=1, hidden=8)
    flow.flow.flows.append(nf.flows.Permute(2, mode="swap"))
    with pytest.raises(ValueError, match="unsupported flow layer 2: Permute"):
        flow_layers(flow.flow)
    T = transition_matrix(flow, YHAT_GRID, Y_GRID, progress=False)
    np.testing.assert_array_equal(T, reference_transition_matrix(flow, YHAT_GRID, Y_GRID))
    # some rows only (float64: other batches may round the float32 products otherwise)
    T64 = reference_transition_matrix(flow, YHAT_GRID, Y_GRID, float64=True)
    np.testing.assert_array_max_ulp(reference_transition_matrix(flow, YHAT_GRID, Y_GRID, 100, float64=True,
                                                                rows=[7, 3]), T64[[7, 3]], maxulp=1)


def test_kernel_rejects_malformed_layers():
    flow = random_flow("coupling", 9, n_layers=1, hidden=8)
    layers, loc, log_scale = flow_layers(flow.flow)
    y = flow.y_scaler.transform(Y_GRID.log_points())
    c = flow.y_scaler.transform(YHAT_GRID.log_points())
    bad = [dict(layers[0], kind="affine")] + layers[1:]
    with pytest.raises(ValueError, match=r"layers\[0\]: 'kind' must be 'linear' or 'spline'"):
        _core.flow_transition(y, c, bad, loc, log_scale, 1.0)
    spline = next(i for i, d in enumerate(layers) if d["kind"] == "spline")
    bad = list(layers)
    bad[spline] = dict(layers[spline], w0=layers[spline]["w0"][:, :, :3])
    with pytest.raises(ValueError, match=rf"layers\[{spline}\]: 'w0' must have shape"):
        _core.flow_grid_log_prob(y, c, bad, loc, log_scale)
    with pytest.raises(ValueError, match="y must have shape"):
        _core.flow_transition(np.zeros((4, 3)), c, layers, loc, log_scale, 1.0)
    with pytest.raises(ValueError, match="cell_area"):
        _core.flow_transition(y, c, layers, loc, log_scale, 0.0)
    with pytest.raises(ValueError, match="threads"):
        fast_transition_matrix(flow, YHAT_GRID, Y_GRID, progress=False, threads=0)
