"""The Dask loop: ask -> submit -> complete -> tell. The only module that talks to Dask.

The runner keeps up to ``max_concurrent`` trials in flight. The moment one
completes it is journaled, told to the searcher (or the scheduler ranks it),
and a new config is asked for: there is no barrier between batches.

It uses public Dask API only: ``client.submit`` with ``pure=False`` and
``resources=``, ``Future.add_done_callback``, ``client.gather``,
``Future.cancel``, ``client.subscribe_topic`` and ``client.scheduler_info``.
Completed futures are handed to the loop through a queue rather than
``as_completed`` because the loop must also wake up on its own: to enforce
per-trial timeouts, to notice workers that joined, and to honour ``stop()``.

Faults:

* an exception inside the evaluator is caught on the worker and recorded as a
  *failed* trial with its traceback; the search goes on;
* a lost worker (its task errs with ``KilledWorker`` or similar, or Dask
  re-runs it elsewhere) is a *lost attempt*: the trial is run again, up to
  ``max_attempts`` starts, and is never counted twice;
* a trial over ``trial_timeout`` seconds is cancelled and recorded as failed.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from distributed import as_completed

from toolkit.errors import DarchError, JournalError
from toolkit.history import TrialRecord, merge_history
from toolkit.journal import _dumps
from toolkit.schedulers.base import WAIT, RungRecord
from toolkit.trial import TrialStatus
from toolkit.worker import STARTED_TOPIC, run_trial

if TYPE_CHECKING:
    from distributed import Client, Future

    from toolkit.experiment import Experiment

__all__ = ["NoWorkersError", "Runner"]


class NoWorkersError(DarchError):
    """The cluster had no workers for longer than ``worker_timeout`` while trials waited."""


logger = logging.getLogger(__name__)


def trial_seed(seed: int, trial_id: int) -> int:
    """The seed of one trial, derived from the experiment's seed."""
    return (int(seed) * 1_000_003 + int(trial_id) * 7919) % (2**31 - 1)


@dataclass
class Job:
    """One submission of a trial (a first run, a re-run, or a promotion)."""

    trial_id: int
    budget: float | None = None
    rung: int | None = None
    bracket: int | None = None
    resume: bool = False
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    cancel_reason: str | None = None


