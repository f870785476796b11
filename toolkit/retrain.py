"""Retrain a chosen trial on the full training set, on a Dask worker, and score it on the test set.

A search scores each architecture on a validation split held out of the
training set. Once a trial is chosen, :func:`retrain` replays its config into
the same architecture and trains it again on *all* the training examples (the
validation split included), with the experiment's
:class:`~toolkit.evaluators.keras.KerasClassifierEvaluator` settings (dataset,
batch size, optimizer defaults, threads, device, builders). It then scores the
test set once and saves the model as ``<trial folder>/retrained.keras`` next to
a ``retrained.json`` summary.

Training runs on a worker (``client.submit``, with ``resources={"GPU": 1}``
when the workers advertise GPUs), or on a one-worker LocalCluster started for
the call when no client is given. The calling process, typically the notebook
kernel, never imports TensorFlow.

Examples
--------
>>> # exp = Experiment("mnist", SearchSpace(conv_net), KerasClassifierEvaluator(dataset="digits"))
>>> # exp.run(client, n_trials=16)
>>> # out = retrain(exp, exp.best(), client=client)          # the best trial, its best epoch count
>>> # out["test_accuracy"], out["model_path"]
>>> # (0.97, '.../logs/mnist/trials/000011/retrained.keras')
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from toolkit.errors import ConfigError

if TYPE_CHECKING:
    from distributed import Client

    from toolkit.experiment import Experiment

__all__ = ["retrain", "trial_architecture", "trial_config", "trial_id_of"]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- which trial


def trial_id_of(trial: Any) -> int:
    """The trial id of ``trial``: an id, a results row (``pandas.Series``) or a dict with ``trial_id``.

    Examples
    --------
    >>> trial_id_of(3), trial_id_of({"trial_id": 7})
    (3, 7)
    >>> trial_id_of("best")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    toolkit.errors.ConfigError: trial must be a trial id (int) or a row of exp.results() ...
    """
    value = trial
    if hasattr(trial, "get") and not isinstance(trial, (int, np.integer)):
        value = trial.get("trial_id", trial.get("trial"))
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ConfigError(
            f"trial must be a trial id (int) or a row of exp.results() with a 'trial_id'; got "
            f"{type(trial).__name__} {trial!r:.120}. For example retrain(exp, exp.best()) or retrain(exp, 3)."
        )
    return int(value)


def _experiment(experiment: Experiment | str | os.PathLike[str]) -> Experiment:
    from toolkit.experiment import Experiment

    if isinstance(experiment, Experiment):
        return experiment
    if isinstance(experiment, (str, os.PathLike)):
        return Experiment.load(experiment)
    raise ConfigError(
        f"experiment must be an Experiment or its folder (logs/<name>); got {type(experiment).__name__}."
    )


def trial_config(experiment: Experiment | str | os.PathLike[str], trial: Any) -> dict[str, Any]:
    """The config a trial was sampled with, read from the journal.

    Parameters
    ----------
    experiment
        An :class:`~toolkit.Experiment` or its folder.
    trial
        A trial id or a results row.

    Returns
    -------
    dict
        The flat ``{name: value}`` config, as the searcher proposed it.

    Raises
    ------
    toolkit.errors.ConfigError
        When the journal has no such trial.

    Examples
    --------
    >>> # trial_config(exp, 3)
    >>> # {'conv_blocks': 2, 'conv0/filters': 32, ...}
    """
    exp = _experiment(experiment)
    tid = trial_id_of(trial)
    for ev in exp.journal.events(("sampled",)):
        if ev.get("trial") == tid:
            return dict(ev.get("config") or {})
    raise ConfigError(
        f"the journal {exp.path} has no trial {tid}; its trials are the trial_id column of exp.results()."
    )


def trial_architecture(experiment: Experiment | str | os.PathLike[str], trial: Any) -> dict[str, Any]:
    """The architecture of a trial: its config replayed on the experiment's space.

    Examples
    --------
    >>> # from toolkit.draw import draw_architecture
    >>> # draw_architecture(trial_architecture(exp, exp.best()))
    """
    exp = _experiment(experiment)
    return exp.space.replay(trial_config(exp, trial))


# --------------------------------------------------------------------------- the worker task


def _fit_final(payload: dict[str, Any]) -> dict[str, Any]:
    """Runs on a worker: build, train on the whole training set, score the test set, save ``.keras``."""
    from toolkit.evaluators.builders import build_model, register_builder
    from toolkit.evaluators.datasets import load_dataset
    from toolkit.evaluators.keras import _setup_process

    settings = payload["settings"]
    device = _setup_process(int(settings["threads"]), str(settings["device"]))
    import keras

    for type_name, fn in (settings.get("builders") or {}).items():
        register_builder(type_name, fn)
    x_train, y_train, x_test, y_test = load_dataset(payload["dataset"])
    arch = payload["arch"]
    seed = int(payload["seed"]) % 2**32
    keras.backend.clear_session(free_memory=False)
    try:
        keras.utils.set_random_seed(seed)
        model, notes = build_model(
            arch,
            x_train.shape[1:],
            seed,
            optimizer=settings["optimizer"],
            learning_rate=settings["learning_rate"],
        )
        num_params = int(model.count_params())
        max_params = settings.get("max_params")
        if max_params is not None and num_params > max_params:
            raise ConfigError(
                f"the model has {num_params:,} parameters, over the evaluator's max_params={max_params:,}."
            )
        began = time.perf_counter()
        fit = model.fit(
            x_train,
            y_train,
            batch_size=int(settings["batch_size"]),
            epochs=int(payload["epochs"]),
            shuffle=True,
            verbose=0,
            callbacks=[keras.callbacks.TerminateOnNaN()],
        )
        train_time = time.perf_counter() - began
        history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
        losses = history.get("loss", [])
        if len(losses) < int(payload["epochs"]) or not all(math.isfinite(v) for v in losses):
            raise RuntimeError(
                f"retraining diverged: the loss became {losses[-1] if losses else 'NaN'} at epoch "
                f"{len(losses)} (learning_rate {arch.get('learning_rate')}, batch_size "
                f"{settings['batch_size']}); try fewer epochs or another trial."
            )
        test_loss, test_accuracy = model.evaluate(
            x_test, y_test, batch_size=max(int(settings["batch_size"]), 256), verbose=0
        )[:2]
        path = payload["model_path"]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = os.path.join(os.path.dirname(path), f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}.keras")
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        keras.backend.clear_session(free_memory=True)
    worker = None
    try:
        from distributed import get_worker

        worker = get_worker().address
    except (ImportError, ValueError):
        pass
    return {
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "train_accuracy": history.get("accuracy", [math.nan])[-1],
        "train_loss": losses[-1],
        "num_params": num_params,
        "num_train": len(x_train),
        "num_test": len(x_test),
        "train_time_s": train_time,
        "history": {"epoch": list(range(1, len(losses) + 1)), **history},
        "notes": notes,
        "model_path": path,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "worker": worker,
        "device": device,
    }


# --------------------------------------------------------------------------- the call


def _resources(client: Client, wanted: Mapping[str, float]) -> dict[str, float] | None:
    """Ask for ``wanted`` only when some worker advertises those resources (as the runner does)."""
    if not wanted:
        return None
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    if any(all(k in (w.get("resources") or {}) for k in wanted) for w in workers.values()):
        return dict(wanted)
    return None


def retrain(
    experiment: Experiment | str | os.PathLike[str],
    trial: Any,
    epochs: int | None = None,
    client: Client | None = None,
    dataset: str | dict[str, Any] | None = None,
    *,
    seed: int | None = None,
    name: str = "retrained",
    timeout: float | None = None,
) -> dict[str, Any]:
    """Train a trial's architecture on the full training set on a worker; return its test accuracy.

    Parameters
    ----------
    experiment
        The :class:`~toolkit.Experiment` (or its folder) whose evaluator is a
        :class:`~toolkit.evaluators.keras.KerasClassifierEvaluator`.
    trial
        A trial id or a row of ``exp.results()`` (``exp.best()``).
    epochs
        Epochs to train; default the trial's ``best_epoch`` (where its
        validation score peaked), else the evaluator's ``epochs``.
    client
        A Dask client; ``None`` starts a one-worker LocalCluster for the call.
    dataset
        A dataset spec (:mod:`toolkit.evaluators.datasets`); default the
        evaluator's. All its training examples are used: no validation split.
    seed
        Default: the evaluator's fixed ``seed``, else the trial's own seed.
    name
        Base name of the saved files in the trial's folder: ``<name>.keras``
        and ``<name>.json``.
    timeout
        Seconds to wait for the worker before a :class:`TimeoutError`.

    Returns
    -------
    dict
        ``trial_id``, ``test_accuracy``, ``test_loss``, ``model_path``,
        ``epochs``, ``dataset``, ``seed``, ``num_params``, ``num_train``,
        ``num_test``, ``train_accuracy``, ``train_loss``, ``train_time_s``,
        ``history``, ``host``, ``worker``, ``device``, and the trial's
        search score ``search_<objective>``. The same dict is written to
        ``<name>.json`` in the trial's folder.

    Raises
    ------
    toolkit.errors.ConfigError
        For an evaluator other than the Keras one, an unknown trial, or bad
        ``epochs`` or ``dataset``.

    Examples
    --------
    >>> # out = retrain(exp, exp.best(), client=client)
    >>> # print(f"test accuracy {out['test_accuracy']:.3f}, saved to {out['model_path']}")

    Only a Keras search has a model to retrain:

    >>> import tempfile
    >>> from toolkit import Experiment, SearchSpace
    >>> from toolkit.evaluators import SyntheticEvaluator
    >>> from toolkit.spaces import mlp
    >>> exp = Experiment("s", SearchSpace(mlp), SyntheticEvaluator(), log_dir=tempfile.mkdtemp())
    >>> retrain(exp, 0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    toolkit.errors.ConfigError: retrain trains with the experiment's KerasClassifierEvaluator settings, ...
    """
    from toolkit.evaluators.datasets import normalize_spec
    from toolkit.evaluators.keras import KerasClassifierEvaluator
    from toolkit.journal import write_json_atomic
    from toolkit.runner import trial_seed

    exp = _experiment(experiment)
    ev = exp.evaluator
    if not isinstance(ev, KerasClassifierEvaluator):
        raise ConfigError(
            f"retrain trains with the experiment's KerasClassifierEvaluator settings, but {exp.name!r} was "
            f"searched with {ev!r}, which has no model to retrain. Search with "
            "KerasClassifierEvaluator(dataset=...) to retrain its trials."
        )
    ev.validate()
    tid = trial_id_of(trial)
    config = trial_config(exp, tid)
    arch = exp.space.replay(config)
    row: Mapping[str, Any] = {}
    try:
        df = exp.results()
        match = df[df["trial_id"] == tid]
        if len(match):
            row = match.iloc[0]
    except Exception as exc:  # noqa: BLE001 - the row only supplies defaults
        logger.debug("could not read the results of %s: %s", exp.path, exc)
    status = str(row.get("status")) if len(row) else "unknown"
    if status != "finished":
        logger.warning("trial %d has status %s; retraining it anyway", tid, status)
    if epochs is None:
        best_epoch = row.get("best_epoch") if len(row) else None
        epochs = int(best_epoch) if best_epoch is not None and not _isna(best_epoch) else int(ev.epochs)
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ConfigError(
            f"epochs must be a positive integer; got {epochs!r}. For example retrain(exp, 3, epochs=5)."
        )
    spec = ev.dataset if dataset is None else dataset
    normalize_spec(spec)
    if seed is None:
        seed = ev.seed if ev.seed is not None else trial_seed(exp.seed, tid)
    folder = exp.journal.trial_dir(tid, create=True).resolve()
    model_path = folder / f"{name}.keras"
    payload = {
        "arch": arch,
        "dataset": spec,
        "epochs": int(epochs),
        "seed": int(seed),
        "model_path": str(model_path),
        "settings": {
            k: getattr(ev, k)
            for k in (
                "batch_size",
                "optimizer",
                "learning_rate",
                "threads",
                "device",
                "max_params",
                "builders",
            )
        },
    }
    own = None
    if client is None:
        from distributed import Client as _Client

        from toolkit.experiment import embedded_cluster

        cluster = embedded_cluster(n_workers=1)
        client = _Client(cluster)
        own = (client, cluster)
    try:
        logger.info("retraining trial %d of %s for %d epochs on %s", tid, exp.name, epochs, spec)
        future = client.submit(
            _fit_final,
            payload,
            pure=False,
            resources=_resources(client, getattr(ev, "resources", {}) or {}),
            key=f"darch-retrain-{exp.name}-{tid}-{uuid.uuid4().hex[:8]}",
        )
        out = future.result(timeout=timeout)
    finally:
        if own is not None:
            own[0].close()
            own[1].close()
    objective = exp.objective.name
    result = {
        "trial_id": tid,
        "epochs": int(epochs),
        "dataset": spec,
        "seed": int(seed),
        f"search_{objective}": _float(row.get(objective)) if len(row) else None,
        "config": config,
        **out,
    }
    write_json_atomic(Path(folder) / f"{name}.json", result)
    return result


def _isna(value: Any) -> bool:
    try:
        import pandas as pd

        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
