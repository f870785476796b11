"""The search engine end to end on a real LocalCluster: counts, failures, lost workers, stop, timeouts,
concurrency and multi-fidelity promotion. Trials come from the SyntheticEvaluator (no TensorFlow).
"""

from __future__ import annotations

import collections
import math
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from distributed import Client, LocalCluster

from toolkit.errors import JournalLockedError
from toolkit.evaluators.synthetic import SyntheticEvaluator
from toolkit.experiment import Experiment
from toolkit.journal import read_events
from toolkit.schedulers import ASHA
from toolkit.space import SearchSpace
from toolkit.spaces import conv_net


# -- evaluators (module level, so that workers can unpickle them) ---------------------------------
def _trial_id(trial_dir: str | None) -> int:
    return int(Path(trial_dir or "-1").name)


class ReturnsList:
    """Returns a list instead of a result dict."""

    def __call__(self, arch: Any, *, config: dict, trial_dir: str | None = None, **kw: Any) -> Any:
        return [0.9, 0.1]


class ReturnsNaN:
    """Reports a NaN objective."""

    def __call__(self, arch: Any, *, config: dict, trial_dir: str | None = None, **kw: Any) -> Any:
        return {"val_accuracy": math.nan, "epochs": 1}


class SlowTrials:
    """Sleeps ``seconds`` on the trials in ``slow`` and returns at once on the others."""

    def __init__(self, slow: tuple[int, ...] = (), seconds: float = 0.0):
        self.slow = slow
        self.seconds = seconds

    def __call__(self, arch: Any, *, config: dict, trial_dir: str | None = None, **kw: Any) -> dict:
        if _trial_id(trial_dir) in self.slow:
            time.sleep(self.seconds)
        return {"val_accuracy": 0.5, "epochs": 1}


class CountsEpochs(SyntheticEvaluator):
    """A SyntheticEvaluator that also reports which epochs this call trained."""

    def __call__(self, arch: Any, **kw: Any) -> dict[str, Any]:
        out = super().__call__(arch, **kw)
        ran = out["history"]["epoch"]
        out["first_epoch_run"] = ran[0] if ran else None
        out["epochs_run"] = len(ran)
        return out


# -- helpers --------------------------------------------------------------------------------------
def _exp(tmp_path: Path, evaluator: Any = None, name: str = "exp", **kw: Any) -> Experiment:
    return Experiment(
        name,
        SearchSpace(conv_net),
        evaluator if evaluator is not None else SyntheticEvaluator(),
        log_dir=tmp_path,
        **kw,
    )


