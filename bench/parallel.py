"""Parallel efficiency: 1-second trials on 2, 4 and 8 workers, wall time against the ideal.

Every trial is ``SyntheticEvaluator(sleep=1.0)`` (it sleeps one second and scores the config), run by
``Experiment.run`` with random search over the MNIST conv-net space, journal on, on a LocalCluster of
``k`` single-threaded worker processes (``make_cluster("local", n_workers=k)``; eight workers
oversubscribe two cores, which sleeping tolerates). ``n = trials_per_worker * k`` trials take ideally
``n / k`` seconds; *efficiency* is ideal / wall, with wall measured around ``Experiment.run`` on a warm
cluster (journal creation and the final results table included). Goal: >= 95 % on 8 workers.

Anchors on the same 8-worker cluster and the same trials:

* **raw Dask** — ``client.map`` + ``as_completed`` over the same evaluator call (trial folder and its
  checkpoint file included), no journal, no searcher: the floor;
* **Optuna + DaskStorage** — one ``client.submit(study.optimize, objective, n_trials=1)`` future per
  trial (the pattern of Dask's docs), the objective sleeping one second;
* **Ray Tune** — ``Tuner.fit`` with ``max_concurrent_trials=8`` on ``ray.init(num_cpus=8)``, defaults
  otherwise (a function trainable sleeping one second), 2 trials per worker only: Ray starts a worker
  process per trial, which costs seconds here; skipped with ``--quick`` or without Ray.

Then the same darch measurement on the real test SLURM (``make_cluster("test-slurm", jobs=2)``) when
``sinfo`` answers, else ``"skipped: no SLURM"``.

Usage::

    python bench/parallel.py [--quick] [--trials-per-worker 6] [--no-ray] [--no-slurm]

Writes ``bench/results/parallel.json`` (``parallel-quick.json`` with ``--quick``); the last printed
line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import report  # noqa: E402
from multifidelity import code_version, tool_versions  # noqa: E402

logger = logging.getLogger("bench.parallel")

GOAL_EFFICIENCY = 0.95
SLEEP_S = 1.0
RAY_TRIALS_PER_WORKER = 2
ANCHOR_LABELS = {"dask": "raw Dask client.map", "optuna_dask": "Optuna + DaskStorage", "ray_tune": "Ray Tune"}


# -- darch ------------------------------------------------------------------------------------------
def run_darch(client: Any, n_trials: int, log_dir: Path, name: str, sleep: float = SLEEP_S) -> dict[str, Any]:
    """One search of ``n_trials`` sleeping trials; wall time around ``Experiment.run``."""
    from toolkit import Experiment, SearchSpace
    from toolkit.evaluators import SyntheticEvaluator
    from toolkit.searchers import RandomSearcher
    from toolkit.spaces import conv_net

    exp = Experiment(
        name,
        SearchSpace(conv_net),
        SyntheticEvaluator(sleep=sleep),
        searcher=RandomSearcher(seed=0),
        log_dir=log_dir,
    )
    t0 = time.perf_counter()
    frame = exp.run(client, n_trials=n_trials, progress=False)
    wall = time.perf_counter() - t0
    finished = int((frame["status"] == "finished").sum())
    return {
        "wall_s": round(wall, 3),
        "finished": finished,
        "busy_s": round(float(frame["duration_s"].sum()), 3),
    }


def _figures(run: dict[str, Any], n_trials: int, workers: int) -> dict[str, Any]:
    ideal = -(-n_trials // workers) * SLEEP_S
    return {
        "workers": workers,
        "trials": n_trials,
        "ideal_s": ideal,
        **run,
        "efficiency": round(ideal / run["wall_s"], 4),
        "overhead_s_per_trial_slot": round((run["wall_s"] - ideal) * workers / n_trials, 4),
    }


def warm_up(client: Any, log_dir: Path, workers: int) -> None:
    """Import darch on every worker and settle the cluster before timing."""
    run_darch(client, 2 * workers, log_dir, f"warm-{workers}", sleep=0.0)


# -- raw Dask ---------------------------------------------------------------------------------------
def sleep_trial(item: tuple[int, str], evaluator: Any) -> dict[str, Any]:
    """One raw-Dask trial: the same evaluator call (trial folder included), no darch around it."""
    i, trial_dir = item
    os.makedirs(trial_dir, mode=0o700, exist_ok=True)
    return evaluator({}, config={"x": float(i)}, seed=i, trial_dir=trial_dir)


def run_raw_dask(client: Any, n_trials: int, log_dir: Path) -> dict[str, Any]:
    from distributed import as_completed

    from toolkit.evaluators import SyntheticEvaluator

    items = [(i, str(log_dir / "raw-dask" / str(i))) for i in range(n_trials)]
    t0 = time.perf_counter()
    futures = client.map(sleep_trial, items, evaluator=SyntheticEvaluator(sleep=SLEEP_S), pure=False)
    done = sum(isinstance(r, dict) for _f, r in as_completed(futures, with_results=True))
    return {"wall_s": round(time.perf_counter() - t0, 3), "finished": done}


# -- Optuna + DaskStorage ---------------------------------------------------------------------------
def optuna_objective(trial: Any) -> float:
    x = trial.suggest_float("x", 0.0, 1.0)
    time.sleep(SLEEP_S)
    return x


def run_optuna_dask(client: Any, n_trials: int) -> dict[str, Any]:
    import optuna
    from distributed import wait
    from optuna_integration import DaskStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    storage = DaskStorage(client=client)
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    futures = [
        client.submit(study.optimize, optuna_objective, n_trials=1, pure=False) for _ in range(n_trials)
    ]
    wait(futures)
    wall = time.perf_counter() - t0
    done = sum(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False))
    return {"wall_s": round(wall, 3), "finished": done}


# -- Ray Tune ---------------------------------------------------------------------------------------
def ray_trainable(config: dict[str, Any]) -> dict[str, float]:
    time.sleep(SLEEP_S)
    return {"score": config["x"]}


def run_ray(n_trials: int, workers: int, storage: Path) -> dict[str, Any]:
    """Ray Tune with its defaults, ``workers`` trials at a time; wall time around ``Tuner.fit``."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    try:
        import ray
        from ray import tune
    except ImportError as exc:
        return {"skipped": f"Ray Tune not installed ({exc}); pip install 'ray[tune]'"}
    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    init_s = time.perf_counter() - t0
    try:
        tuner = tune.Tuner(
            ray_trainable,
            param_space={"x": tune.uniform(0.0, 1.0)},
            tune_config=tune.TuneConfig(
                num_samples=n_trials, metric="score", mode="max", max_concurrent_trials=workers
            ),
            run_config=tune.RunConfig(verbose=0, storage_path=str(storage), name="parallel"),
        )
        t0 = time.perf_counter()
        grid = tuner.fit()
        wall = time.perf_counter() - t0
        done = sum(r.error is None for r in grid)
    finally:
        ray.shutdown()
    return {
        "wall_s": round(wall, 3),
        "finished": done,
        "init_s": round(init_s, 2),
        "version": ray.__version__,
    }


