"""Keras models from architecture descriptions, by the architecture's ``"type"``.

A search space returns a JSON architecture such as ``{"type": "conv_net",
"conv": [...], ...}``; :func:`build_model` looks up the builder registered for
its type, builds a compiled Keras model for a given input shape and returns it
with *notes* about what had to be adapted (for example pooling steps that were
skipped because the feature map would have shrunk below 2x2).

Builders use the Keras 3 API only (``keras.layers``, ``keras.ops``), so they
run with any Keras backend. Every initializer and dropout layer gets an
explicit seed drawn from :class:`LayerSeeds`; that is what makes training
bit-identical across worker processes (Keras otherwise draws layer seeds from
Python's global ``random``, which dask's threads also use).

Keras is imported inside the functions, so importing this module never imports
TensorFlow.

Examples
--------
>>> arch = {"type": "mlp", "hidden": [{"units": 16, "activation": "relu"}], "batch_norm": False,
...         "dropout": 0.1, "learning_rate": 1e-3, "optimizer": "adam", "num_classes": 10}
>>> model, notes = build_model(arch, (8, 8, 1), seed=0)  # doctest: +SKIP
>>> model.count_params(), notes  # doctest: +SKIP
(1210, {})

A builder of your own, registered on the workers (see ``builders=`` on
:class:`~toolkit.evaluators.KerasClassifierEvaluator`):

>>> def tiny(arch, input_shape, seeds):
...     import keras
...     inputs = keras.Input(input_shape)
...     x = keras.layers.Flatten()(inputs)
...     outputs = keras.layers.Dense(arch["num_classes"], activation="softmax",
...                                  kernel_initializer=seeds.initializer())(x)
...     return keras.Model(inputs, outputs)
>>> register_builder("tiny", tiny)
>>> "tiny" in registered_types()
True
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from toolkit.errors import ConfigError

__all__ = [
    "OPTIMIZERS",
    "LayerSeeds",
    "build_conv_net",
    "build_mlp",
    "build_model",
    "derive_seed",
    "make_optimizer",
    "register_builder",
    "registered_types",
    "resolve_builder",
]

logger = logging.getLogger(__name__)

#: Optimizer names an architecture (or the evaluator's default) may use.
OPTIMIZERS = ("adam", "sgd", "rmsprop", "adamw", "nadam")

Builder = Callable[..., Any]
_BUILDERS: dict[str, Builder] = {}


def derive_seed(seed: int, *parts: Any) -> int:
    """A seed in ``[0, 2**31)`` derived from ``seed`` and ``parts``, the same on every machine.

    Examples
    --------
    >>> derive_seed(7, "layer", 0) == derive_seed(7, "layer", 0) != derive_seed(7, "layer", 1)
    True
    """
    blob = repr((int(seed), *parts)).encode()
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "big") % 2**31


class LayerSeeds:
    """A stream of per-layer seeds derived from one trial seed.

    Builders call :meth:`next` (or :meth:`initializer`) once per seeded layer,
    in a fixed order, so the same architecture and seed give the same seeds in
    every process.

    Examples
    --------
    >>> s = LayerSeeds(3)
    >>> first = s.next()
    >>> first == LayerSeeds(3).next() and s.next() != first
    True
    """

    def __init__(self, seed: int):
        self.seed = int(seed)
        self.count = 0

    def next(self) -> int:
        """The next seed of the stream."""
        self.count += 1
        return derive_seed(self.seed, "layer", self.count)

    def initializer(self, name: str = "glorot_uniform") -> Any:
        """A Keras initializer ``name`` (any seeded one, e.g. ``"he_normal"``) with the next seed."""
        import keras

        return keras.initializers.get({"class_name": name, "config": {"seed": self.next()}})

    def dropout(self, rate: float) -> Any:
        """A ``keras.layers.Dropout(rate)`` with the next seed."""
        import keras

        return keras.layers.Dropout(rate, seed=self.next())


# --------------------------------------------------------------------------- registry


def register_builder(type_name: str, fn: Builder | str) -> None:
    """Register ``fn`` as the builder of architectures whose ``"type"`` is ``type_name``.

    Parameters
    ----------
    type_name
        The value of ``arch["type"]`` that ``fn`` builds.
    fn
        ``fn(arch, input_shape, seeds) -> model`` or ``-> (model, notes)``, where
        ``seeds`` is a :class:`LayerSeeds` to seed every initializer and dropout
        layer with, and ``notes`` a JSON-able dict that ends up in the trial's
        result. It may also be an import path ``"package.module:function"``.
        A model that ``fn`` leaves uncompiled is compiled by :func:`build_model`.

    The registry is per process. On dask workers, pass your builders to the
    evaluator instead (``KerasClassifierEvaluator(builders={"my_type":
    "package.module:function"})``), which registers them on each worker.

    Examples
    --------
    >>> register_builder("conv_net", build_conv_net)
    """
    if not isinstance(type_name, str) or not type_name:
        raise ConfigError(f"a builder's type name must be a non-empty string; got {type_name!r}.")
    _BUILDERS[type_name] = resolve_builder(fn)


def resolve_builder(fn: Builder | str) -> Builder:
    """``fn`` itself, or the function an import path ``"package.module:function"`` names.

    Examples
    --------
    >>> resolve_builder("toolkit.evaluators.builders:build_mlp").__name__
    'build_mlp'
    """
    if callable(fn):
        return fn
    if isinstance(fn, str) and ":" in fn:
        module_name, _, attr = fn.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(
                f"cannot import the builder module {module_name!r} (from {fn!r}): {exc}. It must be "
                "importable on every worker."
            ) from None
        for part in attr.split("."):
            obj = getattr(obj, part, None)
        if callable(obj):
            return obj
    raise ConfigError(
        f"a builder must be a function fn(arch, input_shape, seeds) or an import path "
        f"'package.module:function'; got {fn!r}."
    )


def registered_types() -> list[str]:
    """The architecture types that have a builder in this process.

    Examples
    --------
    >>> {"conv_net", "mlp"} <= set(registered_types())
    True
    """
    return sorted(_BUILDERS)


# --------------------------------------------------------------------------- building


def build_model(
    arch: Mapping[str, Any],
    input_shape: Sequence[int],
    seed: int,
    *,
    optimizer: str = "adam",
    learning_rate: float = 1e-3,
) -> tuple[Any, dict[str, Any]]:
    """Build and compile the Keras model of ``arch`` for inputs shaped ``input_shape``.

    Parameters
    ----------
    arch
        An architecture description with a ``"type"`` key (``"conv_net"``,
        ``"mlp"`` or a type registered with :func:`register_builder`).
    input_shape
        One example's shape, e.g. ``(28, 28, 1)``.
    seed
        The trial seed; every initializer and dropout layer gets a seed derived from it.
    optimizer, learning_rate
        Used when ``arch`` has no ``"optimizer"`` / ``"learning_rate"`` of its own.

    Returns
    -------
    model, notes
        The compiled model (sparse categorical cross-entropy, accuracy metric)
        and a JSON-able dict of adaptations, e.g. ``{"skipped_pooling": [2]}``.

    Examples
    --------
    >>> model, notes = build_model({"type": "conv_net", "conv": [{"filters": 8}] * 3, "dense": []},
    ...                            (8, 8, 1), seed=0)  # doctest: +SKIP
    >>> notes  # doctest: +SKIP
    {'skipped_pooling': [2]}
    """
    if not isinstance(arch, Mapping):
        raise ConfigError(
            f"an architecture must be a dict with a 'type' key; got {type(arch).__name__} {arch!r:.200}. "
            "Pass space.replay(config)."
        )
    type_name = arch.get("type")
    builder = _BUILDERS.get(type_name) if isinstance(type_name, str) else None
    if builder is None:
        raise ConfigError(
            f"no Keras builder for architecture type {type_name!r} (received an architecture with keys "
            f"{sorted(arch)}). Registered types: {registered_types()}. Register one with "
            f"toolkit.evaluators.builders.register_builder({type_name!r}, fn), where fn(arch, input_shape, "
            f"seeds) returns a Keras model; on dask workers pass KerasClassifierEvaluator(builders="
            f"{{{type_name!r}: 'package.module:function'}})."
        )
    shape = tuple(int(d) for d in input_shape)
    out = builder(arch, shape, LayerSeeds(seed))
    model, notes = out if isinstance(out, tuple) else (out, {})
    if not getattr(model, "compiled", False):
        model.compile(
            optimizer=make_optimizer(
                arch.get("optimizer") or optimizer, arch.get("learning_rate") or learning_rate
            ),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    return model, dict(notes or {})


def make_optimizer(name: str, learning_rate: float) -> Any:
    """A Keras optimizer by name (one of :data:`OPTIMIZERS`).

    Examples
    --------
    >>> make_optimizer("sgd", 0.01).learning_rate  # doctest: +SKIP
    0.01
    """
    import keras

    classes = {
        "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
        "adamw": keras.optimizers.AdamW,
        "nadam": keras.optimizers.Nadam,
    }
    key = str(name).lower()
    if key not in classes:
        raise ConfigError(f"unknown optimizer {name!r}; valid optimizers are {list(OPTIMIZERS)}.")
    lr = float(learning_rate)
    if not lr > 0:
        raise ConfigError(f"learning_rate must be > 0; got {learning_rate!r}.")
    return classes[key](learning_rate=lr)


def _num_classes(arch: Mapping[str, Any]) -> int:
    n = arch.get("num_classes", 10)
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise ConfigError(f"architecture 'num_classes' must be an int >= 2; got {n!r}.")
    return n


def _dropout_rate(arch: Mapping[str, Any]) -> float:
    rate = float(arch.get("dropout", 0.0) or 0.0)
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"architecture 'dropout' must be in [0, 1); got {arch.get('dropout')!r}.")
    return rate


def build_conv_net(
    arch: Mapping[str, Any], input_shape: tuple[int, ...], seeds: LayerSeeds
) -> tuple[Any, dict[str, Any]]:
    """The tutorial's conv net: conv blocks, then flatten, dense layers and a softmax.

    Each block is a ``"same"``-padded convolution, optional batch norm, ReLU and
    optional 2x2 max or average pooling. A pooling step that would shrink the
    feature map below 2x2 is skipped and its block index listed under
    ``notes["skipped_pooling"]``. Dropout (``arch["dropout"]``) follows the
    flatten and each dense layer.

    Examples
    --------
    >>> arch = {"type": "conv_net", "conv": [{"filters": 8, "pool": "max"}] * 3, "dense": []}
    >>> build_conv_net(arch, (8, 8, 1), LayerSeeds(0))[1]  # doctest: +SKIP
    {'skipped_pooling': [2]}
    """
    import keras
    from keras import layers

    if len(input_shape) != 3:
        raise ConfigError(
            f"a conv_net needs image inputs (H, W, C); got examples shaped {input_shape}. Reshape the "
            "dataset to (N, H, W, C), or search an 'mlp' space for flat features."
        )
    rate = _dropout_rate(arch)
    height, width = input_shape[0], input_shape[1]
    skipped: list[int] = []
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for i, block in enumerate(arch.get("conv") or []):
        batch_norm = bool(block.get("batch_norm", False))
        x = layers.Conv2D(
            int(block.get("filters", 32)),
            int(block.get("kernel_size", 3)),
            padding="same",
            use_bias=not batch_norm,
            kernel_initializer=seeds.initializer(),
            name=f"conv{i}",
        )(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"conv{i}_bn")(x)
        x = layers.Activation("relu", name=f"conv{i}_relu")(x)
        pool = block.get("pool", "max")
        if pool in (None, "none"):
            continue
        if pool not in ("max", "avg"):
            raise ConfigError(f"conv block {i} has pool={pool!r}; valid values are 'max', 'avg' and 'none'.")
        if height // 2 < 2 or width // 2 < 2:
            skipped.append(i)
            continue
        pool_cls = layers.MaxPooling2D if pool == "max" else layers.AveragePooling2D
        x = pool_cls(2, name=f"conv{i}_pool")(x)
        height, width = height // 2, width // 2
    x = layers.Flatten(name="flatten")(x)
    if rate > 0:
        x = seeds.dropout(rate)(x)
    for i, dense in enumerate(arch.get("dense") or []):
        x = layers.Dense(
            int(dense["units"]), activation="relu", kernel_initializer=seeds.initializer(), name=f"dense{i}"
        )(x)
        if rate > 0:
            x = seeds.dropout(rate)(x)
    outputs = layers.Dense(
        _num_classes(arch), activation="softmax", kernel_initializer=seeds.initializer(), name="output"
    )(x)
    notes: dict[str, Any] = {"skipped_pooling": skipped} if skipped else {}
    if skipped:
        logger.debug("input %s: skipped pooling in conv blocks %s", input_shape, skipped)
    return keras.Model(inputs, outputs, name="conv_net"), notes


def build_mlp(
    arch: Mapping[str, Any], input_shape: tuple[int, ...], seeds: LayerSeeds
) -> tuple[Any, dict[str, Any]]:
    """A multilayer perceptron on the flattened input: dense layers, optional batch norm, dropout, softmax.

    Examples
    --------
    >>> arch = {"type": "mlp", "hidden": [{"units": 16, "activation": "tanh"}], "num_classes": 10}
    >>> build_mlp(arch, (28, 28, 1), LayerSeeds(0))[0].count_params()  # doctest: +SKIP
    12730
    """
    import keras
    from keras import layers

    rate = _dropout_rate(arch)
    batch_norm = bool(arch.get("batch_norm", False))
    inputs = keras.Input(shape=input_shape)
    x = layers.Flatten(name="flatten")(inputs) if len(input_shape) > 1 else inputs
    for i, hidden in enumerate(arch.get("hidden") or []):
        x = layers.Dense(
            int(hidden["units"]),
            use_bias=not batch_norm,
            kernel_initializer=seeds.initializer(),
            name=f"hidden{i}",
        )(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"hidden{i}_bn")(x)
        x = layers.Activation(hidden.get("activation", "relu"), name=f"hidden{i}_act")(x)
        if rate > 0:
            x = seeds.dropout(rate)(x)
    outputs = layers.Dense(
        _num_classes(arch), activation="softmax", kernel_initializer=seeds.initializer(), name="output"
    )(x)
    return keras.Model(inputs, outputs, name="mlp"), {}


register_builder("conv_net", build_conv_net)
register_builder("mlp", build_mlp)
