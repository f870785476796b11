"""Resuming a search: after the driver process is killed, from a damaged journal, and the refusals."""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from distributed import Client

from toolkit.errors import JournalError
from toolkit.evaluators.synthetic import SyntheticEvaluator
from toolkit.experiment import Experiment
from toolkit.journal import read_events
from toolkit.results import load_results
from toolkit.space import SearchSpace
from toolkit.spaces import conv_net, mlp

ROOT = Path(__file__).resolve().parents[1]

# The driver: a search on a LocalCluster of its own, in a process the test kills.
DRIVER = textwrap.dedent(
    """
    import sys

    from distributed import Client, LocalCluster

    from toolkit.evaluators.synthetic import SyntheticEvaluator
    from toolkit.experiment import Experiment
    from toolkit.spaces import conv_net

    if __name__ == "__main__":
        log_dir, n_trials, sleep = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
        cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
        )
        client = Client(cluster)
        exp = Experiment("driver", conv_net, SyntheticEvaluator(sleep=sleep), log_dir=log_dir)
        exp.run(client, n_trials=n_trials, progress=False)
    """
)


def _wait_for(predicate: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
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


def _finished(path: Path) -> list[dict[str, Any]]:
    return read_events(path, ["finished"])


def _exp(tmp_path: Path, evaluator: Any = None, **kw: Any) -> Experiment:
    return Experiment("exp", SearchSpace(conv_net), evaluator or SyntheticEvaluator(), log_dir=tmp_path, **kw)


# -- the driver killed --------------------------------------------------------------------------
def test_resume_after_the_driver_is_killed_runs_only_what_was_unfinished(
    client: Client, tmp_path: Path
) -> None:
    n = 16
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    path = tmp_path / "logs" / "driver"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "logs"), str(n), "0.4"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    children: list[psutil.Process] = []
    try:
        _wait_for(lambda: len(_finished(path)) >= 4 or proc.poll() is not None, "four finished trials")
        assert proc.poll() is None, "the driver ended before it could be killed"
        children = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _, alive = psutil.wait_procs(children, timeout=15)  # its workers follow their parent out
        for child in alive:  # processes this test started, by pid
            child.kill()

    before = read_events(path)
    done_before = {e["trial"] for e in before if e["event"] == "finished"}
    assert 4 <= len(done_before) < n
    assert orjson.loads((path / "lock").read_bytes())["pid"] == proc.pid  # the dead driver's lock

    exp = Experiment.resume(path, client, progress=False)

    df = exp.results()
    assert df["trial_id"].tolist() == list(range(n))
    assert df["trial_id"].is_unique
    assert (df["status"] == "finished").all()
    after = read_events(path)
    assert _by_trial(after, "finished") == {i: 1 for i in range(n)}
    assert _by_trial(after, "sampled") == {i: 1 for i in range(n)}
    started, submitted = _by_trial(after, "started"), _by_trial(after, "submitted")
    for tid in done_before:  # finished before the kill: never run again
        assert started[tid] == 1
        assert submitted[tid] == 1
    runs = [e for e in after if e["event"] == "run"]
    assert [r["resumed"] for r in runs] == [False, True]
    assert runs[1]["pid"] == os.getpid()
    assert not (path / "lock").exists()


# -- damaged journals -----------------------------------------------------------------------------
def test_truncated_last_journal_line_is_tolerated_by_results_and_resume(
    client: Client, tmp_path: Path
) -> None:
    exp = _exp(tmp_path)
    exp.run(client, n_trials=6, progress=False)
    journal = exp.path / "journal.jsonl"
    whole = journal.read_bytes()
    last = whole.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    with open(journal, "ab") as fh:  # a crash in the middle of an append
        fh.write(last[: len(last) // 2])

    df = load_results(exp.path).frame()
    assert df["trial_id"].tolist() == list(range(6))
    assert (df["status"] == "finished").all()

    again = Experiment.resume(exp.path, client, n_trials=9, progress=False)
    df = again.results()
    assert df["trial_id"].tolist() == list(range(9))
    assert (df["status"] == "finished").all()
    assert _by_trial(read_events(exp.path), "finished") == {i: 1 for i in range(9)}
    # the half line was ended, so every event after it is on a line of its own
    lines = journal.read_bytes()[len(whole) :].split(b"\n")
    assert lines[0] == last[: len(last) // 2]
    assert all(line.startswith(b'{"event":"') for line in lines[1:-1]) and lines[-1] == b""


def test_stale_lock_of_a_dead_driver_does_not_block_resume(client: Client, tmp_path: Path) -> None:
    exp = _exp(tmp_path)
    exp.run(client, n_trials=2, progress=False)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (exp.path / "lock").write_bytes(
        orjson.dumps({"host": socket.gethostname(), "pid": dead.pid, "token": "x"})
    )
    again = Experiment.resume(exp.path, client, n_trials=3, progress=False)
    assert again.results()["status"].tolist() == ["finished"] * 3
    assert not (exp.path / "lock").exists()


# -- refusals -------------------------------------------------------------------------------------
def test_resume_with_a_different_space_is_refused_naming_both_fingerprints(
    client: Client, tmp_path: Path
) -> None:
    exp = _exp(tmp_path)
    exp.run(client, n_trials=2, progress=False)
    size = (exp.path / "journal.jsonl").stat().st_size
    other = SearchSpace(mlp)
    with pytest.raises(JournalError) as info:
        Experiment.resume(exp.path, client, space=other, progress=False)
    msg = str(info.value)
    assert SearchSpace(conv_net).fingerprint in msg
    assert other.fingerprint in msg
    assert "different space" in msg
    assert (exp.path / "journal.jsonl").stat().st_size == size  # nothing was written
    assert not (exp.path / "lock").exists()


def test_run_on_a_folder_of_another_space_is_refused(client: Client, tmp_path: Path) -> None:
    _exp(tmp_path).run(client, n_trials=2, progress=False)
    with pytest.raises(JournalError, match="different space"):
        Experiment("exp", SearchSpace(mlp), SyntheticEvaluator(), log_dir=tmp_path).run(
            client, n_trials=2, progress=False
        )


def test_resume_of_a_folder_that_is_not_a_journal_is_refused(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "model.h5").write_bytes(b"\x89HDF")
    with pytest.raises(JournalError, match=r"not a darch journal: it has no experiment.json.*model\.h5"):
        Experiment.resume(tmp_path / "stuff", progress=False)
    with pytest.raises(JournalError, match="is not a folder"):
        Experiment.resume(tmp_path / "missing", progress=False)
