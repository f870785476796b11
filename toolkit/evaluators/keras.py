"""The Keras classifier evaluator: trains one architecture on a worker and scores it.

:class:`KerasClassifierEvaluator` follows the protocol of
:mod:`toolkit.evaluators.base`. Its ``__init__`` only stores settings; Keras is
imported inside :meth:`~KerasClassifierEvaluator.__call__`, which runs on a
worker, so the search process never imports TensorFlow.

One call (one trial):

1. configures the worker process once (TF thread counts, quiet logs, GPU
   memory growth) and registers any builders passed with ``builders=``;
2. takes the dataset from the process cache (:mod:`toolkit.evaluators.datasets`)
   and splits off a validation set with a seeded shuffle (``split_seed``, the
   same for every trial, so trials are compared on the same examples);
3. builds the model with explicit per-layer seeds
   (:mod:`toolkit.evaluators.builders`), refuses it before training when it
   has more than ``max_params`` parameters, trains ``budget`` epochs (or
   continues from the checkpoint in ``trial_dir`` when ``resume=True``), and
   keeps the weights of the best epoch;
4. writes a checkpoint to ``trial_dir`` and returns a flat result dict.

Result keys
-----------
``val_accuracy``, ``val_loss``
    At the best epoch (by ``monitor``, over every epoch trained so far,
    resumed ones included).
``best_epoch``, ``epochs``
    The best epoch and the last epoch reached (1-based; ``epochs`` is less
    than the budget when early stopping ended the trial).
``last_val_accuracy``, ``last_val_loss``, ``min_val_loss``
    At the last epoch, and the lowest validation loss seen.
``history``
    ``{"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "epoch_time_s"}``
    lists for the epochs trained *in this call*: ``k+1 .. n`` when resumed
    from epoch ``k``.
``full_history``
    Only when resumed: the same lists for every epoch ``1 .. n``.
``trained_epochs``, ``resumed_from_epoch``, ``stopped_early``
    Epochs trained in this call, the checkpoint's epoch ``k`` (0 when fresh),
    and whether early stopping ended training.
``num_params``, ``train_time_s``, ``inference_time_per_example_s``
    Parameter count; wall time of ``fit`` in this call; seconds per example of
    the fastest validation pass (forward pass and metrics, ``batch_size`` at a
    time), ``None`` when nothing was trained.
``test_accuracy``, ``test_loss``
    Only with ``test=True``: on the test set, with the best epoch's weights.
``host``, ``pid``, ``device``, ``backend``, ``seed``, ``num_train``, ``num_val``, ``notes``
    Where and how it ran; ``notes`` holds the builder's adaptations, e.g.
    ``{"skipped_pooling": [2]}``.
``rss_mb``, ``process_trials``
    Resident memory of the worker process after the trial (Keras state
    cleared; a full garbage collection runs every 10th trial) and how many
    trials this process has run, so a runner can recycle workers: memory
    grows by about 10 MB per trial and is not given back.

Checkpoints
-----------
With ``trial_dir``, ``checkpoint="end"`` (the default) saves the model as it
is after its last epoch (optimizer state included) to
``checkpoint-eNNNN.keras``, the best epoch's weights to ``best-eNNNN.npz``
when the best is not the last epoch, and ``keras_state.json`` with the epoch
reached and the history so far. ``checkpoint="epoch"`` saves after every
epoch (for walltime kills); ``"none"`` saves nothing. With ``resume=True``
and a larger budget, training continues from the saved epoch ``k`` with
``initial_epoch=k`` and trains only epochs ``k+1 .. n``. A trial that early
stopping ended is not trained further. ``resume=True`` with no checkpoint in
``trial_dir`` starts afresh.

Examples
--------
>>> ev = KerasClassifierEvaluator(dataset="digits", epochs=2)
>>> ev  # doctest: +ELLIPSIS
KerasClassifierEvaluator(dataset='digits', epochs=2, batch_size=64, ...)
>>> result = ev(arch, config=config, seed=0)  # doctest: +SKIP
>>> result["val_accuracy"], result["best_epoch"], len(result["history"]["epoch"])  # doctest: +SKIP
(0.93, 2, 2)
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import json
import logging
import math
import os
import socket
import sys
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from toolkit.errors import ConfigError, did_you_mean
from toolkit.evaluators.base import Evaluator
from toolkit.evaluators.builders import OPTIMIZERS, build_model, derive_seed, register_builder
from toolkit.evaluators.datasets import check_dataset, dataset_key, load_dataset, normalize_spec

__all__ = ["DivergedError", "KerasClassifierEvaluator", "TrialOutOfMemoryError", "process_info"]

logger = logging.getLogger(__name__)

STATE_FILE = "keras_state.json"
_HISTORY_KEYS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "epoch_time_s")
_CHECKPOINT_MODES = ("end", "epoch", "none")
_DEVICES = ("auto", "cpu", "gpu")
_GC_EVERY = 10

# Per-process state of a worker (never shared: each worker is its own process).
_PROCESS: dict[str, Any] = {
    "configured": None,
    "device": "CPU",
    "backend": None,
    "trials": 0,
    "warned": False,
}
_SPLITS: dict[tuple[Any, ...], tuple[np.ndarray, ...]] = {}


class DivergedError(RuntimeError):
    """Training produced a NaN or infinite loss; the trial fails instead of being scored."""


class TrialOutOfMemoryError(RuntimeError):
    """The model or its batch did not fit in the worker's (GPU or host) memory."""


