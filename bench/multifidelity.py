"""Multi-fidelity search: ASHA's worker utilization, and its epochs-to-quality against random search.

(a) **Utilization.** ASHA (``min_budget=1, max_budget=27, eta=3``) with :class:`EpochSleepEvaluator`,
a :class:`~toolkit.evaluators.SyntheticEvaluator` that sleeps ``sleep_per_epoch`` seconds for every
epoch it trains (a promoted trial trains only its new epochs, from its checkpoint), on a LocalCluster
of 2 and of 4 single-threaded worker processes. Utilization = busy seconds (the sum of the trials'
``duration_s`` in ``results()``) / (workers x wall time of ``Experiment.run``). Goal >= 90 %.
Also recorded: the utilization up to the moment the last new config started (before ASHA's drain,
where the last promotions run while other workers have nothing left to do). Anchor: Ray Tune's
``ASHAScheduler`` (milestones at 1, 3, 9 and 27 epochs, the same sleep per epoch,
``max_concurrent_trials=2``, defaults otherwise) on 27 configs, against darch on the same 27 configs;
skipped with ``--quick`` or without Ray. Ray's ASHA stops trials that train continuously instead of
promoting checkpoints, so it trains more epochs per config; utilization is comparable all the same.

(b) **Efficiency.** The digits conv-net space (``toolkit.spaces.conv_net``) with the real evaluator,
``KerasClassifierEvaluator(dataset="digits", epochs=9)``, on 2 workers, for each seed: random search
with ``n`` trials of 9 epochs (``B = 9 n`` epochs), and ASHA (``1..9`` epochs, ``eta=3``, random
sampling with the same seed) given the same ``B`` epochs (its finished jobs, walked in time order,
are counted until their trained epochs reach ``B``). Recorded: the best ``val_accuracy`` of each at
``B``; the epochs ASHA needed to come within 0.005 (half a percentage point) of the best that random
search found; ``asha_epochs_fraction`` = those epochs / ``B`` (median over seeds; a seed where ASHA
never got there counts as infinite); and ASHA's utilization (busy / (2 x wall)).

Usage::

    python bench/multifidelity.py [--quick] [--seeds 3] [--random-trials 6] [--no-ray]

Writes ``bench/results/multifidelity.json`` (``multifidelity-quick.json`` with ``--quick``); the last
printed line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import report  # noqa: E402

from toolkit.evaluators.synthetic import SyntheticEvaluator  # noqa: E402

logger = logging.getLogger("bench.multifidelity")

GOAL_UTILIZATION = 0.90
WITHIN = 0.005  # "within 0.5 %" of random search's best: half a percentage point of val_accuracy
ETA = 3


class EpochSleepEvaluator(SyntheticEvaluator):
    """A synthetic trial that sleeps ``sleep_per_epoch`` seconds per epoch it trains.

    A promoted trial resumes from its checkpoint, so it sleeps only for its new epochs: the work of a
    job is proportional to the epochs it adds, as with real training.

    Examples
    --------
    >>> ev = EpochSleepEvaluator(sleep_per_epoch=0.0)
    >>> r = ev({}, config={"x": 1.0}, budget=3)
    >>> r["trained_epochs"], len(r["history"]["epoch"])
    (3, 3)
    """

    sleep = 0.0
    fail_rate = 0.0
    fail_on = None

    def __init__(
        self,
        sleep_per_epoch: float = 0.2,
        epochs: int = 1,
        noise: float = 0.0,
        objective: str = "val_accuracy",
    ):
        self.sleep_per_epoch = sleep_per_epoch
        self.epochs = epochs
        self.noise = noise
        self.objective = objective

    def __call__(
        self,
        arch: Any,
        *,
        config: dict[str, Any],
        budget: float | None = None,
        trial_dir: str | None = None,
        seed: int = 0,
        resume: bool = False,
    ) -> dict[str, Any]:
        result = super().__call__(
            arch, config=config, budget=budget, trial_dir=trial_dir, seed=seed, resume=resume
        )
        trained = len(result["history"]["epoch"])
        if trained and self.sleep_per_epoch:
            time.sleep(self.sleep_per_epoch * trained)
        result["trained_epochs"] = trained
        return result


def code_version() -> dict[str, Any]:
    """The git commit the figures were measured at, and whether ``toolkit/`` had uncommitted changes."""
    import subprocess

    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    status = git("status", "--porcelain", "--", "toolkit")
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "toolkit_dirty": bool(status) if status is not None else None,
    }


def tool_versions() -> dict[str, str | None]:
    """Versions of the anchors' packages and of TensorFlow / Keras (``_common.machine`` lists darch's)."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for dist in ("tensorflow-cpu", "tensorflow", "keras", "keras-tuner", "ray"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


