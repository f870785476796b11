"""Searches end to end on a real SLURM: the ``test-slurm`` profile on the cluster of ``tools/slurm.sh start``.

What they show (issue 5):

1. trials that need ``{"GPU": 1}`` run one at a time on each job's GPU, every row names its SLURM job
   and GPU, and both jobs are used;
2. ``scancel`` of a job mid-trial loses nothing: the trial runs again elsewhere, counted as an attempt,
   not a failure, and the counts stay exact;
3. a job that SLURM kills at its walltime is the same as a ``scancel`` (slow);
4. the runner does not start a trial on a worker that will retire before the trial would end; it holds
   it for the replacement job.

Also two regressions of runner bugs found here, both fixed: a lost job does not run a trial that had
finished again, and a trial queued behind another is not sent to a worker that retires before it
could end (slow).

Skipped, with the reason, when ``sinfo`` is missing or the controller does not answer (the same check as
tests/test_slurm.py); with ``DARCH_REQUIRE_SLURM=1`` that is a failure instead. Each test builds its own
cluster and closes it. The workers import the evaluator from tests/slurm_evaluators.py: every job's
script puts this folder on ``PYTHONPATH``.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import dask.config
import pytest
from distributed import Client
from slurm_evaluators import GPUSleeper
from test_slurm import _job_logs, _slurm_problem

from toolkit.cluster import make_cluster
from toolkit.experiment import Experiment
from toolkit.journal import read_events
from toolkit.spaces import mlp

pytestmark = pytest.mark.slurm

TESTS = Path(__file__).resolve().parent
WAIT_S = 180  # jobs start in 2-4 s on an idle test SLURM; other sessions' jobs may hold its 4 GPUs


@pytest.fixture(scope="module", autouse=True)
def _slurm_is_up():
    problem = _slurm_problem()
    if problem and os.environ.get("DARCH_REQUIRE_SLURM"):
        pytest.fail(f"DARCH_REQUIRE_SLURM is set but {problem}")
    if problem:
        pytest.skip(problem)


@pytest.fixture
def fast_replacement():
    """Forget a lost job after 3 s instead of 15 s, so that adapt() replaces it sooner."""
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "3s"}):
        yield


# --- helpers ----------------------------------------------------------------------------------------


def _cluster(tmp_path: Path, jobs: int, **overrides: Any):
    """A test-slurm cluster of ``jobs`` jobs whose workers can import tests/slurm_evaluators.py."""
    settings = {
        "shared_temp_directory": str(tmp_path / "tls"),
        "log_directory": str(tmp_path / "jobs"),
        "scheduler_options": {"dashboard_address": ":0"},
        "job_script_prologue": [f"export PYTHONPATH={TESTS}${{PYTHONPATH:+:$PYTHONPATH}}"],
        **overrides,
    }
    return make_cluster("test-slurm", jobs=jobs, **settings), tmp_path / "jobs"


def _wait_for_workers(client: Client, n: int, logs: Path) -> None:
    try:
        client.wait_for_workers(n, timeout=WAIT_S)
    except TimeoutError as exc:
        raise AssertionError(f"{n} workers did not connect in {WAIT_S}s\n{_job_logs(logs)}") from exc


def _experiment(tmp_path: Path, name: str, sleep: float, **kwargs: Any) -> Experiment:
    return Experiment(name, mlp, GPUSleeper(sleep=sleep), log_dir=tmp_path / "logs", seed=5, **kwargs)


def _finish(exp: Experiment, within: float, logs: Path):
    """Wait for a search started with ``exp.start``; fail with the jobs' logs if it overruns."""
    try:
        return exp.wait(timeout=within)
    except TimeoutError as exc:
        exp.stop(wait=False)
        counts = collections.Counter(e["event"] for e in read_events(exp.journal.file))
        raise AssertionError(
            f"the search did not end in {within:.0f}s; events {dict(counts)}\n{_job_logs(logs)}"
        ) from exc


def _events(exp: Experiment, *kinds: str) -> list[dict[str, Any]]:
    return read_events(exp.journal.file, kinds)


def _assert_exact(exp: Experiment, df, n: int) -> None:
    """``n`` trials, each finished exactly once, none failed, none started that has no row."""
    assert len(df) == n and df["trial_id"].is_unique, df
    assert sorted(df["trial_id"]) == list(range(n))
    assert (df["status"] == "finished").all(), df[["trial_id", "status", "error", "attempts"]]
    finished = collections.Counter(e["trial"] for e in _events(exp, "finished"))
    assert finished == dict.fromkeys(range(n), 1), f"finished events per trial: {finished}"
    assert _events(exp, "failed") == []
    assert {e["trial"] for e in _events(exp, "started")} == set(range(n))