def process_info() -> dict[str, Any]:
    """This process's evaluator state: trials run, device, backend, RSS (for ``client.run``).

    Examples
    --------
    >>> sorted(process_info())
    ['backend', 'device', 'rss_mb', 'trials']
    """
    return {
        "trials": _PROCESS["trials"],
        "device": _PROCESS["device"],
        "backend": _PROCESS["backend"],
        "rss_mb": _rss_mb(),
    }


class KerasClassifierEvaluator(Evaluator):
    """Train a Keras classifier built from the trial's architecture and report its scores.

    Parameters
    ----------
    dataset
        A dataset spec: ``"digits"`` (default), ``"mnist:/path/mnist.npz"``,
        ``{"name": "mnist", "path": ..., "subset": n}`` or
        ``"package.module:function"``; see :mod:`toolkit.evaluators.datasets`.
    epochs
        Epochs to train when the runner gives no budget (a budget is epochs).
    batch_size
        Examples per gradient step.
    validation_fraction
        Share of the training set held out for validation, in ``(0, 1)``; it is
        chosen by a shuffle seeded with ``split_seed`` (Keras' ``validation_split``,
        which takes the last examples, is not used).
    split_seed
        Seed of that split; keep it fixed so that all trials see the same
        validation examples.
    patience
        Stop after this many epochs without improvement of ``monitor``;
        ``None`` trains the whole budget. The best epoch's weights are restored
        either way before the test set is scored.
    monitor
        ``"val_accuracy"`` (maximised) or ``"val_loss"`` (minimised): what
        "best epoch" means.
    optimizer, learning_rate
        Used when the architecture does not choose its own
        (``arch["optimizer"]``, ``arch["learning_rate"]``). Optimizers:
        ``adam``, ``sgd``, ``rmsprop``, ``adamw``, ``nadam``.
    seed
        ``None`` (default): each trial uses the seed the runner gives it. An
        int: every trial uses this seed, so differences come from the config
        alone.
    max_params
        Refuse (before training) a model with more parameters than this.
    test
        Also score the test set and report ``test_accuracy`` and ``test_loss``.
    threads
        TensorFlow intra- and inter-op threads per worker process. It takes
        effect only before TensorFlow starts in that process; results are
        bit-identical across processes only for the same thread count.
    device
        ``"auto"`` uses a visible GPU (with memory growth) or the CPU,
        ``"cpu"`` hides GPUs, ``"gpu"`` fails the trial when no GPU is visible.
    checkpoint
        ``"end"``, ``"epoch"`` or ``"none"``: when to write the checkpoint that
        ``resume=True`` continues from (only when the runner gives a
        ``trial_dir``).
    builders
        ``{type: "package.module:function"}`` (or functions) registered on the
        worker before building, for architecture types of your own; see
        :func:`toolkit.evaluators.builders.register_builder`.

    Examples
    --------
    >>> from toolkit import SearchSpace
    >>> from toolkit.spaces import conv_net
    >>> space = SearchSpace(conv_net)
    >>> config = space.sample(0)
    >>> ev = KerasClassifierEvaluator(epochs=2, patience=3, max_params=200_000)
    >>> ev.get_params()["epochs"]
    2
    >>> result = ev(space.replay(config), config=config, seed=0)  # doctest: +SKIP
    >>> sorted(result["history"])  # doctest: +SKIP
    ['accuracy', 'epoch', 'epoch_time_s', 'loss', 'val_accuracy', 'val_loss']
    """

    #: One trial per GPU, asked for only when the cluster's workers advertise GPUs.
    resources: ClassVar[dict[str, float]] = {"GPU": 1}

    def __init__(
        self,
        dataset: str | dict[str, Any] = "digits",
        epochs: int = 5,
        batch_size: int = 64,
        validation_fraction: float = 0.2,
        split_seed: int = 0,
        patience: int | None = None,
        monitor: str = "val_accuracy",
        optimizer: str = "adam",
        learning_rate: float = 1e-3,
        seed: int | None = None,
        max_params: int | None = None,
        test: bool = False,
        threads: int = 1,
        device: str = "auto",
        checkpoint: str = "end",
        builders: dict[str, Any] | None = None,
    ):
        self.dataset = dataset
        self.epochs = epochs
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.split_seed = split_seed
        self.patience = patience
        self.monitor = monitor
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.seed = seed
        self.max_params = max_params
        self.test = test
        self.threads = threads
        self.device = device
        self.checkpoint = checkpoint
        self.builders = builders

    # ------------------------------------------------------------------ settings
    def validate(self) -> None:
        """Raise :class:`~toolkit.errors.ConfigError` for an invalid setting (no TensorFlow needed).

        Examples
        --------
        >>> KerasClassifierEvaluator(batch_size=0).validate()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        toolkit.errors.ConfigError: batch_size must be an int >= 1; got 0. ...
        """

        def positive_int(name: str, value: Any, allow_none: bool = False, low: int = 1) -> None:
            if value is None and allow_none:
                return
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(
                    f"{name} must be an int >= {low}{' or None' if allow_none else ''}; got {value!r}. "
                    f"Write, for example, KerasClassifierEvaluator({name}={max(low, 1) * 5})."
                )

        positive_int("epochs", self.epochs)
        positive_int("batch_size", self.batch_size)
        positive_int("patience", self.patience, allow_none=True)
        positive_int("max_params", self.max_params, allow_none=True)
        positive_int("threads", self.threads)
        positive_int("split_seed", self.split_seed, low=0)
        positive_int("seed", self.seed, allow_none=True, low=0)
        frac = self.validation_fraction
        if not isinstance(frac, (int, float)) or isinstance(frac, bool) or not 0.0 < frac < 1.0:
            raise ConfigError(
                f"validation_fraction must be a number in (0, 1); got {frac!r}. "
                "Write, for example, KerasClassifierEvaluator(validation_fraction=0.2)."
            )
        if self.monitor not in ("val_accuracy", "val_loss"):
            raise ConfigError(
                f"monitor must be 'val_accuracy' or 'val_loss'; got {self.monitor!r}"
                f"{did_you_mean(self.monitor, ['val_accuracy', 'val_loss'])}."
            )
        if str(self.optimizer).lower() not in OPTIMIZERS:
            raise ConfigError(
                f"optimizer must be one of {list(OPTIMIZERS)}; got {self.optimizer!r}"
                f"{did_you_mean(str(self.optimizer), OPTIMIZERS)}."
            )
        lr = self.learning_rate
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not (lr > 0 and math.isfinite(lr)):
            raise ConfigError(f"learning_rate must be a positive number; got {lr!r}.")
        for name, value, valid in (
            ("device", self.device, _DEVICES),
            ("checkpoint", self.checkpoint, _CHECKPOINT_MODES),
        ):
            if value not in valid:
                raise ConfigError(
                    f"{name} must be one of {list(valid)}; got {value!r}{did_you_mean(value, valid)}."
                )
        if self.builders is not None and not isinstance(self.builders, Mapping):
            raise ConfigError(
                f"builders must be a dict {{type: 'package.module:function'}}; got {self.builders!r}."
            )
        normalize_spec(self.dataset)

    def check(self) -> None:
        """The driver's check before any trial runs: :meth:`validate`, then the dataset file.

        A ``.npz`` dataset must exist and hold ``x_train, y_train, x_test, y_test``; see
        :func:`toolkit.evaluators.datasets.check_dataset`. No TensorFlow is imported.
        """
        self.validate()
        check_dataset(self.dataset)

    def _total_epochs(self, budget: float | None) -> int:
        if budget is None:
            return int(self.epochs)
        if not isinstance(budget, (int, float)) or isinstance(budget, bool) or not math.isfinite(budget):
            raise ConfigError(f"budget must be a number of epochs; got {budget!r}.")
        total = math.ceil(budget - 1e-9)
        if total < 1:
            raise ConfigError(f"budget must be at least 1 epoch; got {budget!r}.")
        return total

    # ------------------------------------------------------------------ the trial
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
        """Train ``arch`` up to ``budget`` epochs and return the result dict (see the module docstring)."""
        self.validate()
        total = self._total_epochs(budget)
        device = _setup_process(self.threads, self.device)
        import keras

        for type_name, fn in (self.builders or {}).items():
            register_builder(type_name, fn)
        trial_seed = int(self.seed if self.seed is not None else seed) % 2**32
        data = _split(self.dataset, float(self.validation_fraction), int(self.split_seed))
        _PROCESS["trials"] += 1
        keras.backend.clear_session(free_memory=False)
        try:
            result = self._train(arch, data, total, trial_dir, trial_seed, resume, device)
        except (ConfigError, DivergedError):
            raise
        except Exception as exc:
            if _is_oom(exc):
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise TrialOutOfMemoryError(
                    f"the trial ran out of memory on {device} (host {socket.gethostname()}, pid {os.getpid()}, "
                    f"batch_size={self.batch_size}): {type(exc).__name__}: {first[:500]}. Lower batch_size, "
                    "cap the model size with max_params, or give the workers more memory."
                ) from None
            raise
        finally:
            # A full gc.collect() costs 0.3-1.5 s in a process that holds TensorFlow and frees under 1 MB
            # per trial (measured on the 2-core machines), so collect every _GC_EVERY trials only.
            keras.backend.clear_session(free_memory=_PROCESS["trials"] % _GC_EVERY == 0)
        result["rss_mb"] = _rss_mb()
        result["process_trials"] = _PROCESS["trials"]
        return result

    def _train(
        self,
        arch: Any,
        data: tuple[np.ndarray, ...],
        total: int,
        trial_dir: str | None,
        trial_seed: int,
        resume: bool,
        device: str,
    ) -> dict[str, Any]:
        import keras

        x_train, y_train, x_val, y_val, x_test, y_test = data
        if not isinstance(arch, Mapping):
            raise ConfigError(
                f"KerasClassifierEvaluator needs the architecture dict that space.replay(config) returns; "
                f"got {type(arch).__name__} {arch!r:.200}."
            )
        _check_labels(arch, y_train, y_val)
        arch_sha = hashlib.sha256(json.dumps(arch, sort_keys=True, default=str).encode()).hexdigest()[:16]
        state = _read_state(trial_dir, arch_sha) if resume and trial_dir else None
        if resume and state is None:
            logger.info("resume=True but no checkpoint in %s: training from scratch", trial_dir)

        if state is not None:
            start = int(state["epoch"])
            prev = {k: list(v) for k, v in state["history"].items()}
            notes = dict(state.get("notes") or {})
            model = keras.models.load_model(os.path.join(trial_dir, state["checkpoint"]))
        else:
            start, prev = 0, {}
            keras.utils.set_random_seed(trial_seed)
            model, notes = build_model(
                arch,
                x_train.shape[1:],
                trial_seed,
                optimizer=self.optimizer,
                learning_rate=self.learning_rate,
            )
        num_params = int(model.count_params())
        if self.max_params is not None and num_params > self.max_params:
            raise ConfigError(
                f"the model has {num_params:,} parameters, over max_params={self.max_params:,}; it was "
                f"refused before training (architecture type {arch.get('type')!r}, input shape "
                f"{tuple(x_train.shape[1:])}). Raise max_params or narrow the search space."
            )

        stopped_before = bool(state and state.get("stopped_early"))
        callback = _trial_callback_class()(
            monitor=self.monitor,
            patience=self.patience,
            previous=prev,
            wait=int(state.get("wait", 0)) if state else 0,
            saver=(
                functools.partial(self._save, trial_dir, arch_sha, trial_seed, notes, num_params)
                if trial_dir and self.checkpoint == "epoch"
                else None
            ),
        )
        if state is not None and callback.best_epoch == start:
            callback.best_weights = model.get_weights()
        train_time = 0.0
        if start < total and not stopped_before:
            # A fresh trial seeds its shuffles from the trial seed; a resumed one from (seed, epoch).
            keras.utils.set_random_seed(
                trial_seed if start == 0 else derive_seed(trial_seed, "resume", start)
            )
            began = time.perf_counter()
            model.fit(
                x_train,
                y_train,
                batch_size=self.batch_size,
                epochs=total,
                initial_epoch=start,
                validation_data=(x_val, y_val),
                shuffle=True,
                verbose=0,
                callbacks=[callback],
            )
            train_time = time.perf_counter() - began
        if callback.diverged is not None:
            epoch, value = callback.diverged
            raise DivergedError(
                f"the model diverged: the loss became {value} at epoch {epoch} (optimizer "
                f"{arch.get('optimizer') or self.optimizer!r}, learning_rate "
                f"{arch.get('learning_rate') or self.learning_rate!r}, batch_size {self.batch_size}). The trial "
                "is failed rather than scored; lower the learning rate or add batch normalization."
            )
        history = callback.history
        full = _merge(prev, history)
        if not full.get("epoch"):
            raise ConfigError(f"nothing was trained (budget {total} epochs, checkpoint at epoch {start}).")
        last = int(full["epoch"][-1])
        stopped = stopped_before or callback.stopped_early
        if trial_dir and self.checkpoint != "none" and history["epoch"]:
            self._save(trial_dir, arch_sha, trial_seed, notes, num_params, model, callback, stopped)

        best_i = callback.best_index(full)
        result: dict[str, Any] = {
            "val_accuracy": full["val_accuracy"][best_i],
            "val_loss": full["val_loss"][best_i],
            "best_epoch": int(full["epoch"][best_i]),
            "epochs": last,
            "last_val_accuracy": full["val_accuracy"][-1],
            "last_val_loss": full["val_loss"][-1],
            "min_val_loss": min(full["val_loss"]),
            "trained_epochs": len(history["epoch"]),
            "resumed_from_epoch": start,
            "stopped_early": stopped,
            "history": history,
        }
        if start:
            result["full_history"] = full
        val_times = callback.val_times
        result.update(
            num_params=num_params,
            train_time_s=train_time,
            inference_time_per_example_s=min(val_times) / len(x_val) if val_times else None,
        )
        if self.test:
            self._restore_best(model, callback, trial_dir, state, full["epoch"][best_i], last)
            test_loss, test_accuracy = model.evaluate(
                x_test, y_test, batch_size=max(self.batch_size, 256), verbose=0
            )[:2]
            result.update(test_accuracy=float(test_accuracy), test_loss=float(test_loss))
        result.update(
            host=socket.gethostname(),
            pid=os.getpid(),
            device=device,
            backend=_PROCESS["backend"],
            seed=trial_seed,
            num_train=len(x_train),
            num_val=len(x_val),
            notes=notes,
        )
        return result

    def _restore_best(
        self, model: Any, callback: Any, trial_dir: str | None, state: dict | None, best_epoch: int, last: int
    ) -> None:
        if callback.best_weights is not None and callback.best_epoch == best_epoch:
            model.set_weights(callback.best_weights)
            return
        if best_epoch == last:
            return
        name = (state or {}).get("best_weights")
        if trial_dir and name and (state or {}).get("best_weights_epoch") == best_epoch:
            with np.load(os.path.join(trial_dir, name), allow_pickle=False) as npz:
                model.set_weights([npz[f"arr_{i}"] for i in range(len(npz.files))])
            return
        logger.warning(
            "best-epoch weights (epoch %s) are not available; scoring the last epoch's", best_epoch
        )

    def _save(
        self,
        trial_dir: str,
        arch_sha: str,
        trial_seed: int,
        notes: dict[str, Any],
        num_params: int,
        model: Any,
        callback: Any,
        stopped: bool = False,
    ) -> None:
        """Write the checkpoint, the best weights (when not the last epoch) and the state, then prune."""
        os.makedirs(trial_dir, exist_ok=True)
        full = _merge(callback.previous, callback.history)
        epoch = int(full["epoch"][-1])
        ckpt = f"checkpoint-e{epoch:04d}.keras"
        tmp = os.path.join(trial_dir, f".tmp-{os.getpid()}-{ckpt}")
        model.save(tmp)
        os.replace(tmp, os.path.join(trial_dir, ckpt))
        old = _read_json(os.path.join(trial_dir, STATE_FILE)) or {}
        best_epoch = callback.best_epoch
        best_file, best_file_epoch = None, None
        if best_epoch is not None and best_epoch != epoch:
            if old.get("best_weights_epoch") == best_epoch and old.get("best_weights"):
                best_file, best_file_epoch = old["best_weights"], best_epoch
            elif callback.best_weights is not None:
                best_file, best_file_epoch = f"best-e{best_epoch:04d}.npz", best_epoch
                tmp = os.path.join(trial_dir, f".tmp-{os.getpid()}-{best_file}")
                with open(tmp, "wb") as fh:
                    np.savez(fh, *callback.best_weights)
                os.replace(tmp, os.path.join(trial_dir, best_file))
        state = {
            "format": 1,
            "epoch": epoch,
            "checkpoint": ckpt,
            "best_weights": best_file,
            "best_weights_epoch": best_file_epoch,
            "best_epoch": best_epoch,
            "wait": callback.wait,
            "stopped_early": bool(stopped),
            "monitor": self.monitor,
            "history": full,
            "notes": notes,
            "num_params": num_params,
            "arch_sha": arch_sha,
            "seed": trial_seed,
        }
        _write_json(os.path.join(trial_dir, STATE_FILE), state)
        keep = {ckpt, best_file}
        for path in glob.glob(os.path.join(trial_dir, "checkpoint-e*.keras")) + glob.glob(
            os.path.join(trial_dir, "best-e*.npz")
        ):
            if os.path.basename(path) not in keep:
                with contextlib.suppress(OSError):
                    os.remove(path)