# -- reading a journal ------------------------------------------------------------------------------
def trained_epochs(event: dict[str, Any]) -> int:
    """Epochs one finished job trained (a promotion trains only the epochs it adds)."""
    result = event.get("result") or {}
    if isinstance(result.get("trained_epochs"), int):
        return int(result["trained_epochs"])
    return len((result.get("history") or {}).get("epoch") or [])


def timeline(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The finished jobs of a journal in time order, as ``{t, start, end, epochs, value}``; and the failures."""
    from toolkit.journal import read_events

    events = read_events(path, ("finished", "failed"))
    jobs = []
    for ev in sorted((e for e in events if e["event"] == "finished"), key=lambda e: e["t"]):
        start = (ev.get("start") or {}).get("t")
        duration = ev.get("duration_s") or 0.0
        jobs.append(
            {
                "t": ev["t"],
                "start": start,
                "end": start + duration if start is not None else None,
                "duration_s": duration,
                "epochs": trained_epochs(ev),
                "value": ev.get("value"),
                "rung": ev.get("rung"),
                "worker": (ev.get("start") or {}).get("worker"),
            }
        )
    return jobs, sum(e["event"] == "failed" for e in events)


def dispatch_gaps(jobs: list[dict[str, Any]]) -> dict[str, float | None]:
    """Idle time on a worker between the end of one job and the start of its next one (ms)."""
    by_worker: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        if job["start"] is not None and job["worker"]:
            by_worker.setdefault(job["worker"], []).append(job)
    gaps = []
    for runs in by_worker.values():
        runs.sort(key=lambda j: j["start"])
        gaps += [max(0.0, b["start"] - a["end"]) for a, b in zip(runs, runs[1:])]
    if not gaps:
        return {"median_ms": None, "p90_ms": None}
    gaps.sort()
    return {
        "median_ms": round(1000 * statistics.median(gaps), 1),
        "p90_ms": round(1000 * gaps[max(0, math.ceil(0.9 * len(gaps)) - 1)], 1),
    }


def busy_between(jobs: list[dict[str, Any]], lo: float, hi: float) -> float:
    """Seconds of job time inside ``[lo, hi]``."""
    total = 0.0
    for job in jobs:
        if job["start"] is None:
            continue
        total += max(0.0, min(job["end"], hi) - max(job["start"], lo))
    return total


def run_search(
    client: Any,
    name: str,
    evaluator: Any,
    n_trials: int,
    log_dir: Path,
    seed: int = 0,
    scheduler: Any = None,
    searcher: Any = None,
) -> dict[str, Any]:
    """Run one search on a warm client; return wall time, busy time, utilization and the job timeline."""
    from toolkit import Experiment, SearchSpace
    from toolkit.searchers import RandomSearcher
    from toolkit.spaces import conv_net

    exp = Experiment(
        name,
        SearchSpace(conv_net),
        evaluator,
        searcher=searcher if searcher is not None else RandomSearcher(seed=seed),
        scheduler=scheduler,
        seed=seed,
        log_dir=log_dir,
    )
    workers = sum(client.nthreads().values())
    t_start = time.time()
    t0 = time.perf_counter()
    frame = exp.run(client, n_trials=n_trials, progress=False)
    wall = time.perf_counter() - t0
    jobs, failed = timeline(exp.path)
    busy = float(frame["duration_s"].fillna(0.0).sum())
    finished = frame[frame["status"] == "finished"]
    best = float(finished[exp.objective.name].max()) if len(finished) else float("nan")
    return {
        "wall_s": round(wall, 3),
        "busy_s": round(busy, 3),
        "workers": workers,
        "utilization": round(busy / (workers * wall), 4),
        "configs": len(frame),
        "jobs": len(jobs),
        "failed": failed,
        "epochs": sum(j["epochs"] for j in jobs),
        "best": round(best, 5),
        "dispatch_gap": dispatch_gaps(jobs),
        "mean_job_s_by_rung": {
            str(r): round(statistics.mean(j["duration_s"] for j in jobs if j["rung"] == r), 3)
            for r in sorted({j["rung"] for j in jobs}, key=lambda r: -1 if r is None else r)
        },
        "t_start": t_start,
        "jobs_timeline": jobs,
    }


# -- (a) utilization --------------------------------------------------------------------------------
def utilization_run(client: Any, n_trials: int, sleep_per_epoch: float, log_dir: Path, name: str) -> dict:
    from bench.multifidelity import EpochSleepEvaluator as Importable  # pickled by reference on workers
    from toolkit.schedulers import ASHA

    run = run_search(
        client,
        name,
        Importable(sleep_per_epoch=sleep_per_epoch),
        n_trials,
        log_dir,
        scheduler=ASHA(min_budget=1, max_budget=27, eta=ETA),
    )
    jobs = run.pop("jobs_timeline")
    rung0_starts = [j["start"] for j in jobs if j["rung"] == 0 and j["start"] is not None]
    last_new = max(rung0_starts) if rung0_starts else None
    if last_new is not None and last_new > run["t_start"]:
        span = last_new - run["t_start"]
        run["utilization_until_last_new_config"] = round(
            busy_between(jobs, run["t_start"], last_new) / (run["workers"] * span), 4
        )
        run["drain_s"] = round(run["t_start"] + run["wall_s"] - last_new, 3)
    run["jobs_by_rung"] = {
        str(r): sum(j["rung"] == r for j in jobs) for r in sorted({j["rung"] for j in jobs})
    }
    run["ideal_wall_s"] = round(run["epochs"] * sleep_per_epoch / run["workers"], 3)
    run.pop("t_start")
    return run


def ray_quality(config: dict[str, Any]) -> tuple[float, float]:
    """The synthetic curve's asymptote and time constant (the same shape as SyntheticEvaluator's)."""

    def unit(*parts: Any) -> float:
        blob = json.dumps(parts, sort_keys=True, default=str).encode()
        return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "big") / 2**64

    return 0.5 + 0.45 * unit("q", config), 0.5 + 2.5 * unit("tau", config)


def ray_trainable(config: dict[str, Any]) -> None:
    from ray import tune

    q, tau = ray_quality(config)
    for epoch in range(1, int(config["max_t"]) + 1):
        time.sleep(config["sleep_per_epoch"])
        tune.report({"val_accuracy": q - (q - 0.1) * math.exp(-epoch / tau)})


def ray_utilization(n_trials: int, workers: int, sleep_per_epoch: float, storage: Path) -> dict[str, Any]:
    """Ray Tune's ASHAScheduler on the same curve and sleep: utilization = sum of trial times / (workers x wall)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    try:
        import ray
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
    except ImportError as exc:
        return {"skipped": f"Ray Tune not installed ({exc}); pip install 'ray[tune]'"}
    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    init_s = time.perf_counter() - t0
    try:
        tuner = tune.Tuner(
            ray_trainable,
            param_space={
                "x": tune.uniform(0.0, 1.0),
                "y": tune.choice([16, 32, 48, 64]),
                "max_t": 27,
                "sleep_per_epoch": sleep_per_epoch,
            },
            tune_config=tune.TuneConfig(
                num_samples=n_trials,
                metric="val_accuracy",
                mode="max",
                max_concurrent_trials=workers,
                scheduler=ASHAScheduler(max_t=27, grace_period=1, reduction_factor=ETA),
            ),
            run_config=tune.RunConfig(verbose=0, storage_path=str(storage), name="asha"),
        )
        t0 = time.perf_counter()
        grid = tuner.fit()
        wall = time.perf_counter() - t0
        busy = sum(float(r.metrics.get("time_total_s") or 0.0) for r in grid if r.metrics)
        epochs = sum(int(r.metrics.get("training_iteration") or 0) for r in grid if r.metrics)
    finally:
        ray.shutdown()
    return {
        "wall_s": round(wall, 3),
        "busy_s": round(busy, 3),
        "workers": workers,
        "configs": n_trials,
        "epochs": epochs,
        "utilization": round(busy / (workers * wall), 4),
        "ideal_wall_s": round(epochs * sleep_per_epoch / workers, 3),
        "init_s": round(init_s, 2),
        "version": ray.__version__,
    }


