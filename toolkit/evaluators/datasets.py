"""Datasets for the Keras evaluator, loaded once per worker process.

:func:`load_dataset` turns a dataset *spec* into ``(x_train, y_train, x_test,
y_test)``: images as float32 in ``[0, 1]`` shaped ``(N, H, W, C)``, labels as
int32 class indices. A spec is one of

* ``"digits"`` (the default): scikit-learn's bundled 8x8 digits, always
  available, split 80/20 into train and test with a fixed seed;
* ``"mnist:/path/to/mnist.npz"`` or ``{"name": "mnist", "path": "..."}``: an
  ``.npz`` file with the arrays ``x_train, y_train, x_test, y_test`` (the
  ``mnist.npz`` that Keras and the DeepArchitect tutorial use). ``"npz"`` is a
  synonym for files that are not MNIST. ``~`` and ``$VARS`` in the path are
  expanded on the worker, so ``"mnist:$PROJECT/datasets/mnist.npz"`` works;
* ``"package.module:function"`` or ``{"name": "package.module:function",
  "kwargs": {...}}``: a loader of your own, imported on the worker, that
  returns the four arrays (as a tuple or a dict with those keys).

A dict spec may add ``"subset": n`` to keep only the first ``n`` training and
the first ``n`` test examples, for quick runs.

Every process keeps the arrays it loaded in a cache keyed by the spec, so a
worker reads a dataset once, not once per trial; :func:`load_counts` says how
many times each spec was actually read in this process. The cached arrays are
read-only. Importing this module does not import TensorFlow.

Examples
--------
>>> x_train, y_train, x_test, y_test = load_dataset("digits")
>>> x_train.shape[1:], x_train.dtype.name, y_train.dtype.name
((8, 8, 1), 'float32', 'int32')
>>> load_dataset({"name": "digits", "subset": 100})[0].shape
(100, 8, 8, 1)
>>> load_dataset("digits")[0] is x_train  # the second call hits the cache
True
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import threading
import zipfile
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from toolkit.errors import ConfigError

__all__ = [
    "EXPECTED_KEYS", "check_dataset", "clear_cache", "dataset_key", "load_counts", "load_dataset", "normalize_spec",
]  # fmt: skip

logger = logging.getLogger(__name__)

EXPECTED_KEYS = ("x_train", "y_train", "x_test", "y_test")
MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
_FILE_NAMES = ("mnist", "npz")
_SPEC_KEYS = ("name", "path", "subset", "kwargs")

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

_CACHE: dict[str, Arrays] = {}
_LOADS: Counter[str] = Counter()
_LOCK = threading.Lock()


# --------------------------------------------------------------------------- specs


def _spec_help() -> str:
    return (
        "Use 'digits', 'mnist:/path/to/mnist.npz', {'name': 'mnist', 'path': '/path/to/mnist.npz'}, "
        "or a loader of your own as 'package.module:function'; a dict spec may add 'subset': n."
    )


def normalize_spec(spec: Any) -> dict[str, Any]:
    """The canonical dict form of a dataset spec (without touching any file).

    Examples
    --------
    >>> normalize_spec("mnist:/data/mnist.npz")
    {'name': 'mnist', 'path': '/data/mnist.npz'}
    >>> normalize_spec(None)
    {'name': 'digits'}
    """
    if spec is None:
        return {"name": "digits"}
    if isinstance(spec, str):
        head, sep, tail = spec.partition(":")
        if sep and head in _FILE_NAMES:
            return {"name": head, "path": tail}
        if not spec:
            raise ConfigError(f"a dataset spec must not be empty; got {spec!r}. {_spec_help()}")
        return {"name": spec}
    if isinstance(spec, Mapping):
        unknown = [k for k in spec if k not in _SPEC_KEYS]
        if unknown:
            raise ConfigError(
                f"dataset spec {dict(spec)!r} has unknown key(s) {unknown}; valid keys are "
                f"{list(_SPEC_KEYS)}. {_spec_help()}"
            )
        if not isinstance(spec.get("name"), str) or not spec["name"]:
            raise ConfigError(f"dataset spec {dict(spec)!r} needs a 'name'. {_spec_help()}")
        out = {k: spec[k] for k in _SPEC_KEYS if spec.get(k) is not None}
        subset = out.get("subset")
        if subset is not None and (not isinstance(subset, int) or isinstance(subset, bool) or subset < 1):
            raise ConfigError(
                f"dataset 'subset' must be a positive int (the number of examples to keep); got {subset!r}."
            )
        if "kwargs" in out and not isinstance(out["kwargs"], Mapping):
            raise ConfigError(
                f"dataset 'kwargs' must be a dict of keyword arguments for the loader; got {out['kwargs']!r}."
            )
        return out
    raise ConfigError(
        f"a dataset spec must be a string or a dict; got {type(spec).__name__} {spec!r}. {_spec_help()}"
    )


def dataset_key(spec: Any) -> str:
    """The cache key of a spec: its canonical JSON form.

    Examples
    --------
    >>> dataset_key("digits") == dataset_key({"name": "digits"})
    True
    """
    norm = normalize_spec(spec)
    if "path" in norm:
        norm["path"] = _expand(norm["path"])
    try:
        return json.dumps(norm, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"dataset spec {norm!r} must be JSON-able (plain values only): {exc}") from None


def _expand(path: str) -> str:
    return os.path.abspath(os.path.expandvars(os.path.expanduser(str(path))))


# --------------------------------------------------------------------------- loading


def load_dataset(spec: Any = "digits") -> Arrays:
    """``(x_train, y_train, x_test, y_test)`` for ``spec``, from this process's cache when loaded before.

    Parameters
    ----------
    spec
        A dataset spec (see the module docstring); ``None`` means ``"digits"``.

    Returns
    -------
    tuple of numpy.ndarray
        Images as read-only float32 arrays ``(N, H, W, C)`` scaled to ``[0, 1]``
        (flat ``(N, D)`` features from a loader of your own are kept as they
        are), labels as read-only int32 arrays ``(N,)``.

    Raises
    ------
    toolkit.errors.ConfigError
        For an unknown spec, or a file that is missing, corrupt or lacks the
        keys ``x_train, y_train, x_test, y_test``.

    Examples
    --------
    >>> x_train, y_train, x_test, y_test = load_dataset("digits")
    >>> len(x_train) + len(x_test)
    1797
    """
    key = dataset_key(spec)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            return hit
        norm = json.loads(key)
        arrays = _read(norm)
        arrays = _finalize(arrays, norm)
        subset = norm.get("subset")
        if subset is not None:
            arrays = (arrays[0][:subset], arrays[1][:subset], arrays[2][:subset], arrays[3][:subset])
        for a in arrays:
            a.flags.writeable = False
        _CACHE[key] = arrays
        _LOADS[key] += 1
        logger.info(
            "loaded dataset %s: %d train, %d test, input shape %s",
            key,
            len(arrays[0]),
            len(arrays[2]),
            arrays[0].shape[1:],
        )
        return arrays


def check_dataset(spec: Any) -> None:
    """Check a dataset spec cheaply in the search process, before any trial runs; load nothing.

    A ``.npz`` file must exist and list the arrays ``x_train, y_train, x_test, y_test`` (only the
    zip directory is read). A path that names an environment variable unset here (a node-local
    ``$LOCAL``) is left to the workers; so are loaders of your own, which may import TensorFlow.

    Raises
    ------
    toolkit.errors.ConfigError
        The message :func:`load_dataset` would give on every worker.

    Examples
    --------
    >>> check_dataset("digits")
    >>> check_dataset("mnist:/nonexistent/mnist.npz")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    toolkit.errors.ConfigError: dataset file /nonexistent/mnist.npz does not exist ...
    """
    norm = normalize_spec(spec)
    dataset_key(norm)  # JSON-able
    if norm["name"] not in _FILE_NAMES:
        if norm["name"] != "digits" and ":" not in norm["name"]:
            raise ConfigError(f"unknown dataset {norm['name']!r} (spec {norm!r}). {_spec_help()}")
        return
    if "path" not in norm:
        _read(norm)  # raises the "needs the path" error
    path = os.path.expandvars(os.path.expanduser(str(norm["path"])))
    if "$" in path:
        return
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise _npz_problem(path, "does not exist (seen from the machine that runs the search)")
    if os.path.isdir(path):
        raise _npz_problem(path, "is a directory, not a file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise _npz_problem(
            path, f"could not be read as .npz ({type(exc).__name__}: {exc}); it may be corrupt or truncated"
        ) from None
    missing = [k for k in EXPECTED_KEYS if k not in keys]
    if missing:
        raise _npz_problem(path, f"has the keys {keys} but lacks {missing}")


def load_counts() -> dict[str, int]:
    """How many times each dataset key was read from its source in this process.

    A worker that serves many trials should show 1 per dataset.

    Examples
    --------
    >>> _ = load_dataset("digits")
    >>> load_counts()[dataset_key("digits")] >= 1
    True
    """
    with _LOCK:
        return dict(_LOADS)


def clear_cache() -> None:
    """Forget every cached dataset (the load counts are kept).

    Examples
    --------
    >>> clear_cache()
    """
    with _LOCK:
        _CACHE.clear()


def _read(norm: dict[str, Any]) -> Any:
    name = norm["name"]
    if name == "digits":
        return _read_digits()
    if name in _FILE_NAMES:
        if "path" not in norm:
            raise ConfigError(
                f"dataset {name!r} needs the path of its .npz file; got {norm!r}. Pass, for example, "
                f"dataset='mnist:/path/to/mnist.npz' or dataset={{'name': 'mnist', 'path': '/path/to/mnist.npz'}}. "
                + _where_from()
            )
        return _read_npz(norm["path"])
    if ":" in name:
        return _read_loader(name, norm.get("kwargs") or {})
    raise ConfigError(f"unknown dataset {name!r} (spec {norm!r}). {_spec_help()}")


def _read_digits() -> Arrays:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    return x_train, y_train, x_test, y_test


def _where_from() -> str:
    return (
        f"The file is the Keras/DeepArchitect-tutorial mnist.npz ({MNIST_URL}); download it where there is "
        "internet access and copy it to the shared filesystem, e.g. $PROJECT/datasets/mnist.npz."
    )


def _npz_problem(path: str, what: str) -> ConfigError:
    return ConfigError(
        f"dataset file {path} {what}. Expected an .npz file with the arrays "
        f"{', '.join(EXPECTED_KEYS)} (images (N, H, W) or (N, H, W, C), integer labels (N,)). "
        + _where_from()
    )


def _read_npz(path: str) -> dict[str, np.ndarray]:
    if not os.path.exists(path):
        raise _npz_problem(path, "does not exist (seen from this worker)")
    if os.path.isdir(path):
        raise _npz_problem(path, "is a directory, not a file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            missing = [k for k in EXPECTED_KEYS if k not in keys]
            if missing:
                raise _npz_problem(path, f"has the keys {keys} but lacks {missing}")
            return {k: np.asarray(npz[k]) for k in EXPECTED_KEYS}
    except ConfigError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise _npz_problem(
            path, f"could not be read as .npz ({type(exc).__name__}: {exc}); it may be corrupt or truncated"
        ) from None


def _read_loader(target: str, kwargs: Mapping[str, Any]) -> Any:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import the dataset loader module {module_name!r} (from {target!r}): {exc}. The module "
            "must be importable on every worker (installed, or on PYTHONPATH there)."
        ) from None
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
    if not callable(fn):
        raise ConfigError(
            f"dataset loader {target!r}: module {module_name!r} has no function {attr!r}. "
            "Write it as 'package.module:function'."
        )
    return fn(**kwargs)


def _finalize(raw: Any, norm: dict[str, Any]) -> Arrays:
    label = norm.get("path") or norm["name"]
    if isinstance(raw, Mapping):
        missing = [k for k in EXPECTED_KEYS if k not in raw]
        if missing:
            raise ConfigError(
                f"dataset {label!r} returned the keys {list(raw)} but lacks {missing}; "
                f"return a dict with {list(EXPECTED_KEYS)} or a tuple in that order."
            )
        raw = tuple(raw[k] for k in EXPECTED_KEYS)
    if not isinstance(raw, (tuple, list)) or len(raw) != 4:
        raise ConfigError(
            f"dataset {label!r} must give (x_train, y_train, x_test, y_test); got {type(raw).__name__}. "
            "Return a 4-tuple of arrays or a dict with those keys."
        )
    x_train, x_test = (_images(np.asarray(raw[i]), label, EXPECTED_KEYS[i]) for i in (0, 2))
    y_train, y_test = (_labels(np.asarray(raw[i]), label, EXPECTED_KEYS[i]) for i in (1, 3))
    for x, y, part in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if len(x) != len(y):
            raise ConfigError(
                f"dataset {label!r}: x_{part} has {len(x)} examples but y_{part} has {len(y)}; they must match."
            )
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ConfigError(
            f"dataset {label!r}: x_train examples are shaped {x_train.shape[1:]} but x_test ones "
            f"{x_test.shape[1:]}; they must match."
        )
    return x_train, y_train, x_test, y_test


def _images(x: np.ndarray, label: str, key: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim not in (2, 4) or len(x) == 0:
        raise ConfigError(
            f"dataset {label!r}: {key} has shape {x.shape}; expected (N, H, W), (N, H, W, C) "
            "or flat features (N, D) with N > 0."
        )
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ConfigError(f"dataset {label!r}: {key} has dtype {x.dtype}; expected numbers (uint8 or float).")
    return x.astype(np.float32, copy=False)


def _labels(y: np.ndarray, label: str, key: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ConfigError(
            f"dataset {label!r}: {key} has shape {y.shape}; expected integer class labels (N,). "
            "Turn one-hot labels into indices with y.argmax(axis=1)."
        )
    is_int = np.issubdtype(y.dtype, np.integer)
    if not is_int and (not np.issubdtype(y.dtype, np.floating) or not np.all(np.mod(y, 1) == 0)):
        raise ConfigError(f"dataset {label!r}: {key} has dtype {y.dtype}; expected integer class labels.")
    if len(y) and y.min() < 0:
        raise ConfigError(f"dataset {label!r}: {key} has negative labels (min {y.min()}); expected 0..K-1.")
    return y.astype(np.int32)
