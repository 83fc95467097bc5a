"""`fcmlc benchmark-estimators`: posterior estimators scored against the exact posterior."""
from __future__ import annotations

import time
from pathlib import Path

from .._checks import check_positive_int
from .._io import OutputDir
from ..estimators import ESTIMATORS

#: what `fcmlc benchmark-estimators` writes (the names of fcmlc.validation.scoreboard.SCOREBOARD_FILES,
#: repeated here so that `fcmlc --help` does not import the validation stage)
SCOREBOARD_OUTPUTS = ("scoreboard.md", "scoreboard.json", "scoreboard.png")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "benchmark-estimators", help="score posterior estimators (fcmlc, ensemble, npe, nre) against the exact "
                                     "posterior: coverage, distance, time",
        description="For each model directory (any estimator of `fcmlc train --estimator`), run a coverage check "
                    "with the exact posterior on the same trials and record coverage at each level with its "
                    "binomial band, the mean total-variation distance and KL divergence from the exact posterior, "
                    "the IoU of the HPD regions, the training time and the time per fit. With --dataset, the "
                    "estimators named by --estimators are first trained on it (into OUTPUT/models/<estimator>/, "
                    "with --fast unless --paper; an existing model there is reused). Writes scoreboard.md, "
                    "scoreboard.json and scoreboard.png. All models of one task are scored on the same trials.")
    p.add_argument("models", nargs="*", metavar="MODEL", help="model directories to score")
    p.add_argument("-o", "--output", required=True, help="result directory")
    p.add_argument("--dataset", default=None, metavar="H5",
                   help="train the --estimators on this `fcmlc simulate` dataset first (and score them)")
    p.add_argument("--estimators", default=",".join(ESTIMATORS), metavar="NAMES",
                   help=f"comma-separated estimators to train with --dataset (default {','.join(ESTIMATORS)})")
    p.add_argument("--paper", action="store_true",
                   help="with --dataset: train with the paper's settings instead of the fast preset")
    p.add_argument("--seed", type=int, default=7, help="seed of the trials (and of training with --dataset; "
                                                        "default 7)")
    p.add_argument("--trials", type=int, default=2000, help="coverage trials per model (default 2000)")
    p.add_argument("--samples", type=int, default=1000, help="MC-dropout samples per fcmlc/ensemble fit "
                                                             "(default 1000)")
    p.add_argument("--fit-vectors", type=int, default=20, help="single-vector fits timed per model (default 20)")
    p.add_argument("--data-dir", default=None,
                   help="folder with the official data releases the models were trained with (PROSPECT, DANSS, "
                        "NEOS); a model whose experiment definitions differ from the ones loaded is refused")
    p.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an earlier scoreboard")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_benchmark_estimators)


def cmd_benchmark_estimators(args) -> int:
    check_positive_int(args.trials, "--trials")
    check_positive_int(args.fit_vectors, "--fit-vectors")
    if not args.models and args.dataset is None:
        raise ValueError("name model directories to score, or --dataset to train the --estimators on first")
    out = OutputDir(args.output, SCOREBOARD_OUTPUTS, args.overwrite)  # checked before any training or trial
    from ..estimators import check_estimator
    from ..estimators import train as train_estimator
    from ..validation.scoreboard import scoreboard

    models = list(args.models)
    if args.dataset is not None:
        names = [check_estimator(s) for s in args.estimators.split(",") if s.strip()]
        cfg = {} if args.paper else {"hyperparameters": "fast"}
        for name in names:
            d = Path(args.output) / "models" / name
            if (d / "config.json").is_file():
                print(f"{name}: using the model in {d}")
            else:
                t = time.perf_counter()
                print(f"{name}: training on {args.dataset} -> {d}", flush=True)
                train_estimator(args.dataset, out=d, estimator=name, config=dict(cfg), seed=args.seed,
                                progress=not args.no_progress)
                print(f"{name}: trained in {time.perf_counter() - t:.0f} s", flush=True)
            models.append(str(d))
    board = scoreboard(models, trials=args.trials, seed=args.seed, n_samples=args.samples, threads=args.threads,
                       fit_vectors=args.fit_vectors, progress=not args.no_progress, data_dir=args.data_dir)
    with out.writing() as stage:
        board.save(stage)
    print(board.to_markdown())
    print(f"wrote {', '.join(SCOREBOARD_OUTPUTS)} to {out.path}")
    return 0