def _wait_for(predicate: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll ``predicate`` until it returns something truthy (a guard against hangs, not a timing check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up after {timeout} s waiting for {what}")


def _by_trial(events: list[dict[str, Any]], kind: str) -> collections.Counter[int]:
    return collections.Counter(e["trial"] for e in events if e["event"] == kind)


# -- counts ---------------------------------------------------------------------------------------
def test_n_trials_give_exactly_n_finished_rows(client: Client, tmp_path: Path) -> None:
    n = 20
    df = _exp(tmp_path).run(client, n_trials=n, progress=False)
    assert len(df) == n
    assert df["trial_id"].tolist() == list(range(n))
    assert df["trial_id"].is_unique
    assert (df["status"] == "finished").all()
    assert df["val_accuracy"].notna().all()
    assert (df["attempts"] == 1).all()
    events = read_events(tmp_path / "exp")
    assert _by_trial(events, "finished") == {i: 1 for i in range(n)}
    assert _by_trial(events, "sampled") == {i: 1 for i in range(n)}


def test_engine_writes_every_journal_line_with_its_event_kind_first(client: Client, tmp_path: Path) -> None:
    exp = _exp(tmp_path, SyntheticEvaluator(fail_on={"conv_blocks": 2}))
    exp.run(client, n_trials=6, progress=False)
    lines = (exp.path / "journal.jsonl").read_bytes().splitlines()
    assert lines
    assert all(line.startswith(b'{"event":"') for line in lines)


def test_rerun_of_a_finished_search_adds_no_trials(client: Client, tmp_path: Path) -> None:
    exp = _exp(tmp_path)
    exp.run(client, n_trials=4, progress=False)
    again = _exp(tmp_path).run(client, n_trials=4, progress=False)
    assert again["trial_id"].tolist() == [0, 1, 2, 3]
    assert len(read_events(exp.path, ["submitted"])) == 4


# -- failures inside the evaluator ----------------------------------------------------------------
def test_evaluator_exception_fails_its_trial_with_error_and_traceback(client: Client, tmp_path: Path) -> None:
    n = 12
    exp = _exp(tmp_path, SyntheticEvaluator(fail_on={"conv_blocks": 2}))
    df = exp.run(client, n_trials=n, progress=False)
    assert len(df) == n and df["status"].isin(["finished", "failed"]).all()
    failed = df[df["status"] == "failed"]
    assert len(failed) > 0 and len(failed) < n  # the seed gives both kinds
    assert (failed["param_conv_blocks"] == 2).all()
    assert (df.loc[df["status"] == "finished", "param_conv_blocks"] != 2).all()
    assert (failed["error"] == "ValueError: synthetic failure: conv_blocks=2").all()
    assert df.loc[df["status"] == "finished", "error"].isna().all()
    assert failed["val_accuracy"].isna().all()
    events = read_events(exp.path, ["failed"])
    assert sorted(e["trial"] for e in events) == sorted(failed["trial_id"])
    for e in events:
        assert e["traceback"].startswith("Traceback (most recent call last)")
        assert "ValueError: synthetic failure" in e["traceback"]
        assert "synthetic.py" in e["traceback"]
        assert e["attempts"] == 1


def test_evaluator_returning_a_non_dict_fails_the_trial_with_a_clear_message(
    client: Client, tmp_path: Path
) -> None:
    df = _exp(tmp_path, ReturnsList()).run(client, n_trials=2, progress=False)
    assert (df["status"] == "failed").all()
    for err in df["error"]:
        assert err.startswith("TrialError: the evaluator returned list [0.9, 0.1], not a dict")
        assert "Return a dict such as {'val_accuracy'" in err


def test_evaluator_reporting_a_nan_objective_fails_the_trial(client: Client, tmp_path: Path) -> None:
    df = _exp(tmp_path, ReturnsNaN()).run(client, n_trials=2, progress=False)
    assert (df["status"] == "failed").all()
    for err in df["error"]:
        assert err.startswith("TrialError: objective 'val_accuracy' is nan, not a finite number")


# -- lost workers ---------------------------------------------------------------------------------
def test_worker_killed_mid_trial_reruns_that_trial_once(fresh_cluster: LocalCluster, tmp_path: Path) -> None:
    n = 3
    with Client(fresh_cluster) as client:
        worker_pids = set(client.run(os.getpid).values())
        exp = _exp(tmp_path, SyntheticEvaluator(sleep=2.0))
        exp.start(client, n_trials=n, progress=False)
        try:
            first = _wait_for(lambda: read_events(exp.path, ["started"]), "a trial to start")[0]
            assert first["pid"] in worker_pids  # never kill anything but a worker
            os.kill(first["pid"], signal.SIGKILL)
            df = exp.wait(timeout=120)
        finally:
            if exp.running:
                exp.stop()
    victim = first["trial"]
    assert len(df) == n and (df["status"] == "finished").all()
    assert df["trial_id"].tolist() == list(range(n))
    attempts = dict(zip(df["trial_id"], df["attempts"]))
    assert attempts[victim] == 2
    assert all(a == 1 for t, a in attempts.items() if t != victim)
    events = read_events(exp.path)
    assert _by_trial(events, "finished") == {i: 1 for i in range(n)}
    assert _by_trial(events, "started")[victim] == 2
    assert len({e["token"] for e in events if e["event"] == "started" and e["trial"] == victim}) == 2
    rerun = [e for e in events if e["event"] == "started" and e["trial"] == victim][1]
    assert rerun["pid"] != first["pid"]


# -- stop -----------------------------------------------------------------------------------------
def test_stop_records_trials_in_flight_as_stopped_and_resume_reruns_them(
    client: Client, tmp_path: Path
) -> None:
    n = 4
    exp = _exp(tmp_path, SyntheticEvaluator(sleep=1.0))
    exp.start(client, n_trials=n, progress=False)
    _wait_for(lambda: len(read_events(exp.path, ["started"])) >= 2, "two trials to start")
    exp.stop()
    assert not exp.running
    df = exp.results()
    stopped = df.loc[df["status"] == "stopped", "trial_id"].tolist()
    assert stopped  # they were in flight
    assert not (df["status"] == "failed").any()
    events = read_events(exp.path)
    assert not [e for e in events if e["event"] == "failed"]
    assert sorted(e["trial"] for e in events if e["event"] == "stopped") == sorted(stopped)
    assert {e["reason"] for e in events if e["event"] == "stopped"} == {"stop"}

    resumed = Experiment.resume(exp.path, client, progress=False)
    df = resumed.results()
    assert df["trial_id"].tolist() == list(range(n))
    assert (df["status"] == "finished").all()
    events = read_events(exp.path)
    assert _by_trial(events, "finished") == {i: 1 for i in range(n)}
    submitted = _by_trial(events, "submitted")
    assert all(submitted[t] == 2 for t in stopped)


# -- timeouts -------------------------------------------------------------------------------------
def test_trial_over_trial_timeout_fails_with_trial_timeout_and_search_goes_on(
    client: Client, tmp_path: Path
) -> None:
    n = 6
    exp = _exp(tmp_path, SlowTrials(slow=(1,), seconds=4.0), trial_timeout=1.0)
    df = exp.run(client, n_trials=n, progress=False)
    assert len(df) == n
    status = dict(zip(df["trial_id"], df["status"]))
    assert status.pop(1) == "failed"
    assert set(status.values()) == {"finished"}
    err = df.loc[df["trial_id"] == 1, "error"].item()
    assert err.startswith("TrialTimeout:") and "trial_timeout=1.0" in err


# -- concurrency ----------------------------------------------------------------------------------
def _peak(intervals: list[tuple[float, float]]) -> int:
    marks = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    level = peak = 0
    for _, step in marks:  # at equal times an end (-1) sorts before a start (+1)
        level += step
        peak = max(peak, level)
    return peak


def _running_on_workers(events: list[dict[str, Any]]) -> int:
    """Most trials executing at once, from the worker-side start time and duration of each."""
    ends = [e for e in events if e["event"] in ("finished", "failed")]
    return _peak([(e["start"]["t"], e["start"]["t"] + e["duration_s"]) for e in ends])


def _in_flight_on_driver(events: list[dict[str, Any]]) -> int:
    """Most trials submitted and not yet ended, in journal order."""
    level = peak = 0
    for e in events:
        if e["event"] == "submitted":
            level += 1
        elif e["event"] in ("finished", "failed", "lost", "stopped"):
            level -= 1
        peak = max(peak, level)
    return peak


def test_max_concurrent_caps_the_trials_in_flight(client: Client, tmp_path: Path) -> None:
    exp = _exp(tmp_path, SyntheticEvaluator(sleep=0.2))
    exp.run(client, n_trials=6, max_concurrent=1, progress=False)
    events = read_events(exp.path)
    assert len([e for e in events if e["event"] == "finished"]) == 6
    assert _in_flight_on_driver(events) == 1
    assert _running_on_workers(events) == 1


def test_without_max_concurrent_every_worker_is_kept_busy(client: Client, tmp_path: Path) -> None:
    exp = _exp(tmp_path, SyntheticEvaluator(sleep=0.3))
    exp.run(client, n_trials=6, progress=False)
    assert _running_on_workers(read_events(exp.path)) == 2  # the cluster's two single-threaded workers


# -- the lock -------------------------------------------------------------------------------------
def test_second_live_search_on_the_same_folder_is_refused(client: Client, tmp_path: Path) -> None:
    first = _exp(tmp_path, SyntheticEvaluator(sleep=0.5))
    first.start(client, n_trials=4, progress=False)
    try:
        with pytest.raises(JournalLockedError, match=rf"pid {os.getpid()} on host"):
            _exp(tmp_path, SyntheticEvaluator(sleep=0.5)).run(client, n_trials=4, progress=False)
        with pytest.raises(JournalLockedError):
            Experiment.resume(first.path, client, progress=False)
    finally:
        df = first.wait(timeout=120)
    assert (df["status"] == "finished").all() and len(df) == 4
    assert not (first.path / "lock").exists()
    # once released, the folder can be continued
    more = _exp(tmp_path).run(client, n_trials=6, progress=False)
    assert more["trial_id"].tolist() == list(range(6))


# -- multi-fidelity -------------------------------------------------------------------------------
def test_asha_promotes_trials_that_continue_their_curve_without_retraining(
    client: Client, tmp_path: Path
) -> None:
    n = 12
    exp = _exp(tmp_path, CountsEpochs(epochs=9), scheduler=ASHA(min_budget=1, max_budget=9, eta=3))
    df = exp.run(client, n_trials=n, progress=False)
    assert df["trial_id"].tolist() == list(range(n))
    assert (df["status"] == "finished").all()
    for col in ("budget", "rung", "val_accuracy_rung0", "val_accuracy_rung1"):
        assert col in df.columns
    assert df["budget"].tolist() == [{0: 1.0, 1: 3.0, 2: 9.0}[r] for r in df["rung"]]
    assert df["epochs"].tolist() == [int(b) for b in df["budget"]]
    promoted = df[df["rung"] >= 1]
    assert len(promoted) >= 1
    assert df["val_accuracy_rung0"].notna().all()

    curves = exp.curves()
    events = read_events(exp.path)
    for _, row in promoted.iterrows():
        tid, budget = int(row["trial_id"]), int(row["budget"])
        curve = curves["val_accuracy"].sel(trial=tid).to_numpy()
        assert np.isfinite(curve[:budget]).all() and np.isnan(curve[budget:]).all()
        assert (np.diff(curve[:budget]) > 0).all()  # the synthetic curve rises: one continuous run
        assert curve[0] == pytest.approx(row["val_accuracy_rung0"])
        assert curve[2] == pytest.approx(row["val_accuracy_rung1"])
        done = sorted(
            (e for e in events if e["event"] == "finished" and e["trial"] == tid), key=lambda e: e["rung"]
        )
        assert [e["rung"] for e in done] == list(range(int(row["rung"]) + 1))
        trained_up_to = 0
        for e in done:
            # each call trains only the epochs above the previous rung's budget
            assert e["result"]["first_epoch_run"] == trained_up_to + 1
            assert e["result"]["epochs_run"] == int(e["budget"]) - trained_up_to
            assert e["result"]["history"]["epoch"] == list(range(1, int(e["budget"]) + 1))
            trained_up_to = int(e["budget"])
        resumes = [e.get("resume") for e in events if e["event"] == "submitted" and e["trial"] == tid]
        assert resumes == [False] + [True] * int(row["rung"])
    rung0_only = df[df["rung"] == 0]
    for tid in rung0_only["trial_id"]:
        assert np.isnan(curves["val_accuracy"].sel(trial=tid).to_numpy()[1:]).all()