# --------------------------------------------------------------------------- helpers


def _merge(prev: Mapping[str, list], new: Mapping[str, list]) -> dict[str, list]:
    keys = list(dict.fromkeys([*prev, *new]))
    n_prev = len(prev.get("epoch", []))
    n_new = len(new.get("epoch", []))
    return {k: list(prev.get(k, [None] * n_prev)) + list(new.get(k, [None] * n_new)) for k in keys}


def _check_labels(arch: Mapping[str, Any], *labels: np.ndarray) -> None:
    n = arch.get("num_classes", 10 if arch.get("type") in ("conv_net", "mlp") else None)
    top = max(int(y.max()) for y in labels if len(y))
    if isinstance(n, int) and top >= n:
        raise ConfigError(
            f"the dataset has labels up to {top} but the architecture has num_classes={n}. Build the space "
            f"with SearchSpace(fn, num_classes={top + 1})."
        )


def _split(dataset: Any, fraction: float, split_seed: int) -> tuple[np.ndarray, ...]:
    """``(x_train, y_train, x_val, y_val, x_test, y_test)``, cached per process."""
    key = (dataset_key(dataset), fraction, split_seed)
    hit = _SPLITS.get(key)
    if hit is not None:
        return hit
    x_train, y_train, x_test, y_test = load_dataset(dataset)
    n = len(x_train)
    n_val = round(n * fraction)
    if n_val < 1 or n - n_val < 1:
        raise ConfigError(
            f"validation_fraction={fraction} of {n} training examples leaves {n_val} for validation and "
            f"{n - n_val} for training; both need at least 1. Use more data or another fraction."
        )
    perm = np.random.default_rng(split_seed).permutation(n)
    val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    parts = (x_train[train], y_train[train], x_train[val], y_train[val], x_test, y_test)
    for a in parts[:4]:
        a.flags.writeable = False
    if len(_SPLITS) >= 4:
        _SPLITS.clear()
    _SPLITS[key] = parts
    return parts


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("could not read %s (%s); ignoring it", path, exc)
        return None