# -- SLURM ------------------------------------------------------------------------------------------
def slurm_up() -> str | None:
    """``None`` when a SLURM controller answers, else why not."""
    if not shutil.which("sinfo"):
        return "skipped: no SLURM (sinfo not found)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"skipped: no SLURM (sinfo failed: {exc})"
    states = out.stdout.split()
    if out.returncode != 0 or not any(s.rstrip("*~#") in ("idle", "mixed", "allocated") for s in states):
        return f"skipped: no SLURM (sinfo rc={out.returncode}, states={states or out.stderr.strip()[:200]})"
    return None


def run_slurm(n_trials: int, log_dir: Path) -> dict[str, Any]:
    why = slurm_up()
    if why:
        return {"skipped": why}
    from distributed import Client

    from toolkit.cluster import make_cluster

    t0 = time.perf_counter()
    cluster = make_cluster(
        "test-slurm",
        jobs=2,
        shared_temp_directory=str(log_dir / "tls"),
        log_directory=str(log_dir / "slurm-jobs"),
        scheduler_options={"dashboard_address": ":0"},
    )
    client = Client(cluster)
    try:
        client.wait_for_workers(2, timeout=120)
        startup = time.perf_counter() - t0
        warm_up(client, log_dir, 2)
        run = _figures(run_darch(client, n_trials, log_dir, "slurm"), n_trials, 2)
        run["startup_s"] = round(startup, 2)
        return run
    except Exception as exc:  # noqa: BLE001 - a benchmark records what went wrong and goes on
        return {"skipped": f"SLURM run failed: {type(exc).__name__}: {exc}"}
    finally:
        with contextlib.suppress(Exception):
            client.close()
        with contextlib.suppress(Exception):
            cluster.close()
        del client, cluster  # its TLS key files go with it, before the folder is removed
        gc.collect()


