"""A multilayer-perceptron space.

Examples
--------
>>> from toolkit import SearchSpace
>>> arch = SearchSpace(mlp).replay(SearchSpace(mlp).sample(1))
>>> arch["type"]
'mlp'
"""

from __future__ import annotations

from typing import Any

from toolkit.space import HP


def _hidden(hp: HP) -> dict[str, Any]:
    return {
        "units": hp.int("units", 16, 512, log=True),
        "activation": hp.choice("activation", ["relu", "tanh", "elu"]),
    }


def mlp(hp: HP, num_classes: int = 10) -> dict[str, Any]:
    """1-3 hidden layers (log-scale units, activation), batch norm, dropout, learning rate, optimizer."""
    return {
        "type": "mlp",
        "hidden": hp.repeat("hidden_layers", _hidden, 1, 3, prefix="hidden"),
        "batch_norm": hp.bool("batch_norm"),
        "dropout": hp.float("dropout", 0.0, 0.5),
        "learning_rate": hp.float("learning_rate", 1e-4, 3e-2, log=True),
        "optimizer": hp.choice("optimizer", ["adam", "sgd", "rmsprop"]),
        "num_classes": num_classes,
    }
