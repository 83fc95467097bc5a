"""The outcome of a coverage check (:class:`CoverageResult`): per-trial decisions, derived
coverage fractions with binomial bands, the expected-coverage curve, its NPZ file and its plot."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import plotting as P
from .._io import atomic_path, jsonable, npz_header
from ..exceptions import FormatError

__all__ = ["CoverageResult", "binomial_interval", "METHODS", "METHOD_LABELS"]

#: The methods a coverage check can evaluate, in the order of every output.
METHODS = ("fcmlc", "exact", "wilks", "fc")
METHOD_LABELS = {"fcmlc": "FCMLC (HPD)", "exact": "exact posterior (HPD)", "wilks": "Wilks", "fc": "Feldman-Cousins"}
_FORMAT = "fcmlc.CoverageResult"
_FORMAT_VERSION = 1


def binomial_interval(count, n, confidence=0.6827, method="beta"):
    """Two-sided binomial confidence interval (lower, upper) of count / n, via statsmodels'
    ``proportion_confint`` (``method='beta'``: Clopper-Pearson, exact and conservative;
    ``'wilson'``: Wilson score). ``confidence`` 0.6827 gives 1-sigma bands."""
    from statsmodels.stats.proportion import proportion_confint  # heavy: loaded when needed

    confidence = float(confidence)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    c = np.asarray(count, dtype=float)
    lo, hi = proportion_confint(c, int(n), alpha=1.0 - confidence, method=method)
    lo = np.where(c <= 0, 0.0, np.nan_to_num(np.asarray(lo, dtype=float), nan=0.0))
    hi = np.where(c >= n, 1.0, np.nan_to_num(np.asarray(hi, dtype=float), nan=1.0))
    return lo, hi


@dataclass
class CoverageResult:
    """Outcome of :func:`fcmlc.validation.coverage`.

    levels (n_levels,) nominal levels; for each method m in ``methods``:
    ``covered[m]`` (n_trials, n_levels) bool, ``fraction[m]``, ``interval[m]`` (2, n_levels)
    binomial bands (``band`` confidence, Clopper-Pearson unless ``meta['interval_method']``
    says otherwise). ``statistic[m]`` (n_trials,): the level at which the truth is first
    covered - FCMLC and the exact posterior: posterior mass of denser cells (covered at L iff < L); Wilks: chi2_2 CDF of
    Delta-chi2 at the truth (covered iff <= L); FC: Delta-chi2 at the truth (no continuous
    curve: critical values exist only at the FC levels). ``curve_nominal`` (n_curve,) and
    ``curve[m]`` (n_curve,): the expected-coverage curve, the empirical CDF of the statistic
    (FCMLC, Wilks), with ``curve_interval[m]`` (2, n_curve).
    """

    levels: tuple
    methods: tuple
    truths: str
    truth_ue4: np.ndarray
    truth_dm2: np.ndarray
    covered: dict
    statistic: dict
    curve_nominal: np.ndarray
    band: float = 0.6827
    failed: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    # -- derived --
    @property
    def n_trials(self) -> int:
        return int(self.truth_ue4.size)

    @property
    def fraction(self) -> dict:
        return {m: self.covered[m].mean(axis=0) for m in self.methods}

    @property
    def interval(self) -> dict:
        meth = self.meta.get("interval_method", "beta")
        return {m: np.array(binomial_interval(self.covered[m].sum(axis=0), self.n_trials, self.band, meth))
                for m in self.methods}

    @property
    def curve(self) -> dict:
        out = {}
        for m in self.methods:
            s = self.statistic[m]
            if m in ("fcmlc", "exact"):
                out[m] = (s[:, None] < self.curve_nominal[None, :]).mean(axis=0)
            elif m == "wilks":
                out[m] = (s[:, None] <= self.curve_nominal[None, :]).mean(axis=0)
        return out

    @property
    def curve_interval(self) -> dict:
        meth = self.meta.get("interval_method", "beta")
        return {m: np.array(binomial_interval(np.rint(c * self.n_trials), self.n_trials, self.band, meth))
                for m, c in self.curve.items()}

    def summary(self) -> dict:
        """JSON-ready: for every method and level the observed coverage and its band."""
        fr, iv = self.fraction, self.interval
        table = {}
        for m in self.methods:
            table[m] = {f"{L:g}": {"nominal": L, "observed": float(fr[m][i]), "band": [float(iv[m][0, i]),
                                                                                       float(iv[m][1, i])],
                                   "covered": int(self.covered[m][:, i].sum())}
                        for i, L in enumerate(self.levels)}
        return {"n_trials": self.n_trials, "truths": self.truths, "levels": list(self.levels),
                "methods": list(self.methods), "band_confidence": self.band,
                "n_failed_fcmlc_fits": int(0 if self.failed is None else self.failed.sum()),
                "coverage": table, "meta": self.meta}

    def __repr__(self) -> str:
        fr = self.fraction
        parts = [f"{m}: " + ", ".join(f"{L:g}->{fr[m][i]:.3f}" for i, L in enumerate(self.levels))
                 for m in self.methods]
        return f"CoverageResult({self.n_trials} trials, truths={self.truths!r}; " + "; ".join(parts) + ")"

    # -- I/O --
    def save(self, path) -> Path:
        """Write every array and the settings to ``path`` (.npz, all or nothing; the settings as a
        JSON header; no pickle). Returns the path written."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        header = {"format": _FORMAT, "version": _FORMAT_VERSION, "levels": list(self.levels),
                  "methods": list(self.methods), "truths": self.truths, "band": self.band, "meta": self.meta}
        arrays = {"truth_ue4": self.truth_ue4, "truth_dm2": self.truth_dm2, "curve_nominal": self.curve_nominal,
                  "failed": np.zeros(self.n_trials, bool) if self.failed is None else self.failed}
        for m in self.methods:
            arrays[f"covered_{m}"] = self.covered[m]
            arrays[f"statistic_{m}"] = self.statistic[m]
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, header=np.array(json.dumps(jsonable(header))), **arrays)
        return path

    @classmethod
    def load(cls, path) -> "CoverageResult":
        """Read a file written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"coverage file {str(path)!r} not found")
        try:
            z = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise FormatError(f"{path}: not a coverage result file ({e})") from None
        with z:
            if "header" not in z.files:
                raise FormatError(f"{path}: not a coverage result file (no header)")
            h = npz_header(z, path, _FORMAT, _FORMAT_VERSION)
            methods = tuple(h["methods"])
            return cls(tuple(h["levels"]), methods, h["truths"], z["truth_ue4"], z["truth_dm2"],
                       {m: z[f"covered_{m}"] for m in methods}, {m: z[f"statistic_{m}"] for m in methods},
                       z["curve_nominal"], float(h["band"]), z["failed"], h.get("meta") or {})

    # -- plot --
    def plot(self, ax=None, title=None):
        """Observed vs nominal coverage: the expected-coverage curves (FCMLC, Wilks) with their
        binomial bands, the observed coverage at each nominal level (all methods) with error
        bars, and the diagonal; both axes run to 1.02, so that a coverage of 1 (every trial
        covered) shows inside the frame. Returns the Axes."""
        from matplotlib.figure import Figure

        if ax is None:
            ax = Figure(figsize=(5.6, 5.2), layout="constrained").subplots()
        colours = {"fcmlc": P.METHOD_STYLES["fcmlc"]["color"], "exact": P.METHOD_STYLES["exact"]["color"],
                   "wilks": P.METHOD_STYLES["wilks"]["color"], "fc": P.METHOD_STYLES["feldman_cousins"]["color"]}
        markers = {"fcmlc": "o", "exact": "^", "wilks": "s", "fc": "D"}
        ax.plot([0, 1], [0, 1], color="0.5", linestyle=":", linewidth=1.0, label="nominal")
        cv, ci = self.curve, self.curve_interval
        for m, c in cv.items():
            ax.fill_between(self.curve_nominal, ci[m][0], ci[m][1], color=colours[m], alpha=0.25, linewidth=0)
            ax.plot(self.curve_nominal, c, color=colours[m], linewidth=1.4, label=f"{METHOD_LABELS[m]} (curve)")
        fr, iv = self.fraction, self.interval
        lv = np.asarray(self.levels)
        for k, m in enumerate(self.methods):
            off = (k - (len(self.methods) - 1) / 2) * 0.006
            ax.errorbar(lv + off, fr[m], yerr=[fr[m] - iv[m][0], iv[m][1] - fr[m]], fmt=markers[m], color=colours[m],
                        markersize=5, capsize=2, linestyle="none", label=f"{METHOD_LABELS[m]} at levels")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.set_aspect("equal")
        ax.set_xlabel("nominal (expected) coverage")
        ax.set_ylabel("observed coverage")
        ax.set_title(title or f"coverage: {self.n_trials} trials ({self.truths} truths), "
                               f"{100 * self.band:.3g}% bands", fontsize="medium")
        ax.legend(loc="upper left", fontsize="small", framealpha=0.85)
        return ax
