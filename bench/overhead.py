"""Per-trial overhead of the engine: darch vs raw Dask vs Optuna on Dask, on one LocalCluster.

Every system runs no-op trials (``SyntheticEvaluator(epochs=1)``: microseconds of work) on the *same*
``LocalCluster(2 workers, 1 thread each, processes)``, in one process, so the figures compare the
machinery around a trial:

* **darch** — ``Experiment.run`` with everything on: random search over the MNIST conv-net space,
  journal (fsynced appends), ``config.json``/``result.json`` per trial, results table at the end;
  at the default ``max_concurrent`` and at other values;
* **raw Dask** — ``client.map`` + ``as_completed`` over pre-sampled configs, each task calling the
  same evaluator with the same arguments (trial folder included), no journal: the floor for one
  Dask task per trial; plus an empty task (``dask_noop``) for reference;
* **Optuna + DaskStorage** — ``optuna_integration.DaskStorage()`` (Optuna's in-memory storage, on
  the scheduler) and one ``client.submit(study.optimize, objective, n_trials=1, pure=False)`` future
  per trial, the pattern of Dask's machine-learning docs. The objective suggests one float and returns
  it. The headline uses RandomSampler (darch's search is random too) with Optuna's per-trial logging
  off on workers, both of which favour Optuna; variants record 10 trials per future (optuna-examples'
  ``dask_simple.py``) and the verbatim pattern (default TPE sampler, default logging).

Goals: darch / raw Dask <= 1.25, Optuna-Dask / darch >= 3.

Usage::

    python bench/overhead.py [--quick] [--trials 2000] [--optuna-trials 600] [--repeats 3]

Writes ``bench/results/overhead.json`` (``overhead-quick.json`` with ``--quick``, so that a quick run
never replaces a full result); the last printed line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import local_cluster, ms, report  # noqa: E402

logger = logging.getLogger("bench.overhead")

GOAL_VS_DASK = 1.25
GOAL_OPTUNA_VS_DARCH = 3.0


# -- raw Dask -------------------------------------------------------------------------------------
def evaluate(item: tuple[int, dict[str, Any], Any, str], evaluator: Any) -> dict[str, Any]:
    """One raw-Dask trial: the same evaluator call darch's worker makes, without darch around it."""
    trial, config, arch, trial_dir = item
    os.makedirs(trial_dir, mode=0o700, exist_ok=True)
    return evaluator(arch, config=config, budget=None, trial_dir=trial_dir, seed=trial, resume=False)


def noop(x: int) -> int:
    return x


def raw_dask(client: Any, items: list[Any], evaluator: Any) -> tuple[float, float]:
    """Wall and driver-process CPU seconds (the LocalCluster's scheduler runs in this process too)."""
    from distributed import as_completed

    c0 = time.process_time()
    t0 = time.perf_counter()
    futures = client.map(evaluate, items, evaluator=evaluator, pure=False)
    n = 0
    for _fut, result in as_completed(futures, with_results=True):
        n += isinstance(result, dict)
    elapsed = time.perf_counter() - t0
    assert n == len(items), f"raw Dask finished {n} of {len(items)}"
    return elapsed, time.process_time() - c0


def raw_noop(client: Any, n: int) -> float:
    from distributed import as_completed

    t0 = time.perf_counter()
    futures = client.map(noop, range(n), pure=False)
    for _ in as_completed(futures, with_results=True):
        pass
    return time.perf_counter() - t0


def raw_items(n: int, folder: Path) -> list[Any]:
    from toolkit.searchers import RandomSearcher
    from toolkit.space import SearchSpace
    from toolkit.spaces import conv_net

    space = SearchSpace(conv_net, num_classes=10)
    searcher = RandomSearcher(seed=0)
    searcher.setup(space)
    items = []
    for i in range(n):
        config = searcher.ask()
        items.append((i, config, space.replay(config), str(folder / f"{i:06d}")))
    return items