def _write_json(path: str, obj: Any) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, allow_nan=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_state(trial_dir: str, arch_sha: str) -> dict[str, Any] | None:
    state = _read_json(os.path.join(trial_dir, STATE_FILE))
    if not state:
        return None
    if state.get("arch_sha") != arch_sha:
        raise ConfigError(
            f"the checkpoint in {trial_dir} was written for another architecture (hash "
            f"{state.get('arch_sha')!r}, this one {arch_sha!r}). Resume a trial with its own architecture, "
            "or pass resume=False to train afresh."
        )
    if not os.path.exists(os.path.join(trial_dir, str(state.get("checkpoint")))):
        logger.warning(
            "%s names a missing checkpoint %s; training from scratch", STATE_FILE, state.get("checkpoint")
        )
        return None
    return state


def _rss_mb() -> float:
    try:
        import psutil

        return round(psutil.Process().memory_info().rss / 2**20, 1)
    except ImportError:  # pragma: no cover - psutil comes with distributed
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _is_oom(exc: BaseException) -> bool:
    text = str(exc)
    return (
        isinstance(exc, MemoryError)
        or "ResourceExhausted" in type(exc).__name__
        or "RESOURCE_EXHAUSTED" in text
        or "OOM when allocating" in text
        or "out of memory" in text.lower()
    )


