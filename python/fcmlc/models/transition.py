"""The transition matrix T of the FCMLC method, evaluated exactly and fast.

T[k, c] = p(y = centre of y cell c | y_hat = centre of y_hat cell k), normalised per row so that
sum_c T[k, c] dA_c = 1 (:func:`fcmlc.models.flow.transition_matrix`). Its definition is the
normflows flow's ``log_prob`` on every (y, y_hat) pair in standardised variables: 25 million
pairs for the default 50x50 y_hat and 100x100 y grids. :func:`reference_transition_matrix`
evaluates it that way (minutes on 2 CPU cores, in float32 as before, or in float64).

:func:`fast_transition_matrix` and :func:`grid_log_prob` compute the same densities in float64
with the compiled kernel ``fcmlc._core.flow_transition`` (``cpp/src/transition.cpp``; seconds).
It uses the structure of a 2-D spline layer: one coordinate gets a spline with fixed parameters
(in the autoregressive layer, normflows' MADE gives the first coordinate spline parameters that
depend on neither y nor y_hat: the output layer's bias), the other a spline whose parameters are
the output of a ReLU residual network of (that first coordinate, y_hat), in which y_hat enters
additively and through one gate per block. For a fixed y_hat the network is therefore piecewise
linear in one scalar; the kernel finds its pieces exactly and evaluates the network only at
their ends (tens to a few hundred points per y_hat cell and layer instead of 10,000), then each
pair interpolates on its piece and runs its splines as normflows does. Nothing is approximated
or dropped: log densities agree with normflows run in float64 to 1e-12 (trained flow) - 1e-10
(random steep flows), T to within one float32 ulp (float32 normflows, the previous evaluation, is
off by up to ~5e-3 in log density on a trained flow, more on steep ones); each row is computed by
one thread in a fixed order of operations, so T is the same for any thread count and chunking.

The kernel implements the layers :func:`fcmlc.models.flow.build_flow` makes (normflows'
AutoregressiveRationalQuadraticSpline and CoupledRationalQuadraticSpline with ReLU networks and
linear tails, LULinearPermute, a DiagGaussian base); :func:`flow_layers` raises ValueError for
anything else, and :func:`fcmlc.models.flow.transition_matrix` then uses the reference path.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _core
from .._checks import check_positive_int, check_threads
from .._progress import progress_bar

__all__ = ["flow_layers", "grid_log_prob", "fast_transition_matrix", "reference_transition_matrix",
           "no_density_error", "fold_context", "context_grid_log_prob"]


def _np(t) -> np.ndarray:
    """A float64 NumPy copy of a torch tensor."""
    return t.detach().cpu().double().numpy().copy()


def no_density_error(k: int, point) -> FloatingPointError:
    """The error for a y_hat cell whose row of T has no finite density."""
    return FloatingPointError(f"the flow gives no finite density on the y grid for y_hat cell {k} "
                              f"(log10 point {np.asarray(point)}); the flow training has probably diverged")


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise ValueError(f"transition kernel: unsupported flow ({what})")


def _spline_settings(obj, what: str) -> dict:
    _check(getattr(obj, "tails", None) == "linear", f"{what}: tails {getattr(obj, 'tails', None)!r}, only 'linear'")
    _check(isinstance(obj.tail_bound, (int, float)), f"{what}: a tensor tail_bound")
    return {"tail_bound": float(obj.tail_bound), "min_bin_width": float(obj.min_bin_width),
            "min_bin_height": float(obj.min_bin_height), "min_derivative": float(obj.min_derivative)}


def _blocks(blocks, hidden: int, n_context: int, torch, what: str) -> dict:
    """The residual blocks' weights stacked: w0, w1 (n_blocks, hidden, hidden), gates (n_blocks, hidden, n_context)."""
    arrays = {k: [] for k in ("w0", "b0", "w1", "b1", "w_gate", "b_gate")}
    for b in blocks:
        _check(not getattr(b, "use_batch_norm", False), f"{what}: batch norm")
        _check(isinstance(b.activation, torch.nn.ReLU) or b.activation is torch.nn.functional.relu,
               f"{what}: activation {b.activation!r}, only ReLU")
        _check(hasattr(b, "context_layer"), f"{what}: a residual block without context")
        l0, l1 = b.linear_layers
        arrays["w0"].append(_np(l0.weight * l0.mask if hasattr(l0, "mask") else l0.weight))
        arrays["w1"].append(_np(l1.weight * l1.mask if hasattr(l1, "mask") else l1.weight))
        arrays["b0"].append(_np(l0.bias))
        arrays["b1"].append(_np(l1.bias))
        arrays["w_gate"].append(_np(b.context_layer.weight))
        arrays["b_gate"].append(_np(b.context_layer.bias))
    shapes = {"w0": (hidden, hidden), "w1": (hidden, hidden), "b0": (hidden,), "b1": (hidden,),
              "w_gate": (hidden, n_context), "b_gate": (hidden,)}
    return {k: np.array(v, dtype=np.float64).reshape(len(v), *shapes[k]) for k, v in arrays.items()}


