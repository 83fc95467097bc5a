"""PyTorch backend of the Feldman-Cousins toys (``feldman_cousins(..., backend='torch')``).

It evaluates the same chi2 as the C++ kernel (the whitening-projections A_e, linear deficits
d_e(dm2) or general offsets m_e(p) of :class:`fcmlc.frequentist.chi2.Chi2Model`), in float64, on
`device` (default: CUDA when available, else CPU), for all toys of a grid point at once.

The toys are *statistically* equivalent to the C++ ones, not the same draws:

* covariance-type experiments: z ~ N(0, I) from ``torch.randn`` with a generator on `device`
  seeded by a hash of (seed, experiment stream, grid point, toy_offset); the whitened toy is
  r = A (mu_p - N0) + (A F) z with F the generation factor of ``simulate``, i.e. the same
  Gaussian x = mu_p + F z as ``simulate`` but from torch's generator;
* pull-type experiments (truncated, multiplicative pulls): drawn by the C++ sampler of
  ``simulate`` (identical realizations; these experiments have a handful of bins).

So for a fixed (seed, point, n_toys, toy_offset, device type) the result does not depend on
chunking or on the number of workers, but it differs from backend='cpu' draw by draw. Critical
values agree within Monte Carlo error (tested against chi2 quantiles).
"""
from __future__ import annotations

import hashlib
import struct

import numpy as np

from .._checks import check_positive_int
from .._torch_env import resolve_device


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("backend='torch' needs PyTorch: pip install 'fcmlc[ml]' (or torch)") from None
    return torch


def _point_seed(seed: int, stream: int, point: int, toy_offset: int) -> int:
    h = hashlib.sha256(struct.pack("<QQQQ", seed, stream, point, toy_offset)).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


class _TorchModel:
    """Device copies of a Chi2Model's reduced arrays (built once per model and device)."""

    def __init__(self, model, dev):
        norm = [p.name for p in model.parts if p.norm]
        if norm:
            raise ValueError(f"the torch FC backend does not implement the multiplicative normalisation-group "
                             f"profile yet ({', '.join(norm)} have normalisation groups); use backend='cpu'")
        torch = _torch()
        t = lambda a: torch.as_tensor(np.array(a, dtype=np.float64), device=dev)  # noqa: E731
        g = model.grid
        self.dev = dev
        self.s2 = t(g.sin2_2theta)
        self.n_dm2, self.n_ue4 = g.n_dm2, g.n_ue4
        self.parts = []
        nsum = torch.zeros(g.n_dm2, dtype=torch.float64, device=dev)
        for p in model.parts:
            s = p.sampler
            A = t(p.A)
            q = {"A": A, "N0": t(p.N0), "linear": p.linear, "kind": s.kind, "stream": int(s.stream), "sampler": s}
            if p.linear:
                d = t(p.D) @ A.T  # (n_dm2, k)
                q["d"] = d
                nsum = nsum + (d * d).sum(1)
            else:
                m = (t(p.mu_grid) - q["N0"]) @ A.T  # (n_points, k)
                q["m"], q["m2"] = m, (m * m).sum(1)
            if s.kind != "pulls":
                q["M"] = A @ t(s.factor_t).T  # (k, kg): r = c + M z
            self.parts.append(q)
        self.nsum = nsum


def fc_toys_torch(model, point_ids, mu, n_toys: int, seed: int, toy_offset: int = 0, return_best: bool = False,
                  device=None):
    """Delta-chi2 (n_points, n_toys) [, best point index] of toys at true grid points
    `point_ids` with expectations `mu` (list per experiment, (n_points, n_bins_e)), computed with
    PyTorch on `device`. See the module docstring for how the toys are drawn."""
    torch = _torch()
    dev = resolve_device(device)
    model.prepare_toys()
    cache = model.__dict__.setdefault("_torch_cache", {})
    key = str(dev)
    if key not in cache:
        cache[key] = _TorchModel(model, dev)
    tm = cache[key]
    pid = np.asarray(point_ids, dtype=np.int64)
    n_toys, toy_offset = check_positive_int(n_toys, "n_toys"), int(toy_offset)
    if toy_offset < 0:
        raise ValueError(f"toy_offset must be >= 0, got {toy_offset}")
    delta = np.empty((pid.size, n_toys))
    best = np.empty((pid.size, n_toys), dtype=np.int64) if return_best else None
    s2 = tm.s2
    n_points = tm.n_dm2 * tm.n_ue4
    batch = max(1, (1 << 25) // n_points)  # toys per scan batch: a (batch, n_points) float64 map <= 256 MiB
    for i, p in enumerate(pid):
        rs = []  # whitened toys (n_toys, k_e) per experiment
        for q, mu_e in zip(tm.parts, mu):
            if q["kind"] == "pulls":
                x = q["sampler"].sample(np.asarray(mu_e[i:i + 1]), seed, pid[i:i + 1], n_toys, toy_offset)[0]
                rs.append((torch.as_tensor(x, device=dev) - q["N0"]) @ q["A"].T)
            else:
                gen = torch.Generator(device=dev)
                gen.manual_seed(_point_seed(seed, q["stream"], int(p), toy_offset))
                z = torch.randn((n_toys, q["M"].shape[1]), generator=gen, dtype=torch.float64, device=dev)
                c = (torch.as_tensor(np.asarray(mu_e[i]), device=dev) - q["N0"]) @ q["A"].T
                rs.append(c + z @ q["M"].T)
        for t0 in range(0, n_toys, batch):
            t1 = min(n_toys, t0 + batch)
            nb = t1 - t0
            flat = torch.zeros((nb, n_points), dtype=torch.float64, device=dev)
            gsum = torch.zeros((nb, tm.n_dm2), dtype=torch.float64, device=dev)
            for q, r_all in zip(tm.parts, rs):
                r = r_all[t0:t1]
                flat += (r * r).sum(1, keepdim=True)
                if q["linear"]:
                    gsum += r @ q["d"].T
                else:  # |r - m_p|^2 = |r|^2 - 2 r.m_p + |m_p|^2 for every grid point
                    flat += q["m2"] - 2.0 * (r @ q["m"].T)
            flat.view(nb, tm.n_dm2, tm.n_ue4).add_(s2 * (2.0 * gsum[:, :, None] + s2 * tm.nsum[:, None]))
            mn, am = flat.min(dim=1)
            delta[i, t0:t1] = (flat[:, int(p)] - mn).cpu().numpy()
            if return_best:
                best[i, t0:t1] = am.cpu().numpy()
    # |r - m|^2 expanded can round below the exact value by ~1e-12 relative; Delta-chi2 >= 0
    np.maximum(delta, 0.0, out=delta)
    return (delta, best) if return_best else delta
