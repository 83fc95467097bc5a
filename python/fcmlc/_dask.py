"""Bounded task submission to a Dask cluster, shared by ``simulate`` and ``feldman_cousins``."""
from __future__ import annotations

import time


def map_bounded(scheduler, shared, tasks, fn, args_of, on_result, per_worker: int = 2):
    """Run ``fn(shared, *args_of(task))`` on the cluster for every task, in order of submission.

    ``scheduler``: an address or a ``distributed.Client`` (a client made here is closed here).
    ``shared`` is scattered once to every worker. At most ``per_worker`` tasks per worker are in
    flight, so the results waiting on the client stay bounded; ``on_result(task, result,
    seconds)`` runs on the client as each task finishes (completion order: the callers write by
    task, so the output does not depend on it).
    """
    try:
        from distributed import Client, as_completed
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("Dask scale-out needs the 'dist' extra: pip install 'fcmlc[dist]'") from None
    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        shared_future = client.scatter(shared, broadcast=True)
        n_workers = max(1, len(client.scheduler_info()["workers"]))
        queue = list(tasks)
        running = as_completed()
        inflight = {}

        def submit_next():
            task = queue.pop(0)
            fut = client.submit(fn, shared_future, *args_of(task), pure=False)
            inflight[fut.key] = (task, time.perf_counter())
            running.add(fut)

        for _ in range(min(per_worker * n_workers, len(queue))):
            submit_next()
        for fut in running:
            task, t0 = inflight.pop(fut.key)
            on_result(task, fut.result(), time.perf_counter() - t0)
            del fut
            if queue:
                submit_next()
    finally:
        if client is not scheduler:
            client.close()