def _gpu_index(job_id: str) -> tuple[str, str]:
    """The node and physical GPU index that SLURM gave a running job (``scontrol show job -d``)."""
    out = subprocess.run(
        ["scontrol", "show", "job", "-d", str(job_id)], capture_output=True, text=True, timeout=30
    ).stdout
    match = re.search(r"Nodes=(\S+) .*GRES=\S*\(IDX:([\d,-]+)\)", out)
    assert match, f"no GPU index for job {job_id} in:\n{out}"
    return match.group(1), match.group(2)


def _wait_for_start(exp: Experiment, within: float, logs: Path) -> dict[str, Any]:
    """The first 'started' event in the journal, once there is one."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        started = _events(exp, "started")
        if started:
            return started[0]
        time.sleep(0.2)
    raise AssertionError(f"no trial started in {within:.0f}s\n{_job_logs(logs)}")


# --- 1. GPU trials on two jobs ------------------------------------------------------------------


def test_a_search_on_two_gpu_jobs_runs_one_trial_per_gpu_at_a_time(tmp_path):
    n = 8
    cluster, logs = _cluster(tmp_path, jobs=2)
    try:
        with Client(cluster) as client:
            _wait_for_workers(client, 2, logs)
            jobs = {job.job_id for job in cluster.workers.values()}
            assert len(jobs) == 2
            gpu_of = {job: _gpu_index(job) for job in jobs}
            assert len(set(gpu_of.values())) == 2, gpu_of  # SLURM gave the two jobs different GPUs
            assert all(w["resources"] == {"GPU": 1} for w in client.scheduler_info()["workers"].values())

            exp = _experiment(tmp_path, "two-gpus", sleep=2.0)
            df = exp.run(client, n_trials=n, timeout=WAIT_S, progress=False)
    finally:
        cluster.close()

    _assert_exact(exp, df, n)
    assert (df["attempts"] == 1).all(), df[["trial_id", "attempts", "slurm_job_id"]]
    # Every row says where it ran: a SLURM job of this cluster, its GPU, and the worker's host.
    assert df["slurm_job_id"].notna().all() and df["gpu"].notna().all() and df["host"].notna().all(), df
    assert set(df["slurm_job_id"]) == jobs  # both jobs were used, and no other
    # The test SLURM does not confine devices (TaskPlugin=task/none), so CUDA_VISIBLE_DEVICES is the
    # GPU's index on the node, as scontrol reports it; a site with cgroups would number it from 0.
    assert {(j, g) for j, g in zip(df["slurm_job_id"], df["gpu"])} == {(j, gpu_of[j][1]) for j in jobs}

    # One trial at a time on each physical GPU: the runs on one GPU never intersect.
    runs = collections.defaultdict(list)
    for ev in _events(exp, "finished"):
        start = ev["start"]
        assert start["slurm_job_id"] in jobs and start["cuda_visible_devices"], start
        assert ev["duration_s"] >= 2.0
        node = gpu_of[start["slurm_job_id"]][0]
        runs[(node, start["cuda_visible_devices"])].append(
            (start["t"], start["t"] + ev["duration_s"], ev["trial"])
        )
    assert len(runs) == 2 and sum(map(len, runs.values())) == n
    for gpu, spans in runs.items():
        spans.sort()
        for (_, end, a), (begin, _, b) in zip(spans, spans[1:]):
            assert begin >= end, f"trials {a} and {b} overlap on GPU {gpu}: {spans}"


# --- 2. scancel mid-trial ----------------------------------------------------------------------


def test_scancel_mid_trial_reruns_the_trial_and_loses_nothing(tmp_path, fast_replacement):
    n, sleep = 10, 6.0
    cluster, logs = _cluster(tmp_path, jobs=2)  # replace_jobs: adapt(minimum_jobs=2, maximum_jobs=2)
    try:
        with Client(cluster) as client:
            _wait_for_workers(client, 2, logs)
            before = {job.job_id for job in cluster.workers.values()}
            exp = _experiment(tmp_path, "scancel", sleep=sleep)
            exp.start(client, n_trials=n, progress=False)
            try:
                victim = _wait_for_start(exp, WAIT_S, logs)
                victim_trial, victim_job = victim["trial"], victim["slurm_job_id"]
                assert victim_job in before
                subprocess.run(["scancel", victim_job], check=True, timeout=30)
                cancelled_t = time.time()
                df = _finish(exp, 2 * WAIT_S, logs)
            finally:
                exp.stop()
            after = {job.job_id for job in cluster.workers.values()}
    finally:
        cluster.close()

    _assert_exact(exp, df, n)
    row = df.set_index("trial_id").loc[victim_trial]
    # It was cut short and run again: two starts, one attempt lost, not a failure.
    assert row["status"] == "finished" and row["attempts"] == 2, row
    starts = [e for e in _events(exp, "started") if e["trial"] == victim_trial]
    assert len(starts) == 2 and starts[0]["slurm_job_id"] == victim_job, starts
    assert starts[1]["slurm_job_id"] != victim_job and starts[1]["t"] > cancelled_t - 1, starts
    assert row["slurm_job_id"] != victim_job
    # The other trials ran once each.
    assert (df.loc[df["trial_id"] != victim_trial, "attempts"] == 1).all(), df[["trial_id", "attempts"]]
    # adapt() replaced the cancelled job, and the replacement ran trials of this search.
    assert victim_job not in after and len(after) == 2, (before, after)
    replacements = set(df["slurm_job_id"]) - before
    assert replacements and replacements <= after, (before, after, set(df["slurm_job_id"]))
    late = df[df["slurm_job_id"] == victim_job]
    assert late.empty or (late["trial_id"] != victim_trial).all()


# --- 3. SLURM's walltime kill ------------------------------------------------------------------


@pytest.mark.slow
def test_a_job_killed_at_its_walltime_loses_nothing(tmp_path, fast_replacement):
    # One job of 1 minute; SLURM kills it 60-90 s after its start (it checks limits every 30 s).
    # lifetime=False: no --lifetime, so the worker does not retire first (auto would retire it after
    # about 42 s, and the runner would drain it). worker_setup=False: the worker publishes no deadline,
    # so the runner cannot hold trials back either, as when a trial runs longer than expected.
    # Trials of 15 s back to back always straddle the kill.
    n, sleep = 6, 15.0
    cluster, logs = _cluster(tmp_path, jobs=1, walltime="00:01:00", lifetime=False, worker_setup=False)
    try:
        assert "--lifetime" not in cluster.job_script() and "-t 00:01:00" in cluster.job_script()
        with Client(cluster) as client:
            _wait_for_workers(client, 1, logs)
            (first_job,) = {job.job_id for job in cluster.workers.values()}
            exp = _experiment(tmp_path, "walltime", sleep=sleep)
            df = exp.run(client, n_trials=n, timeout=300, progress=False)
    finally:
        cluster.close()

    # SLURM, not darch, ended the first job: its log says so (scontrol would say JobState=TIMEOUT).
    (err,) = logs.glob(f"*-{first_job}.err")
    assert "DUE TO TIME LIMIT" in err.read_text(), err.read_text()[-3000:]
    _assert_exact(exp, df, n)
    relaunched = df[df["attempts"] > 1]
    assert len(relaunched) >= 1, df[["trial_id", "attempts", "slurm_job_id"]]
    assert (df["attempts"] <= 2).all(), df[["trial_id", "attempts", "slurm_job_id"]]
    # A trial cut short by the kill started on the first job and finished on a replacement job.
    first_start = {}
    for ev in _events(exp, "started"):
        first_start.setdefault(ev["trial"], ev["slurm_job_id"])
    moved = {
        ev["trial"]: (first_start[ev["trial"]], ev["start"]["slurm_job_id"])
        for ev in _events(exp, "finished")
        if ev["attempts"] > 1
    }
    assert set(moved) == set(relaunched["trial_id"]), moved
    assert all(begun != ended for begun, ended in moved.values()), moved
    assert any(begun == first_job for begun, _ in moved.values()), (first_job, moved)
    assert {e["trial"] for e in _events(exp, "lost")} <= set(moved)


# --- 4. walltime awareness ---------------------------------------------------------------------


def test_a_trial_is_held_rather_than_started_on_a_worker_about_to_retire(tmp_path, fast_replacement, caplog):
    # One job of 1 minute with the automatic lifetime: its worker retires after 42 +- 3 s and publishes
    # that deadline. Trials of 12 s, one at a time: two fit, a third would not (the runner wants
    # 1.2 x 12 + 5 s left), so it must be held until adapt() has replaced the retired job.
    n, sleep = 4, 12.0
    cluster, logs = _cluster(tmp_path, jobs=1, walltime="00:01:00")
    caplog.set_level(logging.WARNING, logger="toolkit.runner")
    try:
        assert "--lifetime 42s" in cluster.job_script()
        with Client(cluster) as client:
            _wait_for_workers(client, 1, logs)
            (first_job,) = {job.job_id for job in cluster.workers.values()}
            metrics = [w["metrics"] for w in client.scheduler_info()["workers"].values()]
            assert all(time.time() < m["darch_deadline"] < time.time() + 60 for m in metrics), metrics
            exp = _experiment(tmp_path, "deadline", sleep=sleep)
            df = exp.run(client, n_trials=n, max_concurrent=1, timeout=300, progress=False)
    finally:
        cluster.close()

    _assert_exact(exp, df, n)
    # Nothing was lost: no trial was started on a worker that retired under it.
    assert (df["attempts"] == 1).all() and _events(exp, "lost") == [], df[["trial_id", "attempts"]]
    assert df["worker_deadline"].notna().all()
    # Where each result came from: the finished events' own start.
    runs = [
        (ev["start"]["slurm_job_id"], ev["start"]["t"] + ev["duration_s"], ev["result"]["worker_deadline"])
        for ev in _events(exp, "finished")
    ]
    assert all(end <= deadline for _, end, deadline in runs), runs
    # The first job ran what fitted; the rest waited for its replacement.
    assert any("no worker has enough lifetime left" in r.getMessage() for r in caplog.records)
    on_first = [(end, deadline) for job, end, deadline in runs if job == first_job]
    assert on_first and len({job for job, _, _ in runs}) >= 2, runs
    last_end = max(end for end, _ in on_first)
    deadline = on_first[0][1]
    assert deadline - last_end < 1.2 * sleep + 5 + 2, (deadline, last_end)  # no room for one more


# --- lost jobs and finished trials -------------------------------------------------------------


def test_a_lost_job_does_not_run_a_finished_trial_again(tmp_path, fast_replacement):
    # Regression (found by this file, fixed in 8b16c5c): the runner held the last completed future
    # while it waited for the next, so its result stayed wanted on the worker; when that job was
    # lost, Dask ran the finished trial again and results() showed the re-run's job.
    n, sleep = 2, 8.0
    cluster, logs = _cluster(tmp_path, jobs=1)
    try:
        with Client(cluster) as client:
            _wait_for_workers(client, 1, logs)
            (victim,) = {job.job_id for job in cluster.workers.values()}
            exp = _experiment(tmp_path, "rerun", sleep=sleep)
            exp.start(client, n_trials=n, progress=False)
            try:
                deadline = time.monotonic() + WAIT_S
                while time.monotonic() < deadline:  # trial 0 finished, trial 1 running: cancel the job
                    seen = {(e["event"], e["trial"]) for e in _events(exp, "started", "finished")}
                    if {("finished", 0), ("started", 1)} <= seen:
                        break
                    time.sleep(0.2)
                else:
                    raise AssertionError(f"trials 0 and 1 did not run in {WAIT_S}s\n{_job_logs(logs)}")
                subprocess.run(["scancel", victim], check=True, timeout=30)
                df = _finish(exp, 2 * WAIT_S, logs)
            finally:
                exp.stop()
    finally:
        cluster.close()

    _assert_exact(exp, df, n)
    assert df.set_index("trial_id").loc[1, "attempts"] == 2
    starts_of_0 = [e["slurm_job_id"] for e in _events(exp, "started") if e["trial"] == 0]
    assert starts_of_0 == [victim], f"finished trial 0 was started again: on jobs {starts_of_0}"
    assert df.set_index("trial_id").loc[0, "slurm_job_id"] == victim


@pytest.mark.slow
def test_a_trial_queued_behind_another_is_not_sent_to_a_worker_about_to_retire(tmp_path, fast_replacement):
    # One job whose worker retires after 80 +- 1 s. Two trials go out at once (the default capacity is
    # twice the slots); when the first ends at S, the runner checks for 1.2 S + 5 s left and sends a
    # third, which waits for the second and so runs from 2S to 3S. S is chosen in the middle of the
    # window where that check passes but 3S overruns the deadline.
    n = 3
    cluster, logs = _cluster(tmp_path, jobs=1, walltime="00:02:00", lifetime="80s", lifetime_stagger="1s")
    try:
        with Client(cluster) as client:
            _wait_for_workers(client, 1, logs)
            (worker,) = client.scheduler_info()["workers"].values()
            left = worker["metrics"]["darch_deadline"] - time.time()
            low, high = left / 3, (left - 5) / 2.2  # 3S > left and left - S > 1.2 S + 5
            assert high - low > 4, f"only {left:.0f}s of lifetime left; no room to choose the trial length"
            sleep = round((low + high) / 2, 1)
            exp = _experiment(tmp_path, "queued", sleep=sleep)
            df = exp.run(client, n_trials=n, timeout=400, progress=False)
    finally:
        cluster.close()

    _assert_exact(exp, df, n)
    runs = [
        (ev["trial"], ev["start"]["t"] + ev["duration_s"], ev["result"]["worker_deadline"])
        for ev in _events(exp, "finished")
    ]
    assert all(end <= deadline for _, end, deadline in runs), runs
    assert _events(exp, "lost") == [] and (df["attempts"] == 1).all(), df[["trial_id", "attempts"]]
