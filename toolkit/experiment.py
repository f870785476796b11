"""``Experiment``: the one public entry point of a search.

Examples
--------
>>> from toolkit import Experiment, SearchSpace
>>> from toolkit.evaluators import SyntheticEvaluator
>>> from toolkit.spaces import conv_net
>>> exp = Experiment("demo", SearchSpace(conv_net), SyntheticEvaluator(), log_dir="/tmp/darch-doc")
>>> exp.objective.name, exp.objective.mode
('val_accuracy', 'max')

``exp.run(n_trials=16)`` then runs 16 trials on an embedded LocalCluster and
returns the results table; ``Experiment.resume("logs/demo")`` continues an
interrupted search.
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
import platform
import re
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from toolkit._imports import EVALUATORS, SCHEDULERS, SEARCHERS, import_object, qualified_name, resolve
from toolkit.errors import ConfigError, JournalError
from toolkit.history import TrialRecord, fold
from toolkit.journal import Journal, JournalLock
from toolkit.space import SearchSpace
from toolkit.trial import Objective, TrialStatus

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr
    from distributed import Client

__all__ = ["Experiment"]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _versions() -> dict[str, str]:
    import dask
    import distributed

    from toolkit import __version__

    return {
        "darch": __version__,
        "dask": dask.__version__,
        "distributed": distributed.__version__,
        "python": platform.python_version(),
    }


def _describe_obj(obj: Any) -> dict[str, Any] | None:
    if obj is None:
        return None
    params = obj.get_params() if hasattr(obj, "get_params") else {}
    params = orjson.loads(orjson.dumps(params, default=repr))
    return {"class": qualified_name(obj), "params": params}


def _build(desc: dict[str, Any] | None, kind: str, registry: dict[str, str]) -> Any:
    if not desc:
        return None
    cls = resolve(kind, desc["class"], registry)
    params = desc.get("params") or {}
    return cls.from_params(params) if hasattr(cls, "from_params") else cls(**params)


def _check_positive_int(name: str, value: Any, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer; got {value!r}. For example {example}.")
    return value


def embedded_cluster(n_workers: int | None = None) -> Any:
    """The default LocalCluster: one single-threaded worker process per core."""
    from toolkit.cluster import make_cluster

    overrides = {"n_workers": n_workers} if n_workers else {}
    return make_cluster("local", **overrides)


def check_evaluator(evaluator: Any) -> None:
    """Run an evaluator's own check in the search process, before any trial is sent to a worker.

    It calls the evaluator's ``check()`` when it has one, else its ``validate()``; both take no
    argument and raise :class:`~toolkit.errors.ConfigError`. So a bad setting (``epochs=0``) or a
    dataset file that is missing, corrupt or lacks its arrays stops the search at once with one
    clear message, instead of failing every trial on the workers.
    """
    for name in ("check", "validate"):
        hook = getattr(evaluator, name, None)
        if callable(hook):
            hook()
            return


class Experiment:
    """An architecture search: a space, a searcher, an evaluator and a journal folder.

    Parameters
    ----------
    name
        The experiment's name; its journal is ``<log_dir>/<name>/``.
    space
        A :class:`~toolkit.SearchSpace` (or a bare space function).
    evaluator
        A picklable callable run on workers (see :mod:`toolkit.evaluators.base`).
    searcher
        An ask/tell searcher; default :class:`~toolkit.searchers.RandomSearcher`.
    scheduler
        An optional multi-fidelity scheduler (ASHA, Hyperband, successive halving).
    objective, mode
        The result metric to optimise and its direction.
    log_dir
        Where experiment folders live (on the shared filesystem under SLURM).
    seed
        Seeds the searcher (when it has none) and every trial.
    max_attempts
        How many times a trial may be started before a lost worker fails it.
    trial_timeout
        Seconds after which a running trial is cancelled and failed.
    worker_timeout
        Seconds the search waits while the cluster has no worker at all (every
        SLURM job ended, say) before it stops with a clear error; ``None``
        waits for replacements forever, with a warning every 30 s.
    recycle_after
        Restart a worker process after it has run this many trials (the
        evaluator reports ``process_trials``). TensorFlow keeps about 10 MB per
        model in a process (``bench/results/evaluator.json``), so long Keras
        searches should set about 50. A trial that was about to start on that
        worker is run again elsewhere; it is never lost. ``None``: never.

    Examples
    --------
    >>> from toolkit.evaluators import SyntheticEvaluator
    >>> from toolkit.spaces import mlp
    >>> Experiment("x", mlp, SyntheticEvaluator(), log_dir="/tmp/darch-doc").space.path
    'toolkit.spaces.mlp:mlp'
    """

    def __init__(
        self,
        name: str,
        space: SearchSpace | Any,
        evaluator: Any,
        searcher: Any = None,
        scheduler: Any = None,
        objective: str = "val_accuracy",
        mode: str = "max",
        log_dir: str | os.PathLike[str] = "logs",
        seed: int = 0,
        max_attempts: int = 3,
        trial_timeout: float | None = None,
        worker_timeout: float | None = 600.0,
        recycle_after: int | None = None,
    ):
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(
                f"experiment name must be letters, digits, '.', '_' or '-' (it names a folder); got {name!r}. "
                "For example Experiment('mnist-random', ...)."
            )
        if not isinstance(space, SearchSpace):
            if not callable(space):
                raise ConfigError(f"space must be a SearchSpace or a space function; got {space!r}.")
            space = SearchSpace(space)
        if not callable(evaluator):
            raise ConfigError(
                f"evaluator must be callable (see toolkit.evaluators); got {evaluator!r}. "
                "For example SyntheticEvaluator() or KerasClassifierEvaluator(dataset='digits')."
            )
        check_evaluator(evaluator)
        self.name = name
        self.space = space
        self.evaluator = evaluator
        self.objective = Objective(objective, mode)
        self.seed = seed
        self.max_attempts = _check_positive_int("max_attempts", max_attempts, "max_attempts=3")
        if trial_timeout is not None and not (isinstance(trial_timeout, (int, float)) and trial_timeout > 0):
            raise ConfigError(
                f"trial_timeout must be a positive number of seconds or None; got {trial_timeout!r}."
            )
        self.trial_timeout = trial_timeout
        if worker_timeout is not None and not (
            isinstance(worker_timeout, (int, float)) and worker_timeout > 0
        ):
            raise ConfigError(
                f"worker_timeout must be a positive number of seconds or None (wait forever); got {worker_timeout!r}."
            )
        self.worker_timeout = worker_timeout
        if recycle_after is not None:
            _check_positive_int("recycle_after", recycle_after, "recycle_after=50")
        self.recycle_after = recycle_after
        if searcher is None:
            from toolkit.searchers import RandomSearcher

            searcher = RandomSearcher(seed=seed)
        elif isinstance(searcher, str):
            searcher = resolve("searcher", searcher, SEARCHERS)(seed=seed)
        self.searcher = searcher
        if isinstance(scheduler, str):
            scheduler = resolve("scheduler", scheduler, SCHEDULERS)()
        self.scheduler = scheduler
        self.log_dir = Path(log_dir)
        self.path = self.log_dir / name
        self.journal = Journal(self.path)
        self._runner: Any = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._lock: JournalLock | None = None
        self._own: tuple[Any, Any] | None = None
        self._started_at: float | None = None
        self._n_trials: int | None = None

    # -- spec ----------------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        """What ``experiment.json`` records: enough to rebuild this experiment."""
        return {
            "name": self.name,
            "space": self.space.to_dict(),
            "searcher": _describe_obj(self.searcher),
            "scheduler": _describe_obj(self.scheduler),
            "evaluator": _describe_obj(self.evaluator),
            "objective": self.objective.name,
            "mode": self.objective.mode,
            "seed": self.seed,
            "max_attempts": self.max_attempts,
            "trial_timeout": self.trial_timeout,
            "worker_timeout": self.worker_timeout,
            "recycle_after": self.recycle_after,
            "n_trials": self._n_trials,
            "versions": _versions(),
        }

    # -- running -------------------------------------------------------------------
    def _prepare(
        self,
        client: Client,
        n_trials: int | None,
        max_concurrent: int | None,
        timeout: float | None,
        progress: Any,
    ) -> Any:
        from toolkit.runner import Runner

        if self._thread is not None and self._thread.is_alive():
            raise JournalError(f"experiment {self.name!r} is already running; call wait() or stop() first.")
        if max_concurrent is not None:
            _check_positive_int("max_concurrent", max_concurrent, "max_concurrent=4")
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ConfigError(f"timeout must be a positive number of seconds or None; got {timeout!r}.")
        existing = Journal.exists(self.path)
        self._n_trials = self.check(n_trials)
        with self._writing():
            if not existing:
                Journal.create(self.path, self.spec())
            lock = self.journal.lock()
            lock.acquire()
        self._lock = lock
        try:
            with self._writing():
                if existing:
                    self.journal.write_spec(self.spec())
                trials = fold(self.journal.events(), self.objective)
            self.searcher.setup(self.space, self.objective)
            self.searcher.restore([rec.to_trial() for rec in trials.values()])
            if self.scheduler is not None and hasattr(self.scheduler, "setup"):
                self.scheduler.setup(self.objective)
            run_event = {
                "event": "run",
                "t": time.time(),
                "n_trials": self._n_trials,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "resumed": existing,
                "scheduler_address": getattr(client, "scheduler", None) and client.scheduler.address,
            }
            with self._writing():
                self.journal.append([run_event])
            runner = Runner(self, client, trials, self._n_trials, max_concurrent, timeout, progress)
        except BaseException:
            self._release()
            raise
        self._runner = runner
        self._started_at = time.time()
        return runner

    def check(self, n_trials: int | None = None) -> int:
        """Raise now what :meth:`run` would refuse before its first trial; start and write nothing.

        Refused: a folder that holds a search over another space, a folder a live search holds, and a
        new search without ``n_trials``. Call it before starting a cluster (the ``darch`` command
        does), so that a mistake costs no SLURM job. Returns the number of trials the run will have.

        Examples
        --------
        >>> from toolkit.evaluators import SyntheticEvaluator
        >>> from toolkit.spaces import mlp
        >>> Experiment("x", mlp, SyntheticEvaluator(), log_dir="/tmp/darch-doc-check").check(n_trials=4)
        4
        """
        if Journal.exists(self.path):
            spec = self.journal.spec()
            fp = (spec.get("space") or {}).get("fingerprint")
            if fp != self.space.fingerprint:
                raise JournalError(
                    f"{self.path} holds a search over a different space (fingerprint {fp}, this space is "
                    f"{self.space.fingerprint}): its configs would not replay. Use the space it was run with, "
                    "or another experiment name."
                )
            if n_trials is None:
                n_trials = spec.get("n_trials")
            self.journal.lock().check()
        else:
            self._check_log_dir()
        if n_trials is None:
            raise ConfigError("n_trials is required for a new search; for example exp.run(n_trials=16).")
        return _check_positive_int("n_trials", n_trials, "n_trials=16")

    def _check_log_dir(self) -> None:
        """Refuse a log_dir that cannot hold a new experiment folder (before a cluster starts)."""
        folder = self.path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        problem = None
        if not folder.is_dir():
            problem = f"{folder} is a file, not a folder"
        elif not os.access(folder, os.W_OK | os.X_OK):
            problem = f"{folder} is not writable by this user"
        if problem:
            raise JournalError(
                f"cannot create the experiment folder {self.path}: {problem}. Make log_dir a writable folder "
                "(log_dir= / --log-dir), then run again."
            )

    @contextlib.contextmanager
    def _writing(self) -> Any:
        """Turn an OSError of the journal folder (disk full, read-only, not a folder) into a JournalError."""
        try:
            yield
        except OSError as exc:
            raise JournalError(
                f"could not write to the experiment folder {self.path}: {exc}. No trial was started and "
                "everything recorded before is intact. Make log_dir a writable folder with free space "
                "(or choose another with log_dir= / --log-dir), then run again."
            ) from exc

    def _release(self) -> None:
        try:
            self.journal.close()
        except OSError as exc:  # a full disk: the runner already reported it
            logger.warning("closing the journal %s failed: %s", self.journal.file, exc)
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _progress(self, enabled: bool, runner_total: int, initial: int) -> Any:
        if not enabled:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=runner_total, initial=initial, desc=self.name, unit="trial", dynamic_ncols=True)

    def run(
        self,
        client: Client | str | None = None,
        n_trials: int | None = None,
        max_concurrent: int | None = None,
        timeout: float | None = None,
        progress: bool = True,
    ) -> pd.DataFrame:
        """Run the search until ``n_trials`` trials are finished or failed; return :meth:`results`.

        With no client, an embedded LocalCluster (one single-threaded worker
        process per core) is started and closed afterwards; an address such as
        ``"tcp://10.0.0.5:8786"`` connects to a running Dask scheduler (see
        :func:`toolkit.cluster.connect`). If the folder already holds this
        search (same space), it is continued.
        """
        self.check(n_trials)  # refuse a mistake before a cluster is started
        own: tuple[Any, Any] | None = None
        if client is None:
            from distributed import Client as _Client

            cluster = embedded_cluster()
            client = _Client(cluster)
            own = (client, cluster)
        elif isinstance(client, str):
            from toolkit.cluster import connect

            client = connect(client)
            own = (client, None)
        try:
            self._run_blocking(client, n_trials, max_concurrent, timeout, progress)
        finally:
            if own is not None:
                own[0].close()
                if own[1] is not None:
                    own[1].close()
        return self.results()

    def _run_blocking(self, client, n_trials, max_concurrent, timeout, progress) -> None:
        runner = self._prepare(client, n_trials, max_concurrent, timeout, None)
        try:
            self._announce(client, progress)
            done = runner.n_finished + runner.n_failed
            runner.progress = self._progress(progress, self._n_trials, done)
            runner.run()
        finally:
            if runner.progress is not None:
                runner.progress.close()
            self._release()

    def _announce(self, client: Client, progress: bool) -> None:
        link = getattr(client, "dashboard_link", None)
        msg = f"darch: experiment {self.name!r} -> {self.path}"
        if link:
            msg += f" | Dask dashboard: {link}"
        logger.info(msg)
        if progress:
            from tqdm.auto import tqdm

            tqdm.write(msg)

    def start(
        self,
        client: Client,
        n_trials: int | None = None,
        max_concurrent: int | None = None,
        timeout: float | None = None,
        progress: bool = True,
    ) -> Experiment:
        """Start the search in the background and return at once (for notebooks).

        Read :meth:`results` while it runs; :meth:`wait` blocks until it ends
        and :meth:`stop` cancels the trials in flight.
        """
        if client is None:
            raise ConfigError(
                "start() needs a client, because the search outlives the call; for example "
                "start(Client(LocalCluster())) — or use run() for an embedded cluster."
            )
        self._error = None
        runner = self._prepare(client, n_trials, max_concurrent, timeout, None)
        self._announce(client, progress)
        runner.progress = self._progress(progress, self._n_trials, runner.n_finished + runner.n_failed)

        def target() -> None:
            try:
                runner.run()
            except BaseException as exc:  # noqa: BLE001 - re-raised by wait()
                self._error = exc
                logger.exception("the search %r stopped with an error", self.name)
            finally:
                if runner.progress is not None:
                    runner.progress.close()
                self._release()

        self._thread = threading.Thread(target=target, name=f"darch-{self.name}", daemon=True)
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """Whether a search started with :meth:`start` is still running."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> pd.DataFrame:
        """Block until a search started with :meth:`start` ends; return :meth:`results`."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"the search {self.name!r} is still running after {timeout} s")
        if self._error is not None:
            err, self._error = self._error, None
            raise err
        return self.results()

    def stop(self, wait: bool = True) -> None:
        """Cancel the trials in flight (recorded as *stopped*) and end the search."""
        if self._runner is not None:
            self._runner.stop()
        if wait and self._thread is not None:
            self._thread.join()

    # -- resume --------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str], **overrides: Any) -> Experiment:
        """Rebuild the experiment recorded in ``path`` (objects may be overridden)."""
        path = Path(path)
        journal = Journal.open(path)
        spec = journal.spec()
        space = overrides.pop("space", None)
        if space is None:
            sp = spec.get("space") or {}
            space = SearchSpace(import_object(sp.get("fn", ""), "space"), **(sp.get("kwargs") or {}))
        evaluator = overrides.pop("evaluator", None) or _build(spec.get("evaluator"), "evaluator", EVALUATORS)
        searcher = overrides.pop("searcher", None) or _build(spec.get("searcher"), "searcher", SEARCHERS)
        scheduler = overrides.pop("scheduler", None) or _build(spec.get("scheduler"), "scheduler", SCHEDULERS)
        exp = cls(
            path.name,
            space,
            evaluator,
            searcher=searcher,
            scheduler=scheduler,
            objective=spec.get("objective", "val_accuracy"),
            mode=spec.get("mode", "max"),
            log_dir=path.parent,
            seed=spec.get("seed", 0),
            max_attempts=spec.get("max_attempts", 3),
            trial_timeout=spec.get("trial_timeout"),
            worker_timeout=spec.get("worker_timeout", 600.0),
            recycle_after=spec.get("recycle_after"),
        )
        exp._n_trials = spec.get("n_trials")
        return exp

    @classmethod
    def resume(
        cls,
        path: str | os.PathLike[str],
        client: Client | None = None,
        n_trials: int | None = None,
        progress: bool = True,
        **overrides: Any,
    ) -> Experiment:
        """Continue an interrupted search: finished trials stay, trials in flight run again.

        The space, searcher and evaluator are rebuilt from ``experiment.json``
        unless given; a space whose fingerprint differs from the journal's is
        refused.
        """
        run_kw = {k: overrides.pop(k) for k in ("max_concurrent", "timeout") if k in overrides}
        exp = cls.load(path, **overrides)
        exp.run(client, n_trials=n_trials, progress=progress, **run_kw)
        return exp

    # -- results -------------------------------------------------------------------
    def _best_value(self, trials: dict[int, TrialRecord]) -> float | None:
        best = None
        for rec in trials.values():
            if rec.status == TrialStatus.FINISHED and (
                best is None or self.objective.better(rec.value, best)
            ):
                best = rec.value
        return best

    def results(self) -> pd.DataFrame:
        """One row per trial (see :func:`toolkit.results.load_results`)."""
        from toolkit.results import load_results

        return load_results(self.path).frame()

    def curves(self) -> xr.Dataset:
        """Per-epoch learning curves as an ``xarray.Dataset`` with dims ``(trial, epoch)``."""
        from toolkit.results import load_results

        return load_results(self.path).curves()

    def best(self) -> pd.Series:
        """The best finished trial's row."""
        from toolkit.results import load_results

        return load_results(self.path).best()

    def retrain(
        self,
        trial: Any = None,
        epochs: int | None = None,
        client: Client | None = None,
        dataset: Any = None,
        **kw: Any,
    ) -> dict[str, Any]:
        """Retrain a trial's architecture (default: the best) on the full training set, on a worker.

        Saves the model as ``.keras`` in the trial's folder and returns its test
        accuracy and the model's path (see :func:`toolkit.retrain.retrain`).
        """
        from toolkit.retrain import retrain

        return retrain(
            self, self.best() if trial is None else trial, epochs=epochs, client=client, dataset=dataset, **kw
        )

    def architecture(self, trial: Any) -> Any:
        """The architecture description of a trial (an id or a results row), replayed from its config."""
        from toolkit.retrain import trial_architecture

        return trial_architecture(self, trial)

    # -- display -------------------------------------------------------------------
    def _status(self) -> dict[str, Any]:
        if self._runner is not None:
            c = self._runner.counts()
            best = self._runner.best
        elif Journal.exists(self.path):
            trials = fold(self.journal.events(("sampled", "finished", "failed", "promoted", "stopped")))
            c = {
                "finished": sum(t.status == TrialStatus.FINISHED for t in trials.values()),
                "failed": sum(t.status == TrialStatus.FAILED for t in trials.values()),
                "running": 0,
            }
            best = self._best_value(trials)
        else:
            c, best = {"finished": 0, "failed": 0, "running": 0}, None
        state = "running" if self.running else ("finished" if c["finished"] + c["failed"] else "new")
        return {**c, "best": best, "state": state}

    def __repr__(self) -> str:
        s = self._status()
        return (
            f"<Experiment {self.name!r} {s['state']}: {s['finished']} finished, {s['failed']} failed, "
            f"{s['running']} running, best {self.objective.name}={s['best']} | {self.path}>"
        )

    def _repr_html_(self) -> str:
        s = self._status()
        rows = [
            ("State", s["state"]),
            ("Journal", str(self.path)),
            (
                "Space",
                f"{self.space.path} ({len(self.space.describe())} hyperparameters, {self.space.fingerprint})",
            ),
            ("Searcher", repr(self.searcher)),
            ("Scheduler", repr(self.scheduler) if self.scheduler is not None else "none"),
            ("Evaluator", repr(self.evaluator)),
            ("Objective", f"{self.objective.name} ({self.objective.mode})"),
            (
                "Trials",
                f"{s['finished']} finished, {s['failed']} failed, {s['running']} running"
                + (f" of {self._n_trials}" if self._n_trials else ""),
            ),
            ("Best", "—" if s["best"] is None else f"{s['best']:.5g}"),
        ]
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>{html.escape(str(v))}</td></tr>"
            for k, v in rows
        )
        return f"<div><strong>darch Experiment: {html.escape(self.name)}</strong><table>{body}</table></div>"
