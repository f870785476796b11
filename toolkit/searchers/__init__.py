"""Ask/tell search policies: random, grid, regularized evolution, and Optuna's samplers.

Every searcher follows :class:`Searcher`: ``setup(space, objective)``, then
``ask()`` / ``tell(trial)``, and ``restore(trials)`` to resume from a journal.
The conformance suite that each one passes is :mod:`toolkit.testing.searchers`.

Examples
--------
>>> from toolkit.space import SearchSpace
>>> from toolkit.spaces import mlp
>>> s = RandomSearcher(seed=0)
>>> s.setup(SearchSpace(mlp))
>>> sorted(s.ask())[:2]
['batch_norm', 'dropout']
"""

from toolkit.searchers.base import Searcher
from toolkit.searchers.evolution import EvolutionSearcher
from toolkit.searchers.grid import GridSearcher
from toolkit.searchers.optuna_search import OptunaSearcher
from toolkit.searchers.random_search import RandomSearcher

__all__ = ["EvolutionSearcher", "GridSearcher", "OptunaSearcher", "RandomSearcher", "Searcher"]
