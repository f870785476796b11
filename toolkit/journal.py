"""The on-disk journal: the single source of truth of a search.

Layout of ``<log_dir>/<name>/``::

    experiment.json          the spec: space, searcher, scheduler, evaluator, versions
    journal.jsonl            append-only events, one JSON object per line
    lock                     held by the one live search writing here
    trials/<id>/config.json  the config and architecture of one trial
    trials/<id>/result.json  its latest result, history included

Rules: appends are flushed and fsynced; whole-file writes go to a temporary
file and ``os.replace``; a truncated last line (a crash mid-write) is skipped
on read; nothing is pickled. Every event line starts with ``{"event":"<kind>"``
so readers can skip kinds they do not need without parsing them.

The lock is a file created with ``O_CREAT | O_EXCL``, which is atomic on
NFSv3 and later. It records host, pid and a heartbeat (its mtime, refreshed by
the holder); a lock whose process is gone (same host) or whose heartbeat is
stale (another host) is broken, so a search killed with SIGKILL can resume.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from toolkit.errors import JournalError, JournalLockedError

__all__ = ["Journal", "JournalLock", "read_events"]

logger = logging.getLogger(__name__)

EVENTS = ("run", "sampled", "submitted", "started", "finished", "failed", "lost", "stopped", "promoted")
FORMAT_VERSION = 1


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


def write_json_atomic(path: Path, obj: Any, *, fsync: bool = False) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    data = orjson.dumps(
        obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    )
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # a full disk must not leave a stray temporary file
            tmp.unlink()
        raise


def read_events(
    path: str | os.PathLike[str], kinds: Iterable[str] | None = None, defer: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """Read the events of ``journal.jsonl``, optionally only those of some kinds.

    A truncated or corrupt *last* line is skipped (a crash mid-append); a
    corrupt line elsewhere is skipped with a warning. Events of a ``defer``
    kind whose line starts ``{"event":"<kind>","trial":<id>,`` are not parsed:
    they come back as ``{"event": kind, "trial": id, "raw": line}`` for the
    caller to parse only if it needs them.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "journal.jsonl"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    prefixes = tuple(b'{"event":"' + k.encode() + b'"' for k in kinds) if kinds is not None else None
    lines = data.split(b"\n")
    out: list[dict[str, Any]] = []
    enabled = gc.isenabled()
    gc.disable()  # millions of small acyclic dicts: the collector's passes would cost more than parsing
    try:
        _parse_lines(
            lines, prefixes, out, path, {b'{"event":"' + k.encode() + b'","trial":': k for k in defer}
        )
    finally:
        if enabled:
            gc.enable()
    return out


def _parse_lines(
    lines: list[bytes], prefixes: tuple[bytes, ...] | None, out: list, path: Path, deferred: dict[bytes, str]
) -> None:
    loads = orjson.loads
    last = len(lines) - 1
    lazy = tuple(deferred)
    for i, line in enumerate(lines):
        if not line or prefixes is not None and not line.startswith(prefixes):
            continue
        if lazy and line.startswith(lazy) and line.endswith(b"}"):
            for prefix, kind in deferred.items():
                if line.startswith(prefix):
                    end = line.find(b",", len(prefix))
                    try:
                        out.append({"event": kind, "trial": int(line[len(prefix) : end]), "raw": line})
                    except ValueError:
                        break  # not the expected layout: parse it in full below
                    else:
                        break
            else:  # pragma: no cover - the loop always breaks
                pass
            if out and out[-1].get("raw") is line:
                continue
        try:
            out.append(loads(line))
        except orjson.JSONDecodeError:
            if i < last and any(lines[i + 1 :]):
                logger.warning("skipping corrupt line %d of %s", i + 1, path)
            else:
                logger.info("skipping a truncated last line in %s", path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JournalLock:
    """An exclusive, NFS-safe lock on a journal folder, with a heartbeat.

    Examples
    --------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with JournalLock(d):
    ...     pass
    """

    heartbeat_s = 20.0
    stale_after_s = 120.0

    def __init__(self, folder: str | os.PathLike[str]):
        self.path = Path(folder) / "lock"
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _holder(self) -> dict[str, Any] | None:
        try:
            return orjson.loads(self.path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None

    def _is_stale(self, holder: dict[str, Any] | None) -> bool:
        if holder is None:
            # Being written right now, or a crash between create and write.
            with contextlib.suppress(FileNotFoundError):
                return time.time() - self.path.stat().st_mtime > 5.0
            return True
        if holder.get("host") == socket.gethostname():
            return not _pid_alive(int(holder.get("pid", -1)))
        with contextlib.suppress(FileNotFoundError):
            return time.time() - self.path.stat().st_mtime > self.stale_after_s
        return True

    def _locked_error(self, holder: dict[str, Any]) -> JournalLockedError:
        return JournalLockedError(
            f"another live search is writing to {self.path.parent} "
            f"(pid {holder.get('pid')} on host {holder.get('host')}, since {holder.get('since')}). "
            "Only one search may write to a folder: wait for it to finish, stop it, or use another "
            "experiment name. If that process is dead on another host, delete "
            f"{self.path} once its heartbeat is older than {self.stale_after_s:.0f} s."
        )

    def check(self) -> None:
        """Raise :class:`JournalLockedError` if a live search holds the lock; take nothing, write nothing.

        A cheap early check (before a cluster is started); :meth:`acquire` is what decides.
        """
        if not self.path.exists():
            return
        holder = self._holder()
        if holder is not None and not self._is_stale(holder):
            raise self._locked_error(holder)

    def acquire(self) -> None:
        """Take the lock or raise :class:`JournalLockedError` naming the holder."""
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "token": self.token,
            "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                holder = self._holder()
                if self._is_stale(holder):
                    logger.warning("breaking a stale lock left by %s at %s", holder, self.path)
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
                    continue
                raise self._locked_error(holder or {}) from None
            with os.fdopen(fd, "wb") as fh:
                fh.write(orjson.dumps(info))
                fh.flush()
                os.fsync(fh.fileno())
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name="darch-lock-heartbeat", daemon=True)
            self._thread.start()
            return
        raise JournalLockedError(f"could not take the lock {self.path} after breaking a stale one; retry.")

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        """Release the lock if this object holds it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        holder = self._holder()
        if holder and holder.get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> JournalLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Journal:
    """An experiment folder: its spec, its event log and its trial folders.

    Examples
    --------
    >>> import tempfile
    >>> j = Journal.create(Path(tempfile.mkdtemp()) / "demo", {"name": "demo"})
    >>> j.append([{"event": "sampled", "trial": 0, "config": {"x": 1}}])
    >>> [e["event"] for e in j.events()]
    ['sampled']
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.file = self.path / "journal.jsonl"
        self._fh: Any = None
        self._write_lock = threading.Lock()
        self._writer: threading.Thread | None = None

    # -- creation and opening ------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike[str], spec: dict[str, Any]) -> Journal:
        """Make the folder (mode 0700) and write ``experiment.json``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        (path / "trials").mkdir(exist_ok=True, mode=0o700)
        journal = cls(path)
        journal.write_spec(spec)
        journal.file.touch(mode=0o600, exist_ok=True)
        return journal

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Journal:
        """Open an existing journal folder, refusing one that is not a journal."""
        path = Path(path)
        if not path.is_dir():
            raise JournalError(
                f"{path} is not a folder. Give the folder of an experiment, such as logs/<name>, "
                "which holds experiment.json and journal.jsonl."
            )
        if not (path / "experiment.json").is_file():
            found = sorted(p.name for p in path.iterdir())[:10]
            raise JournalError(
                f"{path} is not a darch journal: it has no experiment.json (it holds {found}). "
                "Give the folder that `darch run` or Experiment.run created, such as logs/<name>."
            )
        return cls(path)

    @staticmethod
    def exists(path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` holds a journal."""
        return (Path(path) / "experiment.json").is_file()

    def spec(self) -> dict[str, Any]:
        """The contents of ``experiment.json``."""
        try:
            return orjson.loads((self.path / "experiment.json").read_bytes())
        except orjson.JSONDecodeError as exc:
            raise JournalError(
                f"{self.path / 'experiment.json'} is not valid JSON ({exc}). "
                "It is written atomically by darch, so it was edited or damaged by hand; restore it."
            ) from None

    def write_spec(self, spec: dict[str, Any]) -> None:
        """Replace ``experiment.json`` atomically."""
        write_json_atomic(self.path / "experiment.json", {"format": FORMAT_VERSION, **spec}, fsync=True)

    def lock(self) -> JournalLock:
        """A lock on this folder (use as a context manager)."""
        return JournalLock(self.path)

    # -- events --------------------------------------------------------------------
    def append(self, events: list[dict[str, Any]], *, sync: bool = False) -> None:
        """Append events in one write and flush them to the operating system.

        A flushed event survives the death of this process (SIGKILL included).
        The fsync that makes it survive a crash of the machine is done by a
        group-commit thread right after, so a burst of appends costs one fsync
        rather than one each; ``sync=True`` (and :meth:`close`) fsync at once.
        """
        if not events:
            return
        data = b"".join(
            _dumps(e if next(iter(e)) == "event" else {"event": e["event"], **e}) + b"\n" for e in events
        )
        with self._write_lock:
            if self._fh is None:
                self._fh = open(self.file, "ab")  # noqa: SIM115 - kept open for the run
                self._repair_tail()
                self._dirty = threading.Event()
                self._syncer = threading.Thread(target=self._sync_loop, name="darch-fsync", daemon=True)
                self._syncer.start()
            self._fh.write(data)
            self._fh.flush()
            if sync:
                os.fsync(self._fh.fileno())
            else:
                self._dirty.set()

    def _sync_loop(self) -> None:
        while True:
            self._dirty.wait()
            with self._write_lock:
                fh = self._fh
                self._dirty.clear()
                if fh is None:
                    return
                fd = fh.fileno()
            with contextlib.suppress(OSError, ValueError):
                os.fsync(fd)

    def _repair_tail(self) -> None:
        """End a truncated last line so the next event starts on a line of its own."""
        size = self.file.stat().st_size
        if size:
            with open(self.file, "rb") as fh:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    self._fh.write(b"\n")

    def close(self) -> None:
        """Wait for pending trial files and close the append handle."""
        writer = self._writer
        if writer is not None:
            self._files.put(None)
            writer.join()
            self._writer = None
        with self._write_lock:
            if self._fh is not None:
                fh, self._fh = self._fh, None
                try:
                    fh.flush()
                    os.fsync(fh.fileno())
                finally:
                    # Closed even when the flush fails (a full disk): the bytes that did not fit are
                    # dropped, leaving at worst a truncated last line, which readers skip and the next
                    # append ends; a later flush of stale bytes could land after newer events.
                    with contextlib.suppress(OSError):
                        fh.close()
                    self._dirty.set()  # wakes the syncer, which sees no file and exits

    def events(self, kinds: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """All events, or those of some kinds, in order."""
        return read_events(self.file, kinds)

    # -- trial folders -----------------------------------------------------------
    def trial_dir(self, trial_id: int, create: bool = False) -> Path:
        """``trials/<id>/`` (zero-padded), made on request."""
        d = self.path / "trials" / f"{trial_id:06d}"
        if create:
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return d

    def write_trial_file(self, trial_id: int, name: str, obj: Any, *, background: bool = False) -> None:
        """Write ``trials/<id>/<name>`` atomically, now or on the background writer.

        Trial files are conveniences (the journal is the source of truth), so
        the runner writes them off its hot path; :meth:`close` waits for them.
        """
        if not background:
            write_json_atomic(self.trial_dir(trial_id, create=True) / name, obj)
            return
        with self._write_lock:
            if self._writer is None:
                self._files: queue.SimpleQueue[Any] = queue.SimpleQueue()
                self._writer = threading.Thread(
                    target=self._write_files, name="darch-trial-files", daemon=True
                )
                self._writer.start()
        self._files.put((trial_id, name, obj))

    def _write_files(self) -> None:
        while True:
            item = self._files.get()
            if item is None:
                return
            trial_id, name, obj = item
            try:
                write_json_atomic(self.trial_dir(trial_id, create=True) / name, obj)
            except OSError as exc:
                logger.warning("could not write %s of trial %d: %s", name, trial_id, exc)

    def iter_trial_dirs(self) -> Iterator[Path]:
        """The trial folders that exist."""
        yield from sorted((self.path / "trials").glob("[0-9]*"))
