"""Network inputs that carry exactly the information the statistical model gives the data.

A shape-only experiment (every normalisation group free, ``Experiment.shape_only``) states
that the bins of group g are known only up to a common factor beta_g: the chi2 profiles beta_g
away, so the rate of a group is no information about the oscillation. A network fed the raw
bins would learn that rate from the simulator (realizations at beta = 1) and use a
measurement the model says does not exist. FCMLC therefore feeds such an experiment to its
network as the *direction* of each group's sub-vector,

    f_i = x_i / |x_g|,   |x_g| = sqrt(sum_{j in g(i)} x_j^2),

which is exactly invariant under x_g -> c_g x_g (c_g > 0): the FCMLC posterior of a
shape-only experiment does not change when a normalisation group of the data vector is
rescaled. Bins of experiments without free normalisations (pull-type gallium and BEST rates,
or an experiment whose normalisation has a stated prior, ``norm_prior > 0``) enter unchanged.

Why the Euclidean norm and not the group sum (fractions x_i / sum x_j): a background-subtracted
spectrum can fluctuate to a negative sum in a group with few events (PROSPECT's highest energy
bin does in realizations), where fractions are undefined; the direction is defined for every
non-zero group and is the maximal invariant of the positive per-group scaling. Why not the
whitened data with the nuisance directions projected out: those directions diag(mu(theta)) E
depend on theta, which the network is to infer.
"""
from __future__ import annotations

import numpy as np

from ..dataset import normalisation_of

__all__ = ["FeatureMap", "check_data_vectors", "feature_text"]


def feature_text(n_features: int, experiments, experiment_bins=None) -> str:
    """What a model's data vector holds, for error messages: '<n> features = the bins of A (k bins),
    B (m bins) concatenated in this order'."""
    if experiment_bins:
        parts = ", ".join(f"{n} ({experiment_bins.get(n, '?')} bins)" for n in experiments)
    else:
        parts = ", ".join(experiments)
    return f"{n_features} features = the bins of {parts} concatenated in this order"


def check_data_vectors(x, n_features: int, description: str):
    """(x as float64 (n, n_features), single): one data vector (n_features,) or a batch
    (n, n_features) of finite values; a ValueError naming the problem (and ``description``, what
    the vector should hold, :func:`feature_text`) otherwise. ``single``: x was one vector."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"x must be a numeric array of {description}") from None
    single = arr.ndim == 1
    if single:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != n_features:
        raise ValueError(f"x must have shape ({n_features},) or (n, {n_features}): {description}; "
                         f"got shape {np.shape(x)}")
    if arr.shape[0] == 0:
        raise ValueError("x contains no data vectors")
    bad = ~np.all(np.isfinite(arr), axis=1)
    if np.any(bad):
        raise ValueError(f"x contains NaN or infinite values (data vector(s) {np.flatnonzero(bad)[:10].tolist()})")
    return arr, single


class FeatureMap:
    """x (raw concatenated bins) -> network features (group directions for shape-only experiments).

    ``groups[i]`` is the global group index of feature column i, or -1 for a column passed
    through unchanged; ``names[g]`` says which experiment and group g is, for error messages.
    """

    def __init__(self, groups, names=None):
        self.groups = np.asarray(groups, dtype=np.int64).reshape(-1)
        k = int(self.groups.max()) + 1 if self.groups.size and self.groups.max() >= 0 else 0
        if np.any(self.groups < -1) or (k and set(np.unique(self.groups[self.groups >= 0])) != set(range(k))):
            raise ValueError("FeatureMap: groups must be -1 or number the groups 0..k-1 without gaps")
        self.n_groups = k
        self.names = list(names) if names is not None else [f"group {g}" for g in range(k)]
        if len(self.names) != k:
            raise ValueError(f"FeatureMap: {len(self.names)} group names for {k} groups")
        self._cols = np.flatnonzero(self.groups >= 0)
        self._gid = self.groups[self._cols]

    @property
    def identity(self) -> bool:
        return self.n_groups == 0

    @property
    def n_features(self) -> int:
        return int(self.groups.size)

    @classmethod
    def from_normalisation(cls, normalisation: dict | None, names) -> "FeatureMap":
        """From a dataset's {name: {"norm_groups", "norm_prior"}} for the experiments `names`
        (in feature order). Experiments with a prior on their normalisation, or none, pass
        through. `normalisation` None (a dataset written before the model was recorded) gives
        the identity map."""
        groups, labels, off = [], [], 0
        for name in names:
            if normalisation is None:
                raise ValueError("the dataset does not record its experiments' normalisation model (it was "
                                 "written by an older fcmlc, under a different statistical model): "
                                 "simulate it again")
            if name not in normalisation:
                raise ValueError(f"the dataset records no normalisation model for experiment {name!r}")
            d = normalisation[name]
            g = np.asarray(d["norm_groups"], dtype=np.int64)
            if float(d.get("norm_prior", 0.0)) == 0.0 and g.size and g.min() >= 0:
                k = int(g.max()) + 1
                groups.append(g + off)
                labels += [f"{name} normalisation group {j}" for j in range(k)]
                off += k
            else:
                groups.append(np.full(g.size, -1, dtype=np.int64))
        return cls(np.concatenate(groups) if groups else np.zeros(0, np.int64), labels)

    @classmethod
    def from_experiments(cls, experiments) -> "FeatureMap":
        exps = list(experiments)
        return cls.from_normalisation({str(e.name): normalisation_of(e) for e in exps}, [str(e.name) for e in exps])

    def to_dict(self) -> dict:
        return {"kind": "group_directions", "groups": self.groups.tolist(), "names": self.names}

    @classmethod
    def from_dict(cls, d: dict | None) -> "FeatureMap":
        if d is None:
            raise ValueError("no feature map recorded")
        if d.get("kind") != "group_directions":
            raise ValueError(f"unknown feature map kind {d.get('kind')!r}")
        return cls(d["groups"], d.get("names"))

    def transform(self, x, dtype=None) -> np.ndarray:
        """Features of data vectors x (n, n_features) or (n_features,), in float64 (or `dtype`).

        Raises ValueError when every bin of a group of a data vector is zero (its direction is
        undefined), naming the vector and the group."""
        x = np.asarray(x)
        single = x.ndim == 1
        X = np.atleast_2d(x).astype(np.float64, copy=True)
        if X.shape[1] != self.groups.size:
            raise ValueError(f"FeatureMap: data have {X.shape[1]} bins, the map {self.groups.size}")
        if self.n_groups:
            sub = X[:, self._cols]
            norms = np.zeros((X.shape[0], self.n_groups))
            for j in range(self.n_groups):  # one group at a time: the same value for any batch
                norms[:, j] = np.sqrt(np.square(sub[:, self._gid == j]).sum(axis=1))
            bad = ~(norms > 0)
            if np.any(bad):
                r, g = np.argwhere(bad)[0]
                raise ValueError(f"data vector {r}: every bin of {self.names[g]} is zero (or not finite), so its "
                                 "shape (the normalisation-invariant feature) is undefined")
            X[:, self._cols] = sub / norms[:, self._gid]
        if dtype is not None:
            X = X.astype(dtype, copy=False)
        return X[0] if single else X