# -- darch ----------------------------------------------------------------------------------------
def darch(client: Any, n: int, log_dir: Path, name: str, max_concurrent: int | None) -> dict[str, float]:
    from toolkit.evaluators.synthetic import SyntheticEvaluator
    from toolkit.experiment import Experiment
    from toolkit.journal import read_events
    from toolkit.space import SearchSpace
    from toolkit.spaces import conv_net

    exp = Experiment(
        name, SearchSpace(conv_net, num_classes=10), SyntheticEvaluator(epochs=1), log_dir=log_dir
    )
    c0 = time.process_time()
    t0 = time.perf_counter()
    df = exp.run(client, n_trials=n, max_concurrent=max_concurrent, progress=False)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    assert len(df) == n and (df["status"] == "finished").all(), "darch did not finish every trial"
    events = read_events(exp.path, ["submitted", "finished"])
    first = min(e["t"] for e in events if e["event"] == "submitted")
    last = max(e["t"] for e in events if e["event"] == "finished")
    return {"total_s": elapsed, "loop_s": last - first, "cpu_s": cpu}


# -- Optuna on Dask -------------------------------------------------------------------------------
def objective(trial: Any) -> float:
    return trial.suggest_float("x", 0.0, 1.0)


def optimize_quietly(study: Any, n_trials: int) -> None:
    """``study.optimize`` with Optuna's per-trial INFO logging off on the worker."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=n_trials)


def optuna_dask(client: Any, n: int, per_future: int, sampler: str = "random", quiet: bool = True) -> float:
    """``n`` trials as ``n / per_future`` futures of ``study.optimize`` on a DaskStorage study."""
    import optuna
    from distributed import wait
    from optuna_integration import DaskStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = DaskStorage(client=client)
    chosen = optuna.samplers.RandomSampler(seed=0) if sampler == "random" else None  # None: TPE, the default
    study = optuna.create_study(storage=storage, sampler=chosen)
    t0 = time.perf_counter()
    if quiet:
        futures = [
            client.submit(optimize_quietly, study, per_future, pure=False) for _ in range(n // per_future)
        ]
    else:  # verbatim: the objective passed straight to study.optimize
        futures = [
            client.submit(study.optimize, objective, n_trials=per_future, pure=False)
            for _ in range(n // per_future)
        ]
    wait(futures)
    elapsed = time.perf_counter() - t0
    done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == n // per_future * per_future, f"Optuna completed {len(done)} of {n}"
    return elapsed


# -- main -----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about 30 s)")
    parser.add_argument("--trials", type=int, default=None, help="trials per darch / raw Dask run (2000)")
    parser.add_argument("--optuna-trials", type=int, default=None, help="trials per Optuna-Dask run (600)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats of darch and raw Dask (3)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("distributed").setLevel(logging.WARNING)
    n = args.trials or (300 if args.quick else 2000)
    n_optuna = args.optuna_trials or (100 if args.quick else 600)
    repeats = args.repeats or (1 if args.quick else 3)

    from distributed import Client

    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="darch-bench-overhead-"))
    cluster = local_cluster(2)
    client = Client(cluster)
    try:
        # warm up every path once (imports on workers, connections)
        raw_noop(client, 200)
        raw_dask(client, raw_items(100, tmp / "warm-raw"), _evaluator())
        darch(client, 100, tmp, "warm", None)
        optuna_dask(client, 20, 1)

        raw_t, darch_t, darch_loop, raw_cpu, darch_cpu = [], [], [], [], []
        noop_t = []
        for r in range(repeats):  # interleaved, so drift in the machine hits both alike
            items = raw_items(n, tmp / f"raw-{r}")
            noop_t.append(raw_noop(client, n))
            wall, cpu = raw_dask(client, items, _evaluator())
            raw_t.append(wall)
            raw_cpu.append(cpu)
            d = darch(client, n, tmp, f"default-{r}", None)
            darch_t.append(d["total_s"])
            darch_cpu.append(d["cpu_s"])
            darch_loop.append(d["loop_s"])
            logger.info(
                "repeat %d: raw Dask %.2f ms/trial, darch %.2f ms/trial (loop %.2f), empty task %.2f",
                r,
                ms(raw_t[-1], n),
                ms(darch_t[-1], n),
                ms(darch_loop[-1], n),
                ms(noop_t[-1], n),
            )
        by_concurrency: dict[str, float] = {}
        for mc in (2, 16, 64):
            d = darch(client, n, tmp, f"mc{mc}", mc)
            by_concurrency[str(mc)] = ms(d["total_s"], n)
            logger.info("darch max_concurrent=%d: %.2f ms/trial", mc, by_concurrency[str(mc)])
        optuna_runs: dict[str, float] = {}
        for label, per_future, sampler, quiet in (
            ("1_per_future_random_quiet", 1, "random", True),
            ("10_per_future_random_quiet", 10, "random", True),
            ("1_per_future_tpe_default_logging", 1, "tpe", False),
        ):
            optuna_runs[label] = ms(optuna_dask(client, n_optuna, per_future, sampler, quiet), n_optuna)
            logger.info("Optuna-Dask %s: %.2f ms/trial", label, optuna_runs[label])
        slots = sum(client.nthreads().values())
    finally:
        client.close()
        cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)

    darch_ms = ms(statistics.median(darch_t), n)
    dask_ms = ms(statistics.median(raw_t), n)
    optuna_ms = optuna_runs["1_per_future_random_quiet"]
    by_concurrency = {f"default ({2 * slots})": darch_ms, **by_concurrency}
    result = {
        "what": "ms per no-op trial on one LocalCluster(2 worker processes, 1 thread each); medians of repeats",
        "trials": n,
        "optuna_trials": n_optuna,
        "repeats": repeats,
        "quick": args.quick,
        "darch_ms_per_trial": darch_ms,
        "dask_ms_per_trial": dask_ms,
        "optuna_dask_ms_per_trial": optuna_ms,
        "ratio_darch_vs_dask": round(darch_ms / dask_ms, 3),
        "ratio_darch_vs_dask_median_of_pairs": round(
            statistics.median(d / r for d, r in zip(darch_t, raw_t)), 3
        ),
        "ratio_darch_vs_dask_driver_cpu": round(statistics.median(darch_cpu) / statistics.median(raw_cpu), 3),
        "ratio_optuna_dask_vs_darch": round(optuna_ms / darch_ms, 3),
        "meets_goal_darch_vs_dask": darch_ms / dask_ms <= GOAL_VS_DASK,
        "meets_goal_optuna_dask_vs_darch": optuna_ms / darch_ms >= GOAL_OPTUNA_VS_DARCH,
        "goals": {
            "ratio_darch_vs_dask": f"<= {GOAL_VS_DASK}",
            "ratio_optuna_dask_vs_darch": f">= {GOAL_OPTUNA_VS_DARCH}",
        },
        "darch_loop_ms_per_trial": ms(statistics.median(darch_loop), n),
        "darch_ms_per_trial_by_max_concurrent": by_concurrency,
        "dask_noop_ms_per_trial": ms(statistics.median(noop_t), n),
        "driver_cpu_ms_per_trial": {
            "darch": ms(statistics.median(darch_cpu), n),
            "dask": ms(statistics.median(raw_cpu), n),
            "note": "CPU of the driver process, all threads, the LocalCluster scheduler included",
        },
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "optuna_dask_ms_per_trial_variants": optuna_runs,
        "runs_ms_per_trial": {
            "darch": [ms(t, n) for t in darch_t],
            "dask": [ms(t, n) for t in raw_t],
            "dask_noop": [ms(t, n) for t in noop_t],
        },
        "notes": {
            "darch": "Experiment.run end to end: journal on, trial files, results() table at the end; "
            "darch_loop_ms_per_trial is first submitted -> last finished from the journal",
            "dask": "client.map + as_completed over pre-sampled configs; each task makes its trial folder "
            "and calls the same SyntheticEvaluator(epochs=1); no journal",
            "optuna_dask": "DaskStorage() (in-memory on the scheduler) + one client.submit(study.optimize, "
            "objective, n_trials=1, pure=False) per trial (Dask docs); RandomSampler; one suggest_float; "
            "Optuna logging off on workers. Variants: 10 trials per future; verbatim (TPE, default logging)",
        },
    }
    return report("overhead-quick" if args.quick else "overhead", result)


def _evaluator() -> Any:
    from toolkit.evaluators.synthetic import SyntheticEvaluator

    return SyntheticEvaluator(epochs=1)


if __name__ == "__main__":
    main()
