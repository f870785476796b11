"""Soak: 2,000 synthetic trials on a LocalCluster while its workers are killed with SIGKILL.

A thread picks a worker process at random every few seconds (``client.run(os.getpid)``) and kills it
with ``SIGKILL``; the nanny starts a new one. The search must still end with

* exactly ``--trials`` finished trials, each finished once (no duplicate or lost trial);
* a results table (``load_results(path).frame()``) that is the same when read twice and that agrees,
  trial by trial, with the state rebuilt by replaying the journal (``toolkit.history.fold``).

Usage::

    python bench/soak.py [--quick] [--trials 2000] [--workers 3] [--kill-every 3.0] [--sleep 0.02]

Writes ``bench/results/soak.json`` (trials, kills, lost attempts, duration, max attempts, ok flags);
the last printed line is one JSON object. Exit code 0 when every check holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import report  # noqa: E402

logger = logging.getLogger("bench.soak")


class Killer(threading.Thread):
    """Kills a random worker process of ``client`` with SIGKILL every ``every`` seconds (jittered)."""

    def __init__(self, client: Any, every: float, seed: int):
        super().__init__(name="soak-killer", daemon=True)
        self.client = client
        self.every = every
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.kills: list[dict[str, Any]] = []
        self.misses = 0

    def _descendants(self, min_age: float = 3.0) -> set[int]:
        """This process's children that have run for ``min_age`` s (a worker still starting is spared:
        killing it then tests the nanny's start-up, not darch)."""
        import psutil

        now = time.time()
        out = set()
        for proc in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if now - proc.create_time() >= min_age:
                    out.add(proc.pid)
        return out

    def run(self) -> None:
        while not self.stop.wait(self.every * self.rng.uniform(0.5, 1.5)):
            try:
                pids = self.client.run(os.getpid, on_error="ignore")
            except Exception as exc:  # noqa: BLE001 - a worker may be restarting; try again later
                logger.debug("client.run failed: %r", exc)
                self.misses += 1
                continue
            # Only ever kill a worker process of this bench (a child of this process).
            candidates = sorted(set(pids.values()) & self._descendants())
            if not candidates:
                self.misses += 1
                continue
            pid = self.rng.choice(candidates)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                self.misses += 1
                continue
            self.kills.append({"t": time.time(), "pid": pid})
            logger.info("killed worker pid %d (%d kills)", pid, len(self.kills))


def _compare(df: Any, trials: dict[int, Any], objective: str) -> list[str]:
    """Differences between the results table and the journal's replay (empty when they agree)."""
    if sorted(trials) != df["trial_id"].tolist():
        return [f"trial ids differ: the table has {len(df)} rows, the replay {len(trials)} trials"]
    problems: list[str] = []
    frame = df.set_index("trial_id")
    for tid, rec in trials.items():
        row = frame.loc[tid]
        if str(row["status"]) != rec.status.value:
            problems.append(f"trial {tid}: status {row['status']} vs replay {rec.status.value}")
        value = row[objective]
        if rec.value is None and not math.isnan(value) or rec.value is not None and value != rec.value:
            problems.append(f"trial {tid}: {objective} {value} vs replay {rec.value}")
        if row["attempts"] != rec.attempts:
            problems.append(f"trial {tid}: attempts {row['attempts']} vs replay {rec.attempts}")
        for name, v in rec.config.items():
            if row[f"param_{name}"] != v:
                problems.append(f"trial {tid}: param_{name} {row[f'param_{name}']!r} vs replay {v!r}")
    return problems


def _reruns_after_finish(events: list[dict[str, Any]]) -> set[int]:
    """Trials that started again after their result was journaled (Dask re-ran a recorded trial)."""
    done: set[int] = set()
    reruns: set[int] = set()
    for e in events:
        kind, tid = e["event"], e.get("trial")
        if kind in ("finished", "failed"):
            done.add(tid)
        elif kind == "promoted":
            done.discard(tid)
        elif kind == "started" and tid in done:
            reruns.add(tid)
    return reruns