def _setup_process(threads: int, device: str) -> str:
    """Configure this process for TF once: threads, quiet logs, GPU memory growth. Returns the device name."""
    wanted = (threads, device)
    if _PROCESS["configured"] is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        if "tensorflow" not in sys.modules:
            os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
            os.environ["TF_NUM_INTEROP_THREADS"] = str(threads)
        import keras

        with contextlib.suppress(ImportError):
            import absl.logging

            absl.logging.set_verbosity(absl.logging.ERROR)
        backend = keras.backend.backend()
        if backend == "tensorflow":
            name = _setup_tensorflow(threads, device)
        elif backend == "jax":
            name = _setup_jax(device)
        else:
            name = "CPU"
        _PROCESS.update(configured=wanted, device=name, backend=backend)
        _warn_if_threaded_worker()
        logger.info(
            "worker %s configured: backend %s, device %s, %d thread(s)", os.getpid(), backend, name, threads
        )
    elif _PROCESS["configured"] != wanted and not _PROCESS["warned"]:
        _PROCESS["warned"] = True
        logger.warning(
            "this worker process was configured with (threads, device)=%s; %s takes effect only in a new "
            "worker process",
            _PROCESS["configured"],
            wanted,
        )
    if device == "gpu" and _PROCESS["device"] == "CPU":
        raise RuntimeError(
            f"device='gpu' but no GPU is visible to worker {socket.gethostname()} pid {os.getpid()} "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}). Ask SLURM for one "
            "(--gres=gpu:1 or --gpus=v100-32:1) or use device='auto'."
        )
    return _PROCESS["device"]