def _autoregressive(layer, torch, n_context: int) -> dict:
    t = layer.mprqat
    made = t.autoregressive_net
    what = "AutoregressiveRationalQuadraticSpline"
    _check(isinstance(made.preprocessing, torch.nn.Identity), f"{what}: input preprocessing")
    _check(hasattr(made, "context_layer"), f"{what}: no context")
    _check(made.context_layer.weight.shape[1] == n_context,
           f"{what}: context of {made.context_layer.weight.shape[1]} channels, expected {n_context}")
    _check(made.initial_layer.weight.shape[1] == 2, f"{what}: not 2-D")
    K = int(t.num_bins)
    NP = 3 * K - 1
    w_first = _np(made.initial_layer.weight * made.initial_layer.mask)
    _check(np.all(w_first[:, 1] == 0), f"{what}: the network sees the second coordinate")
    w_last = _np(made.final_layer.weight * made.final_layer.mask)
    b_last = _np(made.final_layer.bias)
    _check(w_last.shape[0] == 2 * NP and np.all(w_last[:NP] == 0),
           f"{what}: the first coordinate's spline depends on the network")
    # normflows divides widths and heights by sqrt(hidden_features) only where the network has
    # that attribute (MADE does not); mirror its test exactly
    scale = math.sqrt(made.hidden_features) if hasattr(made, "hidden_features") else 1.0
    div = np.ones(NP)
    div[:2 * K] = scale
    d = {"kind": "spline", "cond": 0, "n_bins": K, **_spline_settings(t, what),
         "w_in": w_first[:, 0].copy(), "w_ctx": _np(made.context_layer.weight),
         "b_in": _np(made.initial_layer.bias) + _np(made.context_layer.bias),
         "w_out": w_last[NP:] / div[:, None], "b_out": b_last[NP:] / div, "fixed": b_last[:NP] / div}
    d.update(_blocks(made.blocks, w_first.shape[0], n_context, torch, what))
    return d


def _coupling(layer, torch, n_context: int) -> dict:
    c = layer.prqct
    net = c.transform_net
    what = "CoupledRationalQuadraticSpline"
    _check(len(c.identity_features) == 1 and len(c.transform_features) == 1, f"{what}: not 2-D")
    _check(getattr(net, "preprocessing", None) is None, f"{what}: input preprocessing")
    _check(net.context_features == n_context, f"{what}: context of {net.context_features} channels, expected "
                                              f"{n_context}")
    ut = c.unconditional_transform
    _check(ut is not None, f"{what}: no unconditional transform of the identity coordinate")
    K = int(c.num_bins)
    NP = 3 * K - 1
    W = _np(net.initial_layer.weight)  # hidden x (1 + n_context): (z_identity, context)
    if hasattr(net, "hidden_features"):
        scale = math.sqrt(net.hidden_features)
    elif hasattr(net, "hidden_channels"):
        scale = math.sqrt(net.hidden_channels)
    else:
        scale = 1.0
    div = np.ones(NP)
    div[:2 * K] = scale
    knob = _spline_settings(c, what)
    _check(_spline_settings(ut, what + " (unconditional transform)") == knob,
           f"{what}: the unconditional transform has other spline settings")
    fixed = np.concatenate([_np(ut.unnormalized_widths).ravel(), _np(ut.unnormalized_heights).ravel(),
                            _np(ut.unnormalized_derivatives).ravel()])
    _check(fixed.size == NP, f"{what}: unconditional transform with {fixed.size} parameters, expected {NP}")
    d = {"kind": "spline", "cond": int(c.identity_features[0]), "n_bins": K, **knob,
         "w_in": W[:, 0].copy(), "w_ctx": W[:, 1:].copy(), "b_in": _np(net.initial_layer.bias),
         "w_out": _np(net.final_layer.weight) / div[:, None], "b_out": _np(net.final_layer.bias) / div,
         "fixed": fixed}
    d.update(_blocks(net.blocks, W.shape[0], n_context, torch, what))
    return d