def soak(
    n_trials: int, workers: int, kill_every: float, sleep: float, seed: int, keep: bool
) -> dict[str, Any]:
    import pandas as pd
    from distributed import Client, LocalCluster

    from toolkit.evaluators.synthetic import SyntheticEvaluator
    from toolkit.experiment import Experiment
    from toolkit.history import fold
    from toolkit.journal import read_events
    from toolkit.results import load_results
    from toolkit.space import SearchSpace
    from toolkit.spaces import conv_net

    log_dir = Path(tempfile.mkdtemp(prefix="darch-soak-"))
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,  # every kill makes the nanny and scheduler warn; that is expected
        env={"OMP_NUM_THREADS": "1"},
    )
    client = Client(cluster)
    # max_attempts is raised so that bad luck (one trial on three killed workers in a row) does not
    # fail a trial: the soak checks that nothing is lost or counted twice, not the give-up rule.
    exp = Experiment(
        "soak",
        SearchSpace(conv_net),
        SyntheticEvaluator(epochs=3, sleep=sleep),
        log_dir=log_dir,
        seed=seed,
        max_attempts=20,
        worker_timeout=120,  # if the nannies ever stop restarting workers, end with NoWorkersError
    )
    killer = Killer(client, kill_every, seed)
    t0 = time.perf_counter()
    error = None
    try:
        exp.start(client, n_trials=n_trials, progress=False)
        killer.start()
        exp.wait(timeout=max(600.0, 0.5 * n_trials))
    except BaseException as exc:  # noqa: BLE001 - reported, not hidden
        error = f"{type(exc).__name__}: {exc}"
        if exp.running:
            exp.stop()
    finally:
        killer.stop.set()
        killer.join(timeout=30)
        duration = time.perf_counter() - t0
        client.close()
        cluster.close()

    events = read_events(exp.path)
    finished = collections.Counter(e["trial"] for e in events if e["event"] == "finished")
    failed = collections.Counter(e["trial"] for e in events if e["event"] == "failed")
    lost = [e for e in events if e["event"] == "lost"]
    started = collections.Counter(e["trial"] for e in events if e["event"] == "started")
    res = load_results(exp.path)
    df = res.frame()
    again = load_results(exp.path).frame()
    try:
        pd.testing.assert_frame_equal(df, again)
        same_twice = True
    except AssertionError:
        same_twice = False
    replay = fold(events, res.objective)
    problems = _compare(df, replay, res.objective.name)
    worker_pids = {e.get("pid") for e in events if e["event"] == "started"}
    reruns = _reruns_after_finish(events)

    checks = {
        "ok_no_error": error is None,
        "ok_exactly_n_finished": len(finished) == n_trials
        and int((df["status"] == "finished").sum()) == n_trials,
        "ok_no_duplicate_ids": df["trial_id"].is_unique and max(finished.values(), default=0) == 1,
        "ok_no_failed": not failed,
        "ok_no_rerun_after_finish": not reruns,
        "ok_results_same_twice": same_twice,
        "ok_results_match_replay": not problems,
        "ok_workers_were_killed": len(killer.kills) > 0,
    }
    result = {
        "what": "synthetic trials on a LocalCluster whose worker processes are SIGKILLed at random",
        "trials": n_trials,
        "workers": workers,
        "kill_every_s": kill_every,
        "sleep_s": sleep,
        "kills": len(killer.kills),
        "kill_misses": killer.misses,
        "worker_processes_seen": len(worker_pids),
        "lost_events": len(lost),
        "lost_attempts": int(sum(started.values()) - len(started)),
        "max_attempts": int(df["attempts"].max()) if len(df) else 0,
        "trials_with_more_than_one_attempt": int((df["attempts"] > 1).sum()),
        "finished": len(finished),
        "failed": len(failed),
        "duration_s": round(duration, 1),
        "ms_per_trial": round(1000 * duration / max(n_trials, 1), 2),
        "reruns_after_finish": len(reruns),
        "reruns_after_finish_trials": sorted(reruns)[:20],
        "replay_differences": problems[:10],
        "error": error,
        **checks,
        "ok": all(checks.values()),
    }
    if keep:
        result["journal"] = str(exp.path)
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=2000)
    p.add_argument("--workers", type=int, default=3, help="worker processes (2-4)")
    p.add_argument("--kill-every", type=float, default=3.0, help="mean seconds between kills")
    p.add_argument("--sleep", type=float, default=0.02, help="seconds each synthetic trial sleeps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="300 trials, a kill every second")
    p.add_argument("--keep", action="store_true", help="keep the journal folder (its path is reported)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    if args.quick:
        args.trials, args.kill_every = min(args.trials, 300), min(args.kill_every, 1.0)
    result = soak(args.trials, args.workers, args.kill_every, args.sleep, args.seed, args.keep)
    result["quick"] = args.quick
    report("soak" if not args.quick else "soak-quick", result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