# -- (b) efficiency ---------------------------------------------------------------------------------
def asha_configs_for(budget_epochs: int, max_budget: int, eta: int = ETA) -> int:
    """Configs ASHA can start within ``budget_epochs``: about ``1 + (eta-1)/eta * rungs`` epochs each."""
    from toolkit.schedulers.base import budget_ladder

    ladder = budget_ladder(1, max_budget, eta)
    per_config = ladder[0] + sum((b - a) / eta ** (i + 1) for i, (a, b) in enumerate(zip(ladder, ladder[1:])))
    return max(1, round(budget_epochs / per_config))


def within_budget(jobs: list[dict[str, Any]], budget: int) -> dict[str, Any]:
    """Walk jobs in time order while their epochs fit ``budget``: best value and epochs used."""
    used, best, n = 0, -math.inf, 0
    for job in jobs:
        if used + job["epochs"] > budget:
            break
        used += job["epochs"]
        n += 1
        if job["value"] is not None and job["value"] > best:
            best = job["value"]
    return {"best": round(best, 5) if best > -math.inf else None, "epochs": used, "jobs": n}


def epochs_to_reach(jobs: list[dict[str, Any]], target: float) -> int | None:
    """Epochs trained (jobs in time order) until one reached ``target``; ``None`` if none did."""
    used = 0
    for job in jobs:
        used += job["epochs"]
        if job["value"] is not None and job["value"] >= target:
            return used
    return None


