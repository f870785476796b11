"""The conv-net space of the MNIST multiworker tutorial.

Examples
--------
>>> from toolkit import SearchSpace
>>> space = SearchSpace(conv_net, num_classes=10)
>>> arch = space.replay(space.sample(0))
>>> arch["type"], 1 <= len(arch["conv"]) <= 3, 0 <= len(arch["dense"]) <= 2
('conv_net', True, True)
"""

from __future__ import annotations

from typing import Any

from toolkit.space import HP


def _conv_block(hp: HP) -> dict[str, Any]:
    return {
        "filters": hp.choice("filters", [16, 32, 48, 64]),
        "kernel_size": hp.choice("kernel_size", [3, 5]),
        "batch_norm": hp.bool("batch_norm"),
        "pool": hp.choice("pool", ["max", "avg", "none"]),
    }


def _dense_layer(hp: HP) -> dict[str, Any]:
    return {"units": hp.choice("units", [32, 64, 128, 256])}


def conv_net(hp: HP, num_classes: int = 10) -> dict[str, Any]:
    """1-3 conv blocks, 0-2 dense layers, dropout, a log-scale learning rate and an optimizer.

    Names: ``conv_blocks``, ``conv{i}/filters``, ``conv{i}/kernel_size``,
    ``conv{i}/batch_norm``, ``conv{i}/pool``, ``dense_layers``,
    ``dense{i}/units``, ``dropout``, ``learning_rate``, ``optimizer``.
    """
    return {
        "type": "conv_net",
        "conv": hp.repeat("conv_blocks", _conv_block, 1, 3, prefix="conv"),
        "dense": hp.repeat("dense_layers", _dense_layer, 0, 2, prefix="dense"),
        "dropout": hp.float("dropout", 0.0, 0.5),
        "learning_rate": hp.float("learning_rate", 1e-4, 3e-2, log=True),
        "optimizer": hp.choice("optimizer", ["adam", "sgd", "rmsprop"]),
        "num_classes": num_classes,
    }