def flow_layers(nf_flow, n_context: int = 2):
    """The parameters of a normflows ConditionalNormalizingFlow for the compiled kernel:
    (layers in the order ``log_prob`` applies them, base loc, base log_scale), float64.
    Raises ValueError for layer types or settings the kernel does not implement. The kernel
    takes a 2-D context; a flow with a context of ``n_context`` values is evaluated through
    :func:`context_grid_log_prob`, which folds each context into the layers' biases."""
    import copy

    import normflows as nf  # heavy dependency, loaded only when a flow is evaluated
    import torch  # heavy dependency, as above

    # every derived quantity (LU diagonal, log-determinants) in float64, from the stored weights
    nf_flow = copy.deepcopy(nf_flow).to(device="cpu", dtype=torch.float64)
    layers = []
    for i, layer in enumerate(nf_flow.flows):
        if type(layer) is nf.flows.LULinearPermute:
            lin = layer.linear
            with torch.no_grad():
                lower, upper = lin._create_lower_upper()
                logdet = float(lin.logabsdet().double())
            layers.append({"kind": "linear", "perm": layer.permutation._permutation.cpu().numpy().astype(np.int64),
                           "upper": _np(upper), "lower": _np(lower), "bias": _np(lin.bias), "logdet": logdet})
        elif type(layer) is nf.flows.AutoregressiveRationalQuadraticSpline:
            layers.append(_autoregressive(layer, torch, n_context))
        elif type(layer) is nf.flows.CoupledRationalQuadraticSpline:
            layers.append(_coupling(layer, torch, n_context))
        else:
            raise ValueError(f"transition kernel: unsupported flow layer {i}: {type(layer).__name__}")
    q0 = nf_flow.q0
    _check(type(q0) is nf.distributions.DiagGaussian and q0.temperature is None and tuple(q0.shape) == (2,),
           f"base distribution {type(q0).__name__}")
    return layers[::-1], _np(q0.loc).reshape(2), _np(q0.log_scale).reshape(2)


def _threads(threads) -> int:
    """threads, or torch's intra-op thread count (the one training used) when None."""
    import torch  # heavy dependency, loaded only when a flow is evaluated

    threads = check_threads(threads)
    return torch.get_num_threads() if threads is None else threads


def grid_log_prob(flow, yhat_log, y_log, threads=None) -> np.ndarray:
    """log p(y | y_hat) per unit (log10|Ue4|, log10 dm2) area for every pair of the points
    y_hat_k (yhat_log, (n_k, 2)) and y_c (y_log, (n_c, 2)): an (n_k, n_c) float64 array, as
    :meth:`fcmlc.models.flow.ConditionalFlow.log_prob` on each pair (dropout off), computed by
    the compiled kernel."""
    yhat_log = np.asarray(yhat_log, dtype=np.float64).reshape(-1, 2)
    y_log = np.asarray(y_log, dtype=np.float64).reshape(-1, 2)
    layers, loc, log_scale = flow_layers(flow.flow)
    lq = _core.flow_grid_log_prob(flow.y_scaler.transform(y_log), flow.y_scaler.transform(yhat_log), layers,
                                  loc, log_scale, _threads(threads))
    return lq + flow.y_scaler.log_jacobian()


def fold_context(layers, context) -> list:
    """The layers of :func:`flow_layers` with one context vector folded in: the context enters a
    spline layer's network only linearly (the first hidden layer, w_ctx @ c, and each block's gate,
    w_gate @ c), so for a fixed c those terms are added to the biases and the context weights set
    to zero, (hidden, 2) and (n_blocks, hidden, 2) as the kernel takes them: the kernel then
    gives, for the context (0, 0), the flow's density for the context c."""
    c = np.asarray(context, dtype=np.float64).reshape(-1)
    out = []
    for L in layers:
        if L["kind"] != "spline":
            out.append(L)
            continue
        F = dict(L)
        F["b_in"] = L["b_in"] + L["w_ctx"] @ c
        F["w_ctx"] = np.zeros((len(L["b_in"]), 2))
        F["b_gate"] = L["b_gate"] + L["w_gate"] @ c
        F["w_gate"] = np.zeros(L["w_gate"].shape[:2] + (2,))
        out.append(F)
    return out


def context_grid_log_prob(layers, loc, log_scale, contexts, y_std, threads=None) -> np.ndarray:
    """log q(y_c | context_i) (n_contexts, n_c) float64, in standardised variables, of a flow
    (``layers, loc, log_scale``: :func:`flow_layers` with the flow's context size) for every
    context (rows of ``contexts``, any width) and point y_c (``y_std``, (n_c, 2)): each context
    folded into the layers (:func:`fold_context`), then the compiled kernel on all points, one
    call per context (as exact as :func:`grid_log_prob`)."""
    y_std = np.ascontiguousarray(y_std, dtype=np.float64).reshape(-1, 2)
    contexts = np.asarray(contexts, dtype=np.float64)
    nt = _threads(threads)
    zero = np.zeros((1, 2))
    out = np.empty((len(contexts), len(y_std)))
    for i, c in enumerate(contexts):
        out[i] = _core.flow_grid_log_prob(y_std, zero, fold_context(layers, c), loc, log_scale, nt)[0]
    return out