class Runner:
    """Runs one experiment's search on a Dask client until its budget is spent.

    Not for direct use: :meth:`Experiment.run` and :meth:`Experiment.start`
    build it.
    """

    tick_s = 0.25

    def __init__(
        self,
        experiment: Experiment,
        client: Client,
        trials: dict[int, TrialRecord],
        n_trials: int,
        max_concurrent: int | None = None,
        timeout: float | None = None,
        progress: Any = None,
    ):
        self.exp = experiment
        self.client = client
        self.trials = trials
        self.n_trials = n_trials
        self.max_concurrent = max_concurrent
        self.timeout = timeout
        self.progress = progress
        self.journal = experiment.journal
        self.objective = experiment.objective
        self.inflight: dict[Future, Job] = {}
        self.requeue: collections.deque[Job] = collections.deque()
        self._done: queue.SimpleQueue[Future] = queue.SimpleQueue()
        self._started: collections.deque[dict[str, Any]] = collections.deque()
        self._events: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._write_error: OSError | None = None
        self._closing = threading.Event()
        self._added = threading.Event()
        self._ac: Any = None
        self._stop_reason = "stop"
        self._slots = 0
        self.n_workers = 0
        self._deadlines: dict[str, float | None] = {}
        self._durations: dict[float | None, list[float]] = {}
        self._warned_deadline = False
        self._recycling: set[str] = set()
        self._no_workers_since: float | None = None
        self._warned_no_workers = 0.0
        self._slots_t = -math.inf
        self._exhausted = False
        self._archs: dict[int, Any] = {}
        self.losses: collections.Counter[int] = collections.Counter()
        self.next_id = max(trials, default=-1) + 1
        self.n_finished = sum(r.status == TrialStatus.FINISHED for r in trials.values())
        self.n_failed = sum(r.status == TrialStatus.FAILED for r in trials.values())
        self.best: float | None = experiment._best_value(trials)
        self.resources = self._resources()
        self.scheduler = experiment.scheduler
        self.rungs: dict[tuple[int, int], RungRecord] = {}
        for rec in trials.values():
            for rung, status in rec.rung_status.items():
                if status == "running" and rec.status.is_terminal:
                    continue
                value = rec.rung_values.get(rung)
                score = self.objective.score(value) if status == "finished" else None
                self.rungs[(rec.trial_id, rung)] = RungRecord(
                    rec.trial_id, rec.bracket or 0, rung, self._budget_of(rec, rung), status, score
                )
        for rec in trials.values():
            if not rec.status.is_terminal:
                self.requeue.append(
                    Job(
                        rec.trial_id,
                        budget=rec.budget,
                        rung=rec.rung,
                        bracket=rec.bracket,
                        resume=bool(rec.rung),
                    )
                )

    def _budget_of(self, rec: TrialRecord, rung: int) -> float:
        if rec.rung == rung and rec.budget is not None:
            return rec.budget
        budgets = self.exp.scheduler.budgets() if self.exp.scheduler is not None else []
        return budgets[rung] if rung < len(budgets) else float(rung)

    # -- capacity ------------------------------------------------------------------
    def _resources(self) -> dict[str, float] | None:
        wanted = dict(getattr(self.exp.evaluator, "resources", {}) or {})
        if not wanted:
            return None
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        has = any(all(k in (w.get("resources") or {}) for k in wanted) for w in workers.values())
        if has or not workers:
            return wanted
        logger.info("workers advertise no %s resources: trials run without them", sorted(wanted))
        return None

    def _refresh_workers(self) -> None:
        """Re-read the cluster's workers (at most once a second): slots, and how long none were seen."""
        now = time.monotonic()
        if now - self._slots_t <= 1.0:
            return
        self._slots_t = now
        info = self.client.scheduler_info(n_workers=-1).get("workers", {})
        workers = list(info.values())
        if self.resources:
            slots = 0
            for w in workers:
                res = w.get("resources") or {}
                slots += int(min(res.get(k, 0) // v for k, v in self.resources.items()))
        else:
            slots = sum(int(w.get("nthreads", 1)) for w in workers)
        self._slots = slots
        self.n_workers = len(workers)
        self._deadlines = {addr: (w.get("metrics") or {}).get("darch_deadline") for addr, w in info.items()}
        if workers:
            self._no_workers_since = None
        elif self._no_workers_since is None:
            self._no_workers_since = now

    def _expected_duration(self, budget: float | None) -> float | None:
        """Median duration of the latest finished trials at this budget (None: no estimate yet)."""
        durations = self._durations.get(budget)
        if not durations:
            return None
        recent = sorted(durations[-20:])
        return recent[len(recent) // 2]

    def _workers_with_time_for(self, budget: float | None) -> list[str] | None:
        """Workers whose remaining lifetime fits a trial at ``budget``; None when all do (or unknown)."""
        expected = self._expected_duration(budget)
        deadlines = self._deadlines
        if expected is None or not deadlines or all(dl is None for dl in deadlines.values()):
            return None
        now = time.time()
        fits = [a for a, dl in deadlines.items() if dl is None or dl - now > 1.2 * expected + 5]
        if len(fits) == len(deadlines):
            return None
        return fits

    def capacity(self) -> int:
        """Trials to keep in flight: ``max_concurrent``, or the cluster's slots."""
        self._refresh_workers()
        if self.max_concurrent:
            return self.max_concurrent
        slots = max(self._slots, 1)
        deadlines = any(dl is not None for dl in self._deadlines.values())
        if getattr(self.exp.searcher, "independent", False) and self.scheduler is None and not deadlines:
            # Proposals do not depend on results (random, grid): queue a batch on the scheduler, as a
            # client.map would, so a worker never waits for the driver's round trip. Not when workers
            # have deadlines: a queued trial would start one duration later than the lifetime check assumed.
            return max(4 * slots, 32)
        return slots

    def _check_workers(self) -> None:
        """Never hang silently when the cluster has no workers (every SLURM job ended, say)."""
        self._refresh_workers()
        since = self._no_workers_since
        if since is None or not (self.inflight or self.requeue):
            return
        waited = time.monotonic() - since
        limit = self.exp.worker_timeout
        if limit is not None and waited > limit:
            self.stop("no workers")
            raise NoWorkersError(
                f"the cluster has had no workers for {waited:.0f} s (worker_timeout={limit}) while "
                f"{len(self.inflight)} trial(s) waited; every job may have ended or been cancelled. "
                "The journal is intact: scale the cluster again (cluster.scale(jobs=k), or adapt) and "
                f"resume with `darch resume {self.journal.path}`, or raise worker_timeout to wait longer."
            )
        if waited - self._warned_no_workers >= 30:
            self._warned_no_workers = waited
            logger.warning(
                "no Dask workers for %.0f s; %d trial(s) wait for workers to join", waited, len(self.inflight)
            )

    # -- the loop ------------------------------------------------------------------
    def run(self) -> None:
        """Run until ``n_trials`` trials are finished or failed, the space is exhausted, or stop."""
        deadline = time.monotonic() + self.timeout if self.timeout else None
        self.client.subscribe_topic(STARTED_TOPIC, self._on_started)
        self._ac = as_completed([], with_results=True, raise_errors=False)
        self._closing.clear()
        feeder = threading.Thread(target=self._feed, name="darch-as-completed", daemon=True)
        feeder.start()
        try:
            while True:
                if deadline is not None and time.monotonic() > deadline and not self._stop.is_set():
                    logger.info("search timeout reached: stopping the trials in flight")
                    self.stop("timeout")
                if not self._stop.is_set():
                    self._fill()
                if not self.inflight and (not self.requeue or self._stop.is_set()):
                    break
                if self._stop.is_set():
                    self._cancel_all()
                batch = self._wait()
                self._drain_started()
                if batch:
                    self._complete(batch)
                self._check_timeouts()
                self._check_workers()
                self._flush()
                self._update_progress()
        finally:
            self._closing.set()
            self._added.set()
            feeder.join(timeout=5)
            self._flush()
            self._update_progress()
            with contextlib.suppress(Exception):  # the client may be closing
                self.client.unsubscribe_topic(STARTED_TOPIC)

    def stop(self, reason: str = "stop") -> None:
        """Ask the loop to cancel the trials in flight (recorded as stopped) and return."""
        self._stop_reason = reason
        self._stop.set()

    def _feed(self) -> None:
        """Move completed ``(future, result)`` pairs from ``as_completed`` to the loop's queue."""
        while not self._closing.is_set():
            try:
                batch = self._ac.next_batch(block=True)
            except StopIteration:  # nothing in flight right now: wait for the next submission
                self._added.wait(self.tick_s)
                self._added.clear()
                continue
            for item in batch:
                self._done.put(item)

    def _wait(self) -> list[tuple[Future, Any]]:
        try:
            first = self._done.get(timeout=self.tick_s)
        except queue.Empty:
            return []
        batch = [first]
        while True:
            try:
                batch.append(self._done.get_nowait())
            except queue.Empty:
                return batch

    def _flush(self) -> None:
        if not self._events or self._write_error is not None:
            return
        events, self._events = self._events, []
        try:
            self.journal.append(events)
        except OSError as exc:
            # Disk full, quota, a lost NFS mount: stop cleanly. The journal up to its last complete
            # line stays readable, and the trials in flight are cancelled (they re-run on resume).
            self._write_error = exc
            with contextlib.suppress(Exception):
                self.client.cancel(list(self.inflight))
            self.inflight.clear()
            raise JournalError(
                f"could not write to the journal {self.journal.file}: {exc}. The search stopped; "
                "everything recorded before is intact. Free space (or fix the filesystem), then "
                f"continue with `darch resume {self.journal.path}`."
            ) from exc

    # -- asking and submitting -------------------------------------------------------
    def _fill(self) -> None:
        free = self.capacity() - len(self.inflight)
        jobs: list[Job] = []
        while len(jobs) < free:
            job = self._next_job()
            if job is None:
                break
            jobs.append(job)
        if not jobs:
            return
        groups: dict[Any, list[Job]] = {}
        for job in jobs:
            groups.setdefault(job.budget, []).append(job)
        for budget, group in groups.items():
            workers = self._workers_with_time_for(budget)
            if workers == []:
                # No worker will live long enough: hold these until replacement jobs arrive.
                if not self._warned_deadline:
                    self._warned_deadline = True
                    logger.warning(
                        "no worker has enough lifetime left for a trial of about %.0f s; "
                        "holding it until new workers join",
                        self._expected_duration(budget) or 0.0,
                    )
                self.requeue.extendleft(reversed(group))
                continue
            self._submit(group, workers)
        if self.requeue and not self.inflight:
            time.sleep(self.tick_s)  # everything is held: do not spin

    def n_created(self) -> int:
        return len(self.trials)

    def _next_job(self) -> Job | None:
        if self.requeue:
            job = self.requeue.popleft()
            self._rung_running(job)
            return job
        if self.scheduler is not None:
            return self._next_scheduled()
        if self._exhausted or self.n_created() >= self.n_trials:
            return None
        config = self.exp.searcher.ask()
        if config is None:
            logger.info("the searcher has no more configs: the space is exhausted")
            self._exhausted = True
            return None
        return self._new_trial(config)

    # -- multi-fidelity --------------------------------------------------------------
    def _rung_running(self, job: Job) -> None:
        if self.scheduler is not None and job.rung is not None:
            self.rungs[(job.trial_id, job.rung)] = RungRecord(
                job.trial_id, job.bracket or 0, job.rung, job.budget, "running", None
            )

    def _rung_done(self, job: Job, status: str, value: float | None) -> None:
        if self.scheduler is None or job.rung is None:
            return
        if status == "stopped":
            self.rungs.pop((job.trial_id, job.rung), None)
            return
        score = self.objective.score(value) if status == "finished" else None
        self.rungs[(job.trial_id, job.rung)] = RungRecord(
            job.trial_id, job.bracket or 0, job.rung, job.budget, status, score
        )

    def _next_scheduled(self) -> Job | None:
        decision = self.scheduler.next_job(list(self.rungs.values()), self.n_created(), self.n_trials)
        if decision is None or decision is WAIT:
            return None
        if decision.kind == "promote":
            tid = decision.trial_id
            rec = self.trials[tid]
            rec.status = TrialStatus.PENDING
            rec.rung, rec.budget, rec.bracket = decision.rung, decision.budget, decision.bracket
            rec.starts = set()  # attempts count per rung: a promotion is not a retry
            rec.attempts = 0
            self.losses.pop(tid, None)
            rec.rung_status[decision.rung] = "running"
            self._events.append(
                {
                    "event": "promoted",
                    "t": time.time(),
                    "trial": tid,
                    "rung": decision.rung,
                    "budget": decision.budget,
                    "bracket": decision.bracket,
                }
            )
            job = Job(tid, decision.budget, decision.rung, decision.bracket, resume=True)
        else:
            if self._exhausted:
                return None
            config = self.exp.searcher.ask()
            if config is None:
                self._exhausted = True
                return None
            job = self._new_trial(config, decision.budget, decision.rung, decision.bracket)
        self._rung_running(job)
        return job

    def _new_trial(
        self, config: dict[str, Any], budget: float | None = None, rung: int | None = None, bracket=None
    ) -> Job:
        tid = self.next_id
        self.next_id += 1
        arch = self.exp.space.replay(config)
        seed = trial_seed(self.exp.seed, tid)
        rec = TrialRecord(
            trial_id=tid,
            config=config,
            seed=seed,
            budget=budget,
            rung=rung,
            bracket=bracket,
            sampled_t=time.time(),
        )
        self.trials[tid] = rec
        self._archs[tid] = arch
        ev = {"event": "sampled", "t": rec.sampled_t, "trial": tid, "config": config, "seed": seed}
        if rung is not None:
            ev.update(budget=budget, rung=rung, bracket=bracket)
        self._events.append(ev)
        self.journal.write_trial_file(
            tid, "config.json", {"trial": tid, "config": config, "arch": arch}, background=True
        )
        return Job(tid, budget=budget, rung=rung, bracket=bracket)

    def _submit(self, jobs: list[Job], workers: list[str] | None = None) -> None:
        """Submit jobs in one ``client.map`` call (one graph update for the batch).

        ``workers`` restricts them to workers with enough lifetime left.
        """
        payloads = []
        now = time.time()
        for job in jobs:
            rec = self.trials[job.trial_id]
            arch = self._archs.get(job.trial_id)
            if arch is None:
                arch = self._archs[job.trial_id] = self.exp.space.replay(rec.config)
            payloads.append(
                {
                    "trial": job.trial_id,
                    "arch": arch,
                    "config": rec.config,
                    "budget": job.budget,
                    "trial_dir": str(self.journal.trial_dir(job.trial_id)),
                    "seed": rec.seed,
                    "resume": job.resume,
                }
            )
            job.submitted = now
            job.started = None
            rec.status = TrialStatus.PENDING
            ev: dict[str, Any] = {"event": "submitted", "t": now, "trial": job.trial_id}
            if job.rung is not None:
                ev.update(budget=job.budget, rung=job.rung, resume=job.resume)
            self._events.append(ev)
        extra: dict[str, Any] = {}
        if workers is not None:
            extra = {"workers": workers, "allow_other_workers": False}
        futures = self.client.map(
            run_trial, payloads, evaluator=self.exp.evaluator, pure=False, resources=self.resources, **extra
        )
        for fut, job in zip(futures, jobs):
            self.inflight[fut] = job
        self._ac.update(futures)
        self._added.set()

    # -- completions -----------------------------------------------------------------
    def _on_started(self, event: Any) -> None:
        msg = event[1] if isinstance(event, tuple) and len(event) == 2 else event
        if isinstance(msg, dict):
            self._started.append(msg)

    def _drain_started(self) -> None:
        active = {job.trial_id for job in self.inflight.values()}
        while self._started:
            msg = self._started.popleft()
            rec = self.trials.get(msg.get("trial"))
            if rec is None or msg.get("token") in rec.starts:
                continue
            if rec.trial_id not in active:
                # Dask re-ran a task whose result was already recorded (its worker died before the
                # future was released): not an attempt of a live trial.
                logger.debug("ignoring a re-run of trial %d, already recorded", rec.trial_id)
                continue
            self._note_start(rec, msg)

    def _note_start(self, rec: TrialRecord, start: dict[str, Any]) -> None:
        rec.starts.add(start.get("token", ""))
        rec.attempts = len(rec.starts)
        rec.start_info = start
        if not rec.status.is_terminal:
            rec.status = TrialStatus.RUNNING
        self._events.append({"event": "started", "trial": rec.trial_id, **start})
        for fut, job in self.inflight.items():
            if job.trial_id == rec.trial_id:
                job.started = start.get("t", time.time())
                if rec.attempts > self.exp.max_attempts and job.cancel_reason is None:
                    job.cancel_reason = "attempts"
                    fut.cancel()

    def _complete(self, batch: list[tuple[Future, Any]]) -> None:
        for fut, out in batch:
            job = self.inflight.pop(fut, None)
            if job is not None:
                if fut.status == "finished" and isinstance(out, dict):
                    self._record(job, out)
                elif fut.cancelled() or fut.status == "cancelled":
                    self._cancelled(job)
                else:
                    self._lost(job, out if isinstance(out, BaseException) else None)
            # Release at once (after reading its status): a recorded result must not be
            # recomputed by Dask if the worker holding it dies.
            fut.release()

    def _record(self, job: Job, out: dict[str, Any]) -> None:
        rec = self.trials[job.trial_id]
        start = out.get("start") or {}
        if start.get("token") and start["token"] not in rec.starts:
            self._note_start(rec, start)
        ev: dict[str, Any] = {
            "trial": job.trial_id,
            "t": time.time(),
            "attempts": max(rec.attempts, 1),
            "duration_s": out.get("duration_s"),
            "start": start,
        }
        if job.rung is not None:
            ev.update(budget=job.budget, rung=job.rung)
        if out.get("status") == "finished":
            problem, value = self._check_result(out.get("result"))
            if problem is None:
                result = out["result"]
                self._finish(rec, job, ev, value, result)
                return
            out = {"status": "failed", "error": problem, "traceback": None}
        self._fail(rec, job, ev, out.get("error") or "unknown error", out.get("traceback"))

    def _check_result(self, result: Any) -> tuple[str | None, float | None]:
        name = self.objective.name
        if not isinstance(result, dict):
            return (
                f"TrialError: the evaluator returned {type(result).__name__} {result!r:.200}, not a dict. "
                f"Return a dict such as {{'{name}': 0.97, ...}}.",
                None,
            )
        if name not in result:
            return (
                f"TrialError: the evaluator's result has no objective '{name}' (keys: {sorted(result)[:20]}). "
                f"Report it, or set objective= to one of those keys.",
                None,
            )
        value = result[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = float(value)  # numpy scalars
            except (TypeError, ValueError):
                return (f"TrialError: objective '{name}' is {value!r}, not a number.", None)
        if not math.isfinite(value):
            return (
                f"TrialError: objective '{name}' is {value}, not a finite number; the trial is failed "
                "rather than ranked.",
                None,
            )
        try:
            _dumps(result)
        except TypeError as exc:
            return (
                f"TrialError: the evaluator's result is not JSON-able ({exc}). Return plain values.",
                None,
            )
        return None, float(value)

    def _maybe_recycle(self, result: dict[str, Any], start: dict[str, Any]) -> None:
        """Restart a worker process that has run ``recycle_after`` trials (TF keeps ~10 MB per model)."""
        limit = self.exp.recycle_after
        worker = start.get("worker")
        if not limit or not worker or worker in self._recycling:
            return
        if int(result.get("process_trials") or 0) < limit:
            return
        self._recycling.add(worker)
        logger.info(
            "recycling worker %s after %s trials (rss %s MB)",
            worker,
            result["process_trials"],
            result.get("rss_mb"),
        )

        def restart() -> None:
            try:
                self.client.restart_workers([worker], raise_for_error=False)
            except Exception as exc:  # noqa: BLE001 - best effort: a worker that is gone needs no restart
                logger.info("could not restart worker %s: %s", worker, exc)
            finally:
                self._recycling.discard(worker)

        threading.Thread(target=restart, name="darch-recycle", daemon=True).start()

    def _finish(self, rec: TrialRecord, job: Job, ev: dict[str, Any], value: float, result: dict) -> None:
        self._maybe_recycle(result, ev.get("start") or {})
        rec.history = merge_history(rec.history, result.get("history"))
        if job.rung is not None and rec.history:
            result = {**result, "history": rec.history}
        if rec.finished_t is None:
            self.n_finished += 1
        self._rung_done(job, "finished", value)
        if self.best is None or self.objective.better(value, self.best):
            self.best = value
        rec.status = TrialStatus.FINISHED
        rec.value = value
        rec.result = result
        rec.error = None
        rec.finished_t = ev["t"]
        rec.duration_s += ev.get("duration_s") or 0.0
        if ev.get("duration_s"):
            self._durations.setdefault(job.budget, []).append(float(ev["duration_s"]))
        if job.rung is not None:
            rec.rung = job.rung
            rec.budget = job.budget
            rec.rung_values[job.rung] = value
            rec.rung_status[job.rung] = "finished"
        self._events.append({"event": "finished", **ev, "value": value, "result": result})
        self.journal.write_trial_file(
            rec.trial_id,
            "result.json",
            {"trial": rec.trial_id, **ev, "value": value, "result": result},
            background=True,
        )
        self._tell(rec, job)

    def _fail(self, rec: TrialRecord, job: Job, ev: dict[str, Any], error: str, tb: str | None) -> None:
        if rec.status != TrialStatus.FAILED:
            self.n_failed += 1
            if rec.finished_t is not None:  # it had finished a lower rung
                self.n_finished -= 1
        self._rung_done(job, "failed", None)
        rec.status = TrialStatus.FAILED
        rec.error = error
        rec.traceback = tb
        rec.finished_t = ev["t"]
        if job.rung is not None:
            rec.rung = job.rung
            rec.rung_status[job.rung] = "failed"
        self._events.append({"event": "failed", **ev, "error": error, "traceback": tb})
        logger.info("trial %d failed: %s", rec.trial_id, error)
        self._tell(rec, job)

    def _tell(self, rec: TrialRecord, job: Job) -> None:
        self.exp.searcher.tell(rec.to_trial())

    def _lost(self, job: Job, exc: BaseException | None) -> None:
        rec = self.trials[job.trial_id]
        self.losses[job.trial_id] += 1
        n = max(rec.attempts, self.losses[job.trial_id])
        self._events.append(
            {"event": "lost", "t": time.time(), "trial": job.trial_id, "attempts": n, "error": repr(exc)}
        )
        if n >= self.exp.max_attempts:
            ev = {
                "trial": job.trial_id,
                "t": time.time(),
                "attempts": n,
                "duration_s": None,
                "start": rec.start_info,
            }
            self._fail(
                rec, job, ev, f"LostTrial: the trial was lost {n} times (last: {exc!r}); giving up", None
            )
        else:
            logger.info("trial %d lost (%r); running it again", job.trial_id, exc)
            self.requeue.appendleft(Job(job.trial_id, job.budget, job.rung, job.bracket, job.resume))

    def _cancelled(self, job: Job) -> None:
        rec = self.trials[job.trial_id]
        reason = job.cancel_reason or ("stop" if self._stop.is_set() else None)
        if reason == "timeout":
            ev = {
                "trial": job.trial_id,
                "t": time.time(),
                "attempts": max(rec.attempts, 1),
                "duration_s": None,
                "start": rec.start_info,
            }
            self._fail(
                rec,
                job,
                ev,
                f"TrialTimeout: the trial ran longer than trial_timeout={self.exp.trial_timeout} s and was cancelled",
                None,
            )
        elif reason == "attempts":
            ev = {
                "trial": job.trial_id,
                "t": time.time(),
                "attempts": rec.attempts,
                "duration_s": None,
                "start": rec.start_info,
            }
            self._fail(
                rec, job, ev, f"LostTrial: the trial was started {rec.attempts} times; giving up", None
            )
        elif reason == "stop":
            rec.status = TrialStatus.STOPPED
            self._rung_done(job, "stopped", None)
            self._events.append(
                {"event": "stopped", "t": time.time(), "trial": job.trial_id, "reason": self._stop_reason}
            )
        else:  # cancelled by someone else (client reconnect, cluster restart): run it again
            self._lost(job, None)

    def _cancel_all(self) -> None:
        pending = [f for f, j in self.inflight.items() if j.cancel_reason is None]
        for fut in pending:
            self.inflight[fut].cancel_reason = "stop"
        if pending:
            self.client.cancel(pending)

    def _check_timeouts(self) -> None:
        limit = self.exp.trial_timeout
        if not limit:
            return
        now = time.time()
        late = [
            f
            for f, j in self.inflight.items()
            if j.cancel_reason is None and j.started is not None and now - j.started > limit
        ]
        for fut in late:
            self.inflight[fut].cancel_reason = "timeout"
        if late:
            self.client.cancel(late)

    # -- progress --------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Finished, failed and running trials."""
        return {"finished": self.n_finished, "failed": self.n_failed, "running": len(self.inflight)}

    def _update_progress(self) -> None:
        if self.progress is None:
            return
        c = self.counts()
        done = c["finished"] + c["failed"]
        self.progress.n = done
        best = self.best
        postfix = {"running": c["running"], "failed": c["failed"]}
        if best is not None:
            postfix["best"] = f"{best:.4g}"
        self.progress.set_postfix(postfix, refresh=False)
        self.progress.refresh()