def _warn_if_threaded_worker() -> None:
    """Keras keeps global state per process: two trials in one worker process at once would share it."""
    try:
        from distributed import get_worker

        nthreads = getattr(get_worker().state, "nthreads", 1)
    except (ImportError, ValueError, AttributeError):
        return
    if nthreads > 1:
        logger.warning(
            "this dask worker runs %d threads; concurrent Keras trials in one process share Keras' global "
            "state and seeds. Start workers with one thread each (LocalCluster(threads_per_worker=1), "
            "SLURMCluster(processes=cores))",
            nthreads,
        )


def _setup_tensorflow(threads: int, device: str) -> str:
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        current = tf.config.threading.get_intra_op_parallelism_threads()
        if current not in (threads,):
            logger.warning(
                "TensorFlow had already started in this process with %s intra-op threads; threads=%d is "
                "ignored here (set it before TensorFlow starts, e.g. TF_NUM_INTRAOP_THREADS)",
                current or "default",
                threads,
            )
    gpus = tf.config.list_physical_devices("GPU")
    if device == "cpu":
        if gpus:
            try:
                tf.config.set_visible_devices([], "GPU")
            except RuntimeError:
                logger.warning("GPUs were already initialised in this process; device='cpu' cannot hide them")
        return "CPU"
    for gpu in gpus:
        with contextlib.suppress(RuntimeError):  # already initialised: growth can no longer change
            tf.config.experimental.set_memory_growth(gpu, True)
    if not gpus:
        return "CPU"
    details = tf.config.experimental.get_device_details(gpus[0])
    return str(details.get("device_name") or gpus[0].name)


