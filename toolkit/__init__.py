"""darch: architecture and hyperparameter search on Dask, for HPC centres.

Importing darch never imports TensorFlow (models are built only on workers), and
the public names load lazily, so a worker that imports ``toolkit.worker`` pulls in
nothing else.

Examples
--------
>>> from toolkit import Experiment, SearchSpace, load_results
>>> from toolkit.spaces import conv_net
>>> SearchSpace(conv_net).sample(0)["conv_blocks"] in (1, 2, 3)
True
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "ConfigError": "toolkit.errors",
    "DarchError": "toolkit.errors",
    "JournalError": "toolkit.errors",
    "Experiment": "toolkit.experiment",
    "load_results": "toolkit.results",
    "SearchSpace": "toolkit.space",
    "EvolutionSearcher": "toolkit.searchers",
    "GridSearcher": "toolkit.searchers",
    "OptunaSearcher": "toolkit.searchers",
    "RandomSearcher": "toolkit.searchers",
    "make_cluster": "toolkit.cluster",
    "draw_architecture": "toolkit.draw",
    "retrain": "toolkit.retrain",
}

__all__ = [*sorted(_LAZY), "__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'toolkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
