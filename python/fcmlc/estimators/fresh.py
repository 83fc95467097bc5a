"""Fresh simulations for every training epoch of ``npe`` and ``nre`` (``fresh_simulations``).

A ``fcmlc simulate`` dataset holds a fixed set of realizations at the grid points; a network
trained on it for long overfits them (STEREO at paper-fast scale: 36 realizations per point), and
what it learns is the grid oracle, the likelihood at the points spread over their boxes
(``benchmarks/estimator_floor.py``). The simulator is fast, so an epoch can instead draw
new truths and new realizations: each epoch, as many pairs (x, y) as the dataset's training
split, at ``n_train / per_truth`` truths drawn log-uniformly over the grid's ranges (the prior
the posterior grid and the scoreboard's trials use), ``per_truth`` realizations at each (the
dataset's realizations per point in the training split: an epoch costs the expectations of a
``simulate`` run of the same grid size).

The dataset still supplies the experiments (whose definitions must be those it was simulated
with: checked against its recorded hashes), the ranges and the feature scaling (the moments of
its training split). The validation set is fresh too, drawn once (as many pairs as the dataset's
validation split, one realization at each of as many other truths, so that its loss is not
dominated by a few truths' noise): the dataset's grid-valued validation pairs, dequantised, score a
network that has learnt the continuous posterior worse where the likelihood changes within a
grid cell (STEREO: by ~0.25 nats, with the best epoch picked wrongly), so its loss is not
comparable with a dataset-trained model's.

Determinism: epoch e's truths come from a generator seeded with the loop's shuffle key
(training seed, epoch) and its realizations from :func:`fcmlc.simulation.realizations` seeded
with a value derived from the same key; the simulation kernels give the same numbers for any
thread count, so the same seed gives the same weights, and a run resumed inside an epoch draws
that epoch again, identically.
"""
from __future__ import annotations

import math

import numpy as np

from ..exceptions import IncompatibleError
from ..models.regressor import as_seed

__all__ = ["FreshSimulations", "fresh_experiments"]


def fresh_experiments(ds, names, data_dir=None) -> list:
    """The experiments ``names`` of dataset ``ds`` as the simulator's objects, loaded with
    ``data_dir``; IncompatibleError when one is unknown or defined otherwise than when the dataset
    was simulated (fresh simulations of another model would train on another likelihood)."""
    from .. import experiments as ex

    exps = []
    for name in names:
        try:
            exps.append(ex.load(name, data_dir=data_dir))
        except (ValueError, FileNotFoundError) as e:
            raise IncompatibleError(f"fresh simulations need the dataset's experiments, but {name!r} cannot be "
                                    f"loaded ({e})") from None
    saved = getattr(ds, "experiment_hashes", None) or {}
    changed = [e.name for e in exps if saved.get(e.name) != e.definition_hash]
    if changed:
        where = f"data_dir {str(data_dir)!r}" if data_dir is not None else "no data directory"
        raise IncompatibleError(f"the definition of {', '.join(changed)} loaded with {where} differs from the one the "
                                "dataset was simulated with: fresh simulations must follow the dataset's statistical "
                                "model (pass the folder of the data releases it was simulated with: --data-dir)")
    return exps


class FreshSimulations:
    """A training set of ``n`` pairs per epoch, simulated anew for each epoch: the interface of
    :class:`fcmlc.models.samples.Samples` that the training loop uses (``len``, ``moments``,
    ``chunks``), with ``continuous_y = True`` (the truths are not on a grid: not dequantised).
    With ``fixed_key`` (and no key given to ``chunks``) the same draw every time: the validation set.

    ``base``: the dataset's training Samples (its moments set the feature scaling);
    ``features``: the FeatureMap of the raw bins;
    ``per_truth``: realizations per truth; ``float32``: round the realizations as a float32
    dataset stores them."""

    continuous_y = True

    def __init__(self, experiments, grid, n: int, per_truth: int, base=None, features=None, float32: bool = True,
                 chunk_rows: int = 65536, threads=None, fixed_key=None):
        self.experiments = list(experiments)
        self.fixed_key = fixed_key
        self.log_ue4_range = tuple(math.log10(v) for v in grid.ue4_range)
        self.log_dm2_range = tuple(math.log10(v) for v in grid.dm2_range)
        self.n, self.per_truth = int(n), max(1, int(per_truth))
        self.base, self.features, self.float32 = base, features, bool(float32)
        self.chunk_rows, self.threads = int(chunk_rows), threads

    def __len__(self) -> int:
        return self.n

    def moments(self):
        """The feature and y moments of ``base`` (the dataset's training split), which set the scaling."""
        return self.base.moments()

    @staticmethod
    def simulation_seed(key) -> int:
        """The seed of :func:`fcmlc.simulation.realizations` for the epoch keyed by ``key``."""
        return int(np.random.SeedSequence([as_seed(key), 62]).generate_state(1, np.uint32)[0])

    def draw(self, key):
        """(raw realizations (n, bins), y = (log10|Ue4|, log10 dm2) (n, 2)) of the epoch keyed by ``key``."""
        from ..simulation import realizations

        rng = np.random.default_rng([as_seed(key), 61])
        n_truths = -(-self.n // self.per_truth)
        lu = rng.uniform(*self.log_ue4_range, n_truths)
        ld = rng.uniform(*self.log_dm2_range, n_truths)
        x = realizations(self.experiments, 10.0 ** lu, 10.0 ** ld, self.per_truth, seed=self.simulation_seed(key),
                         threads=self.threads, float32=self.float32)
        x = x.reshape(n_truths * self.per_truth, -1)
        y = np.repeat(np.stack([lu, ld], axis=1), self.per_truth, axis=0)
        order = rng.permutation(len(x))[:self.n]  # realizations of one truth spread over the epoch
        return x[order], y[order]

    def chunks(self, shuffle_seed=None):
        """The epoch keyed by ``shuffle_seed`` in chunks of ``chunk_rows`` (features float32,
        y float64); without a key the draw keyed by ``fixed_key`` (a validation set)."""
        key = self.fixed_key if shuffle_seed is None else shuffle_seed
        if key is None:
            raise ValueError("FreshSimulations.chunks needs a key (or a fixed_key)")
        x, y = self.draw(key)
        for r0 in range(0, self.n, self.chunk_rows):
            xb = x[r0:r0 + self.chunk_rows]
            f = self.features.transform(xb, np.float32) if self.features is not None else xb.astype(np.float32)
            yield f, y[r0:r0 + self.chunk_rows]