# -- main -------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials, no Ray Tune anchor (~1 min)")
    parser.add_argument("--trials-per-worker", type=int, default=None, help="trials per worker (default 6)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray Tune anchor")
    parser.add_argument("--no-slurm", action="store_true", help="skip the test-SLURM run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("distributed", "toolkit"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    per_worker = args.trials_per_worker or (3 if args.quick else 6)

    from distributed import Client

    from toolkit.cluster import make_cluster

    tmp = Path(tempfile.mkdtemp(prefix="darch-bench-parallel-"))
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    darch: dict[str, Any] = {}
    anchors: dict[str, Any] = {}
    try:
        for workers in (2, 4, 8):
            n = per_worker * workers
            cluster = make_cluster(
                "local", n_workers=workers, dashboard_address=None, silence_logs=logging.ERROR
            )
            client = Client(cluster)
            try:
                client.wait_for_workers(workers, timeout=120)
                warm_up(client, tmp, workers)
                darch[str(workers)] = _figures(run_darch(client, n, tmp, f"w{workers}"), n, workers)
                logger.info("darch, %d workers: %s", workers, darch[str(workers)])
                if workers == 8:
                    anchors["dask"] = _figures(run_raw_dask(client, n, tmp), n, workers)
                    logger.info("raw Dask, 8 workers: %s", anchors["dask"])
                    anchors["optuna_dask"] = _figures(run_optuna_dask(client, n), n, workers)
                    logger.info("Optuna + DaskStorage, 8 workers: %s", anchors["optuna_dask"])
            finally:
                client.close()
                cluster.close()
        n_ray = RAY_TRIALS_PER_WORKER * 8  # Ray starts a process per trial: seconds each, so fewer trials
        if args.quick or args.no_ray:
            anchors["ray_tune"] = {"skipped": "--quick" if args.quick else "--no-ray"}
        else:
            ray_run = run_ray(n_ray, 8, tmp / "ray")
            anchors["ray_tune"] = ray_run if "skipped" in ray_run else _figures(ray_run, n_ray, 8)
            logger.info("Ray Tune, 8 concurrent: %s", anchors["ray_tune"])
        slurm = {"skipped": "--no-slurm"} if args.no_slurm else run_slurm(4 * 2, tmp)
        logger.info("test SLURM, 2 jobs: %s", slurm)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    eff8 = darch["8"]["efficiency"]
    floor = anchors.get("dask", {}).get("efficiency")
    anchor_eff = {
        ANCHOR_LABELS[k]: v.get("efficiency", v.get("skipped"))
        for k, v in anchors.items()
        if k in ANCHOR_LABELS
    }
    result: dict[str, Any] = {
        "what": "1-second sleeping trials (SyntheticEvaluator(sleep=1.0)), random search, journal on; "
        "efficiency = (trials / workers x 1 s) / wall of Experiment.run on a warm LocalCluster",
        "quick": args.quick,
        "trials_per_worker": per_worker,
        "efficiency_2_workers": darch["2"]["efficiency"],
        "efficiency_4_workers": darch["4"]["efficiency"],
        "efficiency_8_workers": eff8,
        "goal_efficiency_8_workers": GOAL_EFFICIENCY,
        "meets_goal": eff8 >= GOAL_EFFICIENCY,
        "efficiency_8_workers_vs_raw_dask": round(eff8 / floor, 4) if floor else None,
        "darch": darch,
        "anchors": anchors,
        "slurm": slurm,
        "figures": [
            {
                "key": "efficiency_8_workers",
                "label": "parallel efficiency, 8 workers, 1 s trials",
                "darch": eff8,
                "unit": "ideal/wall",
                "higher_is_better": True,
                "anchors": anchor_eff,
                "goal": f">= {GOAL_EFFICIENCY}",
                "met": eff8 >= GOAL_EFFICIENCY,
            },
            {
                "key": "efficiency_2_workers",
                "label": "parallel efficiency, 2 workers",
                "darch": darch["2"]["efficiency"],
                "unit": "ideal/wall",
                "higher_is_better": True,
                "anchors": {},
                "goal": None,
                "met": None,
            },
            {
                "key": "efficiency_slurm_2_jobs",
                "label": "parallel efficiency, test SLURM, 2 jobs",
                "darch": slurm.get("efficiency", slurm.get("skipped")),
                "unit": "ideal/wall",
                "higher_is_better": True,
                "anchors": {},
                "goal": f">= {GOAL_EFFICIENCY}",
                "met": (slurm["efficiency"] >= GOAL_EFFICIENCY) if "efficiency" in slurm else None,
            },
        ],
        "tool_versions": tool_versions(),
        "code": code_version(),
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "duration_s": round(time.perf_counter() - started, 1),
    }
    return report("parallel-quick" if args.quick else "parallel", result)


if __name__ == "__main__":
    main()