def keras_evaluator(epochs: int) -> Any:
    from toolkit.evaluators.keras import KerasClassifierEvaluator

    return KerasClassifierEvaluator(dataset="digits", epochs=epochs)


def warm_keras(client: Any) -> float:
    """Import Keras and load digits on every worker (what a first trial would pay), before timing."""
    t0 = time.perf_counter()
    client.run(_warm_worker)
    return round(time.perf_counter() - t0, 2)


def _warm_worker() -> None:
    """One 1-epoch trial on this worker: TensorFlow starts, digits is loaded and cached."""
    from toolkit import SearchSpace
    from toolkit.evaluators.keras import KerasClassifierEvaluator
    from toolkit.spaces import conv_net

    space = SearchSpace(conv_net)
    config = space.sample(0)
    KerasClassifierEvaluator(dataset="digits", epochs=1)(space.replay(config), config=config, seed=0)


def efficiency_seed(client: Any, seed: int, random_trials: int, epochs: int, log_dir: Path) -> dict[str, Any]:
    """Random search and ASHA at the same epochs budget, one seed."""
    from toolkit.schedulers import ASHA

    budget = random_trials * epochs
    rnd = run_search(client, f"random-s{seed}", keras_evaluator(epochs), random_trials, log_dir, seed=seed)
    rnd_jobs = rnd.pop("jobs_timeline")
    rnd.pop("t_start")
    random_epochs = sum(j["epochs"] for j in rnd_jobs)
    n_asha = asha_configs_for(budget, epochs)
    asha = run_search(
        client,
        f"asha-s{seed}",
        keras_evaluator(epochs),
        n_asha,
        log_dir,
        seed=seed,
        scheduler=ASHA(min_budget=1, max_budget=epochs, eta=ETA),
    )
    asha_jobs = asha.pop("jobs_timeline")
    asha.pop("t_start")
    at_budget = within_budget(asha_jobs, random_epochs)
    target = rnd["best"] - WITHIN
    reach = epochs_to_reach(asha_jobs, target)
    return {
        "seed": seed,
        "budget_epochs": random_epochs,
        "random": rnd,
        "asha": {**asha, "best_at_budget": at_budget["best"], "epochs_at_budget": at_budget["epochs"]},
        "random_best": rnd["best"],
        "asha_best_at_budget": at_budget["best"],
        "target": round(target, 5),
        "asha_epochs_to_target": reach,
        "asha_epochs_fraction": round(reach / random_epochs, 4) if reach is not None else None,
        "asha_jobs_by_rung": {
            str(r): sum(j["rung"] == r for j in asha_jobs) for r in sorted({j["rung"] for j in asha_jobs})
        },
    }