def _setup_jax(device: str) -> str:  # pragma: no cover - exercised only with KERAS_BACKEND=jax
    import jax

    if device == "cpu":
        return "CPU"
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    return str(gpus[0].device_kind) if gpus else "CPU"


@functools.cache
def _trial_callback_class() -> type:
    """The Keras callback class, defined on first use so that Keras is imported only on workers."""
    import keras

    class TrialCallback(keras.callbacks.Callback):
        """Records the history and epoch times, tracks the best epoch, stops on NaN or patience."""

        def __init__(self, monitor: str, patience: int | None, previous: dict, wait: int, saver: Any):
            super().__init__()
            self.monitor = monitor
            self.maximize = monitor != "val_loss"
            self.patience = patience
            self.previous = previous
            self.saver = saver
            self.history: dict[str, list] = {k: [] for k in _HISTORY_KEYS}
            self.val_times: list[float] = []
            self.diverged: tuple[int, float] | None = None
            self.stopped_early = False
            self.best_weights: list[np.ndarray] | None = None
            self.wait = wait
            self.best_epoch: int | None = None
            self.best_value: float | None = None
            if previous.get("epoch"):
                i = self.best_index(previous)
                self.best_epoch, self.best_value = int(previous["epoch"][i]), previous[monitor][i]
            self._epoch_start = 0.0
            self._test_start = 0.0

        def best_index(self, history: Mapping[str, list]) -> int:
            values = history[self.monitor]
            best = 0
            for i, v in enumerate(values):
                if self._better(v, values[best]):
                    best = i
            return best

        def _better(self, a: float, b: float | None) -> bool:
            if b is None:
                return True
            return a > b if self.maximize else a < b

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._epoch_start = time.perf_counter()

        def on_test_begin(self, logs: dict | None = None) -> None:
            self._test_start = time.perf_counter()

        def on_test_end(self, logs: dict | None = None) -> None:
            self.val_times.append(time.perf_counter() - self._test_start)

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            elapsed = time.perf_counter() - self._epoch_start
            logs = dict(logs or {})
            loss = float(logs.get("loss", math.nan))
            val_loss = float(logs.get("val_loss", math.nan))
            if not (math.isfinite(loss) and math.isfinite(val_loss)):
                self.diverged = (epoch + 1, loss if not math.isfinite(loss) else val_loss)
                self.model.stop_training = True
                return
            if self.monitor not in logs:
                raise ConfigError(
                    f"monitor {self.monitor!r} is not among the metrics Keras reported ({sorted(logs)}); a "
                    "builder that compiles its own model must include metrics=['accuracy']."
                )
            self.history["epoch"].append(epoch + 1)
            for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
                self.history[key].append(float(logs[key]) if key in logs else None)
            self.history["epoch_time_s"].append(elapsed)
            for key, value in logs.items():
                if key not in self.history and isinstance(value, (int, float)):
                    self.history.setdefault(key, [None] * (len(self.history["epoch"]) - 1)).append(
                        float(value)
                    )
            current = float(logs[self.monitor])
            if self._better(current, self.best_value):
                self.best_value, self.best_epoch = current, epoch + 1
                self.best_weights = self.model.get_weights()
                self.wait = 0
            else:
                self.wait += 1
                if self.patience is not None and self.wait >= self.patience:
                    self.stopped_early = True
                    self.model.stop_training = True
            if self.saver is not None:
                self.saver(self.model, self, self.stopped_early)

    return TrialCallback
