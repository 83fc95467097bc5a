"""How far to trust a fit: goodness of fit, compatibility of experiments, distance of the data
from the simulations, agreement of FCMLC with the exact posterior, grid edges.

Every check has a status (``pass``, ``warn``, or ``n/a`` when it does not apply), the numbers
it rests on and its rule stated in words; docs/diagnostics.md says what to do when one warns.

The p-values come from realizations simulated at the chi2 best fit (the simulator FCMLC is
trained on, so "far from the simulations" means far from the training data too), counted as
p = (1 + #{toys at least as extreme}) / (1 + n_toys), which is a valid (slightly conservative)
p-value for any number of toys. The Wilks (chi2-distribution) p-values are reported beside them.

* ``goodness_of_fit``: chi2_min of the data against chi2_min of the toys (each re-minimised over
  the grid). Warns when p < ``gof``.
* ``distance:<experiment>``: the whitened residual norm of each experiment's block at the best
  fit (sqrt of its profile chi2 there) against the same for the toys, each at its own best fit:
  too far (upper tail: that experiment alone fits badly) or too clean (lower tail: e.g. a noiseless vector, unlike any training
  sample). Two-sided: warns when either tail's p < ``distance`` / 2.
* ``compatibility``: the parameter goodness-of-fit test (Maltoni & Schwetz, hep-ph/0304176),
  chi2_PG = chi2_min(all) - sum_g chi2_min(g), between every experiment and between the named
  groups (default: the reactors against gallium+BEST), dof = 2 (n_groups - 1) for Wilks; the
  toys give its p-value where Wilks is doubtful. Warns when p(toys) < ``compatibility``.
* ``fcmlc_vs_exact``: total-variation distance and IoU of the HPD regions (68/90/95 %) of the
  given posterior against the exact one (:mod:`fcmlc.exact`), and the credible level at which
  the chi2 best fit lies. Warns when TV > ``tv`` or the chi2 best fit lies outside the 95 %
  region.
* ``edges``: the best point or a region on the boundary of the grid (not the low-|Ue4| edge).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import chi2 as chi2_dist

from ._checks import check_positive_int, check_seed, same_name
from .exact import ExactModel, grid_of
from .physics import Grid, sin2_2theta
from .posterior import Posterior
from .regions import edge_warnings, edges_touched, iou
from .simulation import realizations

__all__ = ["THRESHOLDS", "GALLIUM_EXPERIMENTS", "Check", "Diagnostics", "diagnose", "default_groups",
           "total_variation", "region_ious"]

#: Default thresholds (see the module docstring for what each applies to).
THRESHOLDS = {"gof": 0.01, "distance": 0.01, "compatibility": 0.01, "tv": 0.3, "chi2_best_level": 0.95}

#: The radiochemical / source experiments; the default compatibility groups are these against the rest.
GALLIUM_EXPERIMENTS = ("GALLIUM", "BEST")

STATUSES = ("pass", "warn", "n/a")
LEVELS = (0.68, 0.9, 0.95)


@dataclass(frozen=True)
class Check:
    """One diagnostic: ``name``, ``status`` ('pass', 'warn', 'n/a'), ``values`` (the numbers),
    ``rule`` (the threshold in words) and a one-line ``message``."""

    name: str
    status: str
    values: dict
    rule: str
    message: str

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "values": self.values, "rule": self.rule,
                "message": self.message}


@dataclass
class Diagnostics:
    """The diagnostics of one fit (see :func:`diagnose`)."""

    checks: list
    best_point: tuple  # (|Ue4|, dm2) of the chi2 minimum on the grid
    chi2_min: float
    n_toys: int
    seed: int
    seconds: float = 0.0
    exact: Posterior | None = field(default=None, repr=False)

    @property
    def status(self) -> str:
        """'warn' when any check warns, else 'pass'."""
        return "warn" if any(c.status == "warn" for c in self.checks) else "pass"

    def warnings(self) -> list:
        """The messages of the checks that warn."""
        return [f"{c.name}: {c.message}" for c in self.checks if c.status == "warn"]

    def __getitem__(self, name) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict:
        u, d = self.best_point
        return {"status": self.status, "best_fit": {"ue4": u, "dm2": d, "sin2_2theta": float(sin2_2theta(u)),
                                                    "chi2_min": self.chi2_min},
                "n_toys": self.n_toys, "seed": self.seed, "seconds": self.seconds,
                "checks": [c.to_dict() for c in self.checks]}

    def to_markdown(self) -> str:
        """A Markdown table: check, status, message, rule."""
        rows = ["| check | status | result | rule |", "|---|---|---|---|"]
        for c in self.checks:
            rows.append(f"| {c.name} | {'**warn**' if c.status == 'warn' else c.status} | {c.message} | {c.rule} |")
        return "\n".join(rows)

    def __str__(self) -> str:
        w = max(len(c.name) for c in self.checks) if self.checks else 0
        lines = [f"diagnostics: {self.status} ({len(self.warnings())} warning(s); {self.n_toys} toys at the chi2 "
                 f"best fit, seed {self.seed}; {self.seconds:.2f} s)"]
        for c in self.checks:
            lines.append(f"  {c.status:4s}  {c.name:<{w}}  {c.message}")
        return "\n".join(lines)


def default_groups(names) -> dict | None:
    """Reactors against gallium+BEST, when both are present (None otherwise)."""
    gal = [n for n in names if any(same_name(n, g) for g in GALLIUM_EXPERIMENTS)]
    rest = [n for n in names if n not in gal]
    return {"reactors": rest, "gallium+BEST": gal} if gal and rest else None


def _resolve_groups(groups, names) -> dict | None:
    if groups is None or groups == "default":
        return default_groups(names)
    if isinstance(groups, str):  # "A,B;C,D"
        groups = {g.strip(): [s.strip() for s in g.split(",") if s.strip()] for g in groups.split(";") if g.strip()}
    out = {}
    seen = set()
    for label, members in dict(groups).items():
        idx = []
        for m in members:
            hits = [n for n in names if same_name(n, m)]
            if not hits:
                raise ValueError(f"compatibility group {label!r}: {m!r} is not one of the fit's experiments {list(names)}")
            if hits[0] in seen:
                raise ValueError(f"compatibility groups: {hits[0]!r} is in more than one group")
            seen.add(hits[0])
            idx.append(hits[0])
        if not idx:
            raise ValueError(f"compatibility group {label!r} is empty")
        out[str(label)] = idx
    if len(out) < 2:
        raise ValueError("compatibility needs at least two groups")
    return out


def _p_upper(obs, toys) -> float:
    return float((1 + np.count_nonzero(toys >= obs)) / (1 + toys.size))


def _p_lower(obs, toys) -> float:
    return float((1 + np.count_nonzero(toys <= obs)) / (1 + toys.size))


def _fmt_p(p) -> str:
    if p is None:
        return "n/a"
    return f"{p:.3g}" if p >= 1e-3 else f"{p:.1e}"


class _Stats:
    """chi2 statistics of data vectors from the per-experiment chi2 maps (n_exp, n_data, n_points)."""

    def __init__(self, maps, groups_idx):
        total = maps.sum(axis=0)
        self.chi2_min = total.min(axis=1)
        own = np.argmin(total, axis=1)  # each vector's own best fit (refitted, for toys as for the data)
        self.best = own
        self.at_best = maps[:, np.arange(maps.shape[1]), own]  # (n_exp, n_data)
        self.exp_min = maps.min(axis=2)  # (n_exp, n_data)
        self.pg_all = self.chi2_min - self.exp_min.sum(axis=0)
        self.pg_groups = None
        if groups_idx is not None:
            self.pg_groups = self.chi2_min - sum(maps[idx].sum(axis=0).min(axis=1) for idx in groups_idx)


def diagnose(experiments, x, *, posterior: Posterior | None = None, grid: Grid | None = None, groups="default",
             n_toys: int = 300, seed: int = 0, threads=None, thresholds: dict | None = None,
             model: ExactModel | None = None) -> Diagnostics:
    """All diagnostics of one fit of data ``x`` (experiments' bins concatenated).

    ``posterior``: the fit to judge (e.g. FCMLC's); its grid is used, and it is compared with
    the exact posterior. Without it the grid is ``grid`` (default the paper's) and the exact
    posterior itself is judged (edges only). ``groups``: 'default' (reactors vs gallium+BEST),
    None, a dict label -> experiment names, or "A,B;C,D". ``n_toys`` realizations at the chi2
    best fit (seeded by ``seed``) give the p-values. ``model``: a prebuilt :class:`ExactModel`
    on the right grid (saves its setup when diagnosing many vectors).
    """
    t0 = time.perf_counter()
    n_toys = check_positive_int(n_toys, "n_toys")
    seed = check_seed(seed)
    thr = dict(THRESHOLDS)
    for k, v in (thresholds or {}).items():
        if k not in THRESHOLDS:
            raise ValueError(f"unknown threshold {k!r}: expected one of {', '.join(THRESHOLDS)}")
        thr[k] = float(v)
    if posterior is not None:
        grid = grid_of(posterior)
    if model is None:
        model = ExactModel(experiments, grid, threads=threads)
    elif posterior is not None and model.grid != grid:
        raise ValueError("model's grid differs from the posterior's grid")
    names = model.names
    X, single = model.data_matrix(x)
    if not single:
        raise ValueError(f"diagnose takes one data vector, got shape {np.shape(x)}")
    groups = _resolve_groups(groups, names)
    if groups is not None and len(groups) == len(names):  # one experiment per group: the overall test
        groups = None
    groups_idx = None if groups is None else [np.array([names.index(n) for n in m]) for m in groups.values()]

    g = model.grid
    maps = model.chi2_maps(X)
    best = int(np.argmin(maps.sum(axis=0)[0]))
    bu, bd = g.points()[best]
    data = _Stats(maps, groups_idx)
    toys_x = realizations(model.experiments, [bu], [bd], n_toys, seed, point_ids=[best], threads=threads)[0]
    toy = _Stats(model.chi2_maps(toys_x), groups_idx)

    checks = []
    # overall goodness of fit
    ndof = int(sum(m.n_effective_bins for m in model.chi2_models)) - 2
    c2 = float(data.chi2_min[0])
    p_t, p_w = _p_upper(c2, toy.chi2_min), float(chi2_dist.sf(c2, ndof)) if ndof > 0 else None
    checks.append(Check("goodness_of_fit", "warn" if p_t < thr["gof"] else "pass",
                        {"chi2_min": c2, "ndof": ndof, "p_toys": p_t, "p_wilks": p_w},
                        f"warn if p(toys) < {thr['gof']:g}",
                        f"chi2_min = {c2:.2f} for {ndof} dof: p = {_fmt_p(p_t)} (toys), {_fmt_p(p_w)} (Wilks)"))
    # distance of each experiment's block from the simulations at the best fit
    half = thr["distance"] / 2
    for i, n in enumerate(names):
        obs = float(data.at_best[i, 0])
        pu, pl = _p_upper(obs, toy.at_best[i]), _p_lower(obs, toy.at_best[i])
        med = float(np.median(toy.at_best[i]))
        status = "warn" if min(pu, pl) < half else "pass"
        what = "too far" if pu < half else "too clean" if pl < half else "typical"
        checks.append(Check(f"distance:{n}", status,
                            {"residual_norm": float(np.sqrt(max(obs, 0.0))), "chi2_at_best": obs,
                             "toys_median_chi2": med, "p_upper": pu, "p_lower": pl},
                            f"warn if p(upper) or p(lower) < {half:g} (two-sided {thr['distance']:g})",
                            f"{what}: chi2 at the best fit {obs:.2f} (simulations: median {med:.2f}); "
                            f"p(too far) = {_fmt_p(pu)}, p(too clean) = {_fmt_p(pl)}"))
    # compatibility (parameter goodness of fit)
    if len(names) >= 2:
        checks.append(_pg_check("compatibility", float(data.pg_all[0]), toy.pg_all, 2 * (len(names) - 1),
                                "every experiment", thr))
    if groups is not None:
        checks.append(_pg_check("compatibility:" + " vs ".join(groups), float(data.pg_groups[0]), toy.pg_groups,
                                2 * (len(groups) - 1), " vs ".join(f"{k} ({', '.join(v)})" for k, v in groups.items()),
                                thr))
    # agreement with the exact posterior
    exact = model.posterior(X[0])
    if posterior is not None and posterior.meta.get("method") != "exact":
        checks.append(_agreement_check(posterior, exact, best, thr))
    # grid edges: the best points on an edge warn; regions reaching one are noted (a weakly
    # constrained posterior reaches the dm2 edges by nature: that is not a fault of the fit)
    judged = posterior if posterior is not None else exact
    i_d, i_u = np.unravel_index(int(np.argmax(judged.density)), judged.shape)
    label = "FCMLC best point" if judged is posterior else "posterior mode"
    edges = edge_warnings(int(i_u), int(i_d), judged.shape, {}, label)
    edges += edge_warnings(int(best % g.n_ue4), int(best // g.n_ue4), judged.shape, {}, "chi2 best fit")
    notes = [f"{100 * lv:g}% region reaches the grid's {' and '.join(t)} edge" for lv in LEVELS
             if (t := edges_touched(judged.credible_region(lv)))]
    msg = "; ".join(edges) if edges else "best points inside the grid"
    if notes:
        msg += " (note: " + "; ".join(notes) + ")"
    checks.append(Check("edges", "warn" if edges else "pass", {"warnings": edges, "notes": notes},
                        "warn if the best point or the chi2 best fit lies on the high-|Ue4| or a dm2 edge of the grid "
                        "(regions reaching an edge are noted)", msg))
    return Diagnostics(checks, (float(bu), float(bd)), c2, n_toys, seed, time.perf_counter() - t0, exact)


def _pg_check(name, obs, toys, dof, what, thr) -> Check:
    p_t, p_w = _p_upper(obs, toys), float(chi2_dist.sf(obs, dof))
    return Check(name, "warn" if p_t < thr["compatibility"] else "pass",
                 {"chi2_pg": obs, "dof": dof, "p_toys": p_t, "p_wilks": p_w, "groups": what},
                 f"warn if p(toys) < {thr['compatibility']:g}",
                 f"chi2_PG = {obs:.2f} ({what}; {dof} dof): p = {_fmt_p(p_t)} (toys), {_fmt_p(p_w)} (Wilks)")


def total_variation(a: Posterior, b: Posterior) -> float:
    """Total-variation distance 1/2 sum |m_a - m_b| of two posteriors' cell masses (same grid)."""
    if a.shape != b.shape or not (np.allclose(a.ue4, b.ue4) and np.allclose(a.dm2, b.dm2)):
        raise ValueError("posteriors on different grids")
    return float(0.5 * np.abs(a.mass - b.mass).sum())


def region_ious(a: Posterior, b: Posterior, levels=LEVELS) -> dict:
    """IoU (area-weighted) of the HPD regions of two posteriors on the same grid, per level."""
    return {f"{lv:g}": iou(a.credible_region(lv), b.credible_region(lv), a.cell_area) for lv in levels}


def _agreement_check(post, exact, best, thr) -> Check:
    tv = total_variation(post, exact)
    ious = region_ious(post, exact)
    lvl = float(post.credible_level_map().ravel()[best])
    bad = tv > thr["tv"] or lvl > thr["chi2_best_level"]
    return Check("fcmlc_vs_exact", "warn" if bad else "pass",
                 {"total_variation": tv, "iou": ious, "chi2_best_credible_level": lvl},
                 f"warn if TV > {thr['tv']:g} or the chi2 best fit lies outside the "
                 f"{100 * thr['chi2_best_level']:g} % region",
                 f"TV = {tv:.3f}; IoU 68/90/95 % = " + "/".join(f"{v:.2f}" for v in ious.values())
                 + f"; chi2 best fit at credible level {lvl:.2f}")