def _median(values: list[float | None]) -> float | None:
    """Median where ``None`` counts as +infinity; ``None`` if the median itself is infinite."""
    xs = [math.inf if v is None else v for v in values]
    if not xs:
        return None
    m = statistics.median(xs)
    return None if math.isinf(m) else round(m, 4)


# -- main -------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, small searches, no Ray (~2 min)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds for (b) (default 3; quick 1)")
    parser.add_argument("--random-trials", type=int, default=None, help="random trials in (b) (default 6)")
    parser.add_argument("--epochs", type=int, default=9, help="full budget in (b), epochs (default 9)")
    parser.add_argument("--util-trials", type=int, default=None, help="ASHA configs in (a) (default 81)")
    parser.add_argument("--sleep-per-epoch", type=float, default=0.3, help="seconds per epoch in (a)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray Tune anchor")
    parser.add_argument("--skip-keras", action="store_true", help="run (a) only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("distributed", "toolkit"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    seeds = args.seeds or (1 if args.quick else 3)
    random_trials = args.random_trials or (3 if args.quick else 6)
    util_trials = args.util_trials or (27 if args.quick else 81)
    ray_trials = 27

    from distributed import Client

    from toolkit.cluster import make_cluster

    tmp = Path(tempfile.mkdtemp(prefix="darch-bench-multifidelity-"))
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    util: dict[str, Any] = {}
    seeds_out: list[dict[str, Any]] = []
    warm_s = None
    try:
        for workers in (2, 4):
            cluster = make_cluster(
                "local", n_workers=workers, dashboard_address=None, silence_logs=logging.ERROR
            )
            client = Client(cluster)
            try:
                client.wait_for_workers(workers, timeout=120)
                utilization_run(client, 2 * workers, 0.0, tmp, f"warm-w{workers}")
                util[str(workers)] = utilization_run(
                    client, util_trials, args.sleep_per_epoch, tmp, f"util-w{workers}"
                )
                logger.info("(a) ASHA utilization, %d workers: %s", workers, util[str(workers)])
                if workers == 2 and util_trials != ray_trials:
                    util["2_matched_to_ray"] = utilization_run(
                        client, ray_trials, args.sleep_per_epoch, tmp, "util-w2-matched"
                    )
                    logger.info("(a) ... with %d configs: %s", ray_trials, util["2_matched_to_ray"])
                if workers == 2 and not args.skip_keras:
                    warm_s = warm_keras(client)
                    for seed in range(seeds):
                        out = efficiency_seed(client, seed, random_trials, args.epochs, tmp)
                        seeds_out.append(out)
                        logger.info(
                            "(b) seed %d: random best %.4f (%d epochs, %.1f s), ASHA best %.4f at budget "
                            "(%d configs, %.1f s), epochs to target %s",
                            seed,
                            out["random_best"],
                            out["budget_epochs"],
                            out["random"]["wall_s"],
                            out["asha_best_at_budget"] or float("nan"),
                            out["asha"]["configs"],
                            out["asha"]["wall_s"],
                            out["asha_epochs_to_target"],
                        )
            finally:
                client.close()
                cluster.close()
        if args.quick or args.no_ray:
            ray_anchor: dict[str, Any] = {"skipped": "--quick" if args.quick else "--no-ray"}
        else:
            ray_anchor = ray_utilization(ray_trials, 2, args.sleep_per_epoch, tmp / "ray")
        logger.info("(a) Ray Tune ASHA, 2 concurrent: %s", ray_anchor)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    u2, u4 = util["2"]["utilization"], util["4"]["utilization"]
    matched = util.get("2_matched_to_ray", util["2"])
    result: dict[str, Any] = {
        "what": "(a) ASHA 1..27 eta 3, trials sleeping sleep_per_epoch per trained epoch: busy / (workers x "
        "wall); (b) digits conv-net, KerasClassifierEvaluator: ASHA 1..9 vs random at 9 epochs, same epochs",
        "quick": args.quick,
        "utilization_2_workers": u2,
        "utilization_4_workers": u4,
        "goal_utilization": GOAL_UTILIZATION,
        "meets_goal_utilization": min(u2, u4) >= GOAL_UTILIZATION,
        "utilization_runs": util,
        "sleep_per_epoch_s": args.sleep_per_epoch,
        "anchors": {"ray_tune_asha_2_workers": ray_anchor},
        "notes": {
            "drain": "utilization_until_last_new_config excludes ASHA's drain: once the last new config "
            "has started, the last promotions run while the other workers have nothing left to do",
            "dispatch_gap": "idle time on a worker between the end of one job and the start of its next "
            "(with a scheduler the runner keeps exactly one job per slot, so each job waits for the "
            "round trip: result -> runner -> scheduler decision -> submit)",
        },
    }
    figures = [
        {
            "key": "utilization_2_workers",
            "label": f"ASHA worker utilization, 2 workers ({util['2']['configs']} configs)",
            "darch": u2,
            "unit": "busy/(workers x wall)",
            "higher_is_better": True,
            "anchors": {},
            "goal": f">= {GOAL_UTILIZATION}",
            "met": u2 >= GOAL_UTILIZATION,
        },
        {
            "key": "utilization_4_workers",
            "label": f"ASHA worker utilization, 4 workers ({util['4']['configs']} configs)",
            "darch": u4,
            "unit": "busy/(workers x wall)",
            "higher_is_better": True,
            "anchors": {},
            "goal": f">= {GOAL_UTILIZATION}",
            "met": u4 >= GOAL_UTILIZATION,
        },
        {
            "key": "utilization_2_workers_matched",
            "label": f"ASHA worker utilization, 2 workers, {matched['configs']} configs (Ray's size)",
            "darch": matched["utilization"],
            "unit": "busy/(workers x wall)",
            "higher_is_better": True,
            "anchors": {"Ray Tune ASHA": ray_anchor.get("utilization", ray_anchor.get("skipped"))},
            "goal": f">= {GOAL_UTILIZATION}",
            "met": matched["utilization"] >= GOAL_UTILIZATION,
        },
    ]
    if seeds_out:
        fractions = [s["asha_epochs_fraction"] for s in seeds_out]
        frac = _median(fractions)
        keras_util = round(statistics.median(s["asha"]["utilization"] for s in seeds_out), 4)
        result.update(
            {
                "asha_epochs_fraction": frac,
                "utilization": keras_util,
                "random_best_median": round(statistics.median(s["random_best"] for s in seeds_out), 5),
                "asha_best_at_budget_median": _median([s["asha_best_at_budget"] for s in seeds_out]),
                "random_wall_s_median": round(statistics.median(s["random"]["wall_s"] for s in seeds_out), 2),
                "asha_wall_s_median": round(statistics.median(s["asha"]["wall_s"] for s in seeds_out), 2),
                "efficiency_settings": {
                    "seeds": seeds,
                    "random_trials": random_trials,
                    "epochs": args.epochs,
                    "budget_epochs": random_trials * args.epochs,
                    "asha": {"min_budget": 1, "max_budget": args.epochs, "eta": ETA},
                    "asha_configs": asha_configs_for(random_trials * args.epochs, args.epochs),
                    "within": WITHIN,
                    "workers": 2,
                    "keras_warm_up_s": warm_s,
                },
                "efficiency_seeds": seeds_out,
            }
        )
        figures += [
            {
                "key": "asha_epochs_fraction",
                "label": "epochs ASHA needs to come within 0.005 of random search's best / random's epochs",
                "darch": frac if frac is not None else "not reached",
                "unit": "fraction (median of seeds)",
                "higher_is_better": False,
                "anchors": {},
                "goal": "<= 0.333 (1/3 of random search's epochs)",
                "met": frac is not None and frac <= 1 / 3,
            },
            {
                "key": "utilization",
                "label": "ASHA worker utilization with real Keras training (digits, 2 workers)",
                "darch": keras_util,
                "unit": "busy/(workers x wall)",
                "higher_is_better": True,
                "anchors": {},
                "goal": f">= {GOAL_UTILIZATION}",
                "met": keras_util >= GOAL_UTILIZATION,
            },
        ]
    result["figures"] = figures
    result["tool_versions"] = tool_versions()
    result["code"] = code_version()
    result["load_average_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result["duration_s"] = round(time.perf_counter() - started, 1)
    return report("multifidelity-quick" if args.quick else "multifidelity", result)


if __name__ == "__main__":
    main()
