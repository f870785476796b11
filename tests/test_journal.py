"""The journal on its own: events, atomic writes, the lock and the folder's permissions. No cluster."""

from __future__ import annotations

import logging
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from toolkit.errors import JournalError, JournalLockedError
from toolkit.journal import Journal, JournalLock, read_events, write_json_atomic


def _journal(tmp_path: Path) -> Journal:
    return Journal.create(tmp_path / "exp", {"name": "exp"})


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _events(n: int) -> list[dict]:
    return [
        {"event": "sampled", "t": float(i), "trial": i, "config": {"x": i, "y": f"v{i}"}} for i in range(n)
    ]


# -- events ---------------------------------------------------------------------------------
def test_appended_events_read_back_in_order(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    j.append(_events(3))
    j.append([{"event": "finished", "t": 9.0, "trial": 1, "value": 0.5, "result": {"val_accuracy": 0.5}}])
    j.close()
    events = read_events(j.path)
    assert [(e["event"], e["trial"]) for e in events] == [
        ("sampled", 0),
        ("sampled", 1),
        ("sampled", 2),
        ("finished", 1),
    ]
    assert events[1]["config"] == {"x": 1, "y": "v1"}
    assert events[3]["result"] == {"val_accuracy": 0.5}


def test_every_journal_line_starts_with_its_event_kind(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    j.append([{"trial": 0, "event": "sampled", "t": 1.0}])  # the key order given must not matter
    j.append([{"event": "started", "trial": 0, "t": 2.0, "token": "a"}])
    j.close()
    lines = j.file.read_bytes().splitlines()
    assert lines == [line for line in lines if line]
    assert [line[: len(b'{"event":"')] for line in lines] == [b'{"event":"'] * 2
    assert lines[0].startswith(b'{"event":"sampled"')
    assert lines[1].startswith(b'{"event":"started"')


def test_read_events_keeps_only_the_kinds_asked_for(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    j.append(_events(2) + [{"event": "started", "trial": 0, "t": 1.0, "token": "a"}])
    j.close()
    assert [e["event"] for e in read_events(j.file, ["started"])] == ["started"]
    assert len(j.events(["sampled"])) == 2


def test_read_events_of_a_missing_journal_is_empty(tmp_path: Path) -> None:
    assert read_events(tmp_path / "nothing" / "journal.jsonl") == []


def test_truncated_last_line_is_skipped_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    j = _journal(tmp_path)
    j.append(_events(3))
    j.close()
    with open(j.file, "ab") as fh:
        fh.write(b'{"event":"finished","t":3.0,"trial":2,"val')
    with caplog.at_level(logging.INFO, logger="toolkit.journal"):
        events = read_events(j.file)
    assert [e["trial"] for e in events] == [0, 1, 2]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("truncated" in r.getMessage() for r in caplog.records)


def test_corrupt_middle_line_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    j = _journal(tmp_path)
    j.append(_events(1))
    j.close()
    with open(j.file, "ab") as fh:
        fh.write(b'{"event":"sampled","trial":1,"conf\x00ig garbage\n')
    j.append(_events(3)[2:])
    j.close()
    with caplog.at_level(logging.WARNING, logger="toolkit.journal"):
        events = read_events(j.file)
    assert [e["trial"] for e in events] == [0, 2]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "corrupt line 2" in warnings[0].getMessage()


def test_append_after_a_truncated_line_starts_on_a_new_line(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    j.append(_events(1))
    j.close()
    with open(j.file, "ab") as fh:
        fh.write(b'{"event":"sampled","trial":1,')
    j2 = Journal(j.path)
    j2.append([{"event": "finished", "t": 5.0, "trial": 0, "value": 1.0}])
    j2.close()
    lines = j.file.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert lines[-2].startswith(b'{"event":"finished"')
    assert [e["event"] for e in read_events(j.file)] == ["sampled", "finished"]


# -- whole-file writes -------------------------------------------------------------------------
def test_atomic_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    write_json_atomic(j.path / "x.json", {"a": 1}, fsync=True)
    write_json_atomic(j.path / "x.json", {"a": 2})
    j.write_spec({"name": "exp", "n_trials": 3})
    for tid in range(5):
        j.write_trial_file(tid, "config.json", {"trial": tid}, background=True)
    j.write_trial_file(7, "result.json", {"trial": 7})
    j.close()  # waits for the background writer
    every = [p for p in j.path.rglob("*") if p.is_file()]
    assert not [p for p in every if p.name.endswith(".tmp") or p.name.startswith(".")]
    assert orjson.loads((j.path / "x.json").read_bytes()) == {"a": 2}
    assert j.spec()["n_trials"] == 3
    assert j.spec()["format"] == 1
    assert sorted(p.name for p in j.iter_trial_dirs()) == [
        "000000",
        "000001",
        "000002",
        "000003",
        "000004",
        "000007",
    ]
    assert orjson.loads((j.trial_dir(4) / "config.json").read_bytes()) == {"trial": 4}


# -- the folder -------------------------------------------------------------------------------
def test_journal_folders_are_private_0700(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    assert stat.S_IMODE(j.path.stat().st_mode) == 0o700
    assert stat.S_IMODE((j.path / "trials").stat().st_mode) == 0o700
    assert stat.S_IMODE(j.trial_dir(3, create=True).stat().st_mode) == 0o700
    assert stat.S_IMODE(j.file.stat().st_mode) == 0o600


def test_open_refuses_a_folder_that_is_not_a_journal(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(JournalError, match=r"not a darch journal.*notes\.txt"):
        Journal.open(tmp_path)
    with pytest.raises(JournalError, match="is not a folder"):
        Journal.open(tmp_path / "missing")


def test_damaged_spec_is_reported_not_crashed_on(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    (j.path / "experiment.json").write_text("{not json")
    with pytest.raises(JournalError, match="experiment.json is not valid JSON"):
        j.spec()


# -- the lock ---------------------------------------------------------------------------------
def test_lock_file_is_0600_and_names_its_holder(tmp_path: Path) -> None:
    lock = JournalLock(tmp_path)
    lock.acquire()
    try:
        assert stat.S_IMODE(lock.path.stat().st_mode) == 0o600
        holder = orjson.loads(lock.path.read_bytes())
        assert holder["pid"] == os.getpid()
        assert holder["host"] == socket.gethostname()
        assert holder["token"] == lock.token
    finally:
        lock.release()
    assert not lock.path.exists()


def test_second_lock_on_a_held_folder_is_refused_naming_the_holder(tmp_path: Path) -> None:
    with JournalLock(tmp_path), pytest.raises(JournalLockedError, match=rf"pid {os.getpid()} on host"):
        JournalLock(tmp_path).acquire()
    # released: the folder can be locked again
    with JournalLock(tmp_path) as again:
        assert again.path.exists()


def test_release_by_a_non_holder_leaves_the_lock_in_place(tmp_path: Path) -> None:
    holder = JournalLock(tmp_path)
    holder.acquire()
    try:
        other = JournalLock(tmp_path)
        other.release()
        assert holder.path.exists()
        assert orjson.loads(holder.path.read_bytes())["token"] == holder.token
    finally:
        holder.release()


def test_stale_lock_of_a_dead_pid_is_broken(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    path.write_bytes(orjson.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "token": "old"}))
    lock = JournalLock(tmp_path)
    lock.acquire()
    try:
        assert orjson.loads(path.read_bytes())["token"] == lock.token
    finally:
        lock.release()


def test_lock_of_a_live_pid_on_this_host_is_not_broken(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    path.write_bytes(orjson.dumps({"host": socket.gethostname(), "pid": os.getppid(), "token": "live"}))
    with pytest.raises(JournalLockedError):
        JournalLock(tmp_path).acquire()
    assert orjson.loads(path.read_bytes())["token"] == "live"


def test_lock_of_another_host_is_broken_only_when_its_heartbeat_is_stale(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    path.write_bytes(orjson.dumps({"host": "some-other-node", "pid": 1, "token": "remote"}))
    with pytest.raises(JournalLockedError, match="some-other-node"):
        JournalLock(tmp_path).acquire()
    old = path.stat().st_mtime - JournalLock.stale_after_s - 10
    os.utime(path, (old, old))
    with JournalLock(tmp_path) as lock:
        assert orjson.loads(path.read_bytes())["token"] == lock.token