def fast_transition_matrix(flow, yhat_grid, y_grid, progress: bool = True, threads=None,
                           rows_per_call: int = 64) -> np.ndarray:
    """T (n_k, n_c) float32 by the compiled kernel (see the module docstring); ``threads``: None
    uses torch's thread count. Rows are computed ``rows_per_call`` at a time (for the progress
    bar; the result does not depend on it). Raises ValueError for flows the kernel does not
    implement and FloatingPointError when a row has no finite density."""
    rows = check_positive_int(rows_per_call, "rows_per_call")
    nt = _threads(threads)
    layers, loc, log_scale = flow_layers(flow.flow)
    yhat_pts = yhat_grid.log_points()
    y_std = flow.y_scaler.transform(y_grid.log_points())
    c_std = flow.y_scaler.transform(yhat_pts)
    n_k, n_c = len(yhat_pts), len(y_std)
    T = np.empty((n_k, n_c), dtype=np.float32)
    with progress_bar(total=n_k, desc="transition matrix", unit="row", enabled=progress) as bar:
        for k0 in range(0, n_k, rows):
            k1 = min(n_k, k0 + rows)
            T[k0:k1], ok = _core.flow_transition(y_std, c_std[k0:k1], layers, loc, log_scale, y_grid.cell_area, nt)
            if not ok.all():
                bad = k0 + int(np.flatnonzero(~ok)[0])
                raise no_density_error(bad, yhat_pts[bad])
            bar.update(k1 - k0)
    return T


def reference_transition_matrix(flow, yhat_grid, y_grid, batch_pairs: int = 16384, progress: bool = False,
                                float64: bool = False, rows=None) -> np.ndarray:
    """T by the definition: normflows' ``log_prob`` on every (y, y_hat) pair, in batches of about
    ``batch_pairs`` pairs with dropout off, in float32 like the flow (``float64``: on a float64
    copy of the flow); then rows normalised in float64. Non-finite log densities count as zero
    density. ``rows``: only these y_hat cells (flat indices; T[rows] is returned). One flow evaluation per pair: minutes for the default grids on 2 CPU cores (batches
    of ~16k pairs keep the flow's intermediate tensors in cache; 262k-pair batches measured ~2x
    slower). The test oracle and the benchmark's baseline of :func:`fast_transition_matrix`, and
    the fallback of :func:`fcmlc.models.flow.transition_matrix` for flows the kernel does not
    implement."""
    import copy

    import torch  # heavy dependency, loaded only when a flow is evaluated

    batch_pairs = check_positive_int(batch_pairs, "batch_pairs")
    cells = np.arange(yhat_grid.n_cells) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
    yhat_pts = yhat_grid.log_points()[cells]
    y_pts = y_grid.log_points()
    n_k, n_c = len(yhat_pts), len(y_pts)
    log_da = np.log(y_grid.cell_area)
    nf_flow = copy.deepcopy(flow.flow).to(dtype=torch.float64) if float64 else flow.flow
    dtype = torch.float64 if float64 else torch.float32
    dev = next(nf_flow.parameters()).device
    y_std = torch.as_tensor(flow.y_scaler.transform(y_pts), dtype=dtype, device=dev)
    c_std = torch.as_tensor(flow.y_scaler.transform(yhat_pts), dtype=dtype, device=dev)
    rows = max(1, batch_pairs // n_c)
    T = np.empty((n_k, n_c), dtype=np.float32)
    was = nf_flow.training
    nf_flow.eval()
    try:
        with torch.no_grad(), progress_bar(total=n_k, desc="transition matrix", unit="row", enabled=progress) as bar:
            for k0 in range(0, n_k, rows):
                k1 = min(n_k, k0 + rows)
                nk = k1 - k0
                ctx = c_std[k0:k1].repeat_interleave(n_c, dim=0)
                yy = y_std.repeat(nk, 1)
                lp = nf_flow.log_prob(yy, context=ctx).double().cpu().numpy().reshape(nk, n_c)
                lp[~np.isfinite(lp)] = -np.inf
                m = lp.max(axis=1, keepdims=True)
                if not np.all(np.isfinite(m)):
                    bad = k0 + int(np.flatnonzero(~np.isfinite(m[:, 0]))[0])
                    raise no_density_error(int(cells[bad]), yhat_pts[bad])
                w = np.exp(lp - m)
                norm = w.sum(axis=1, keepdims=True) * np.exp(log_da)
                T[k0:k1] = (w / norm).astype(np.float32)
                bar.update(nk)
    finally:
        nf_flow.train(was)
    return T
