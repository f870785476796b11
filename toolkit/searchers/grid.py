"""Grid search over a finite space, conditional branches included.

Examples
--------
>>> from toolkit.space import SearchSpace
>>> space = SearchSpace(lambda hp: {"a": hp.choice("a", ["x", "y"]), "b": hp.bool("b")})
>>> s = GridSearcher()
>>> s.setup(space)
>>> [s.ask() for _ in range(5)]
[{'a': 'x', 'b': False}, {'a': 'x', 'b': True}, {'a': 'y', 'b': False}, {'a': 'y', 'b': True}, None]
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping
from typing import Any

from toolkit.errors import ConfigError, did_you_mean
from toolkit.searchers.base import Config, Searcher
from toolkit.space import Domain, Float
from toolkit.trial import Trial, config_key

__all__ = ["GridSearcher"]

MAX_SHUFFLED = 1_000_000
"""The largest grid :class:`GridSearcher` shuffles (it has to hold it in memory)."""


def _example_values(dom: Domain) -> list[Any]:
    if isinstance(dom, Float):
        if dom.log:
            return [dom.low, float(f"{math.sqrt(dom.low * dom.high):.3g}"), dom.high]
        return [dom.low, float(f"{(dom.low + dom.high) / 2:.3g}"), dom.high]
    return dom.explore_values()[:3]


class GridSearcher(Searcher):
    """Asks every config of a finite space once, then ``None``.

    The order is the space's :meth:`~toolkit.space.SearchSpace.grid` order
    (the last hyperparameter declared varies fastest), or a seeded shuffle of
    it. Configs already asked or told are skipped, so a restored search goes
    on where it stopped.

    Parameters
    ----------
    values
        ``{name: [value, ...]}``: the grid of a hyperparameter that has none (a
        float) or a subset of one that has. Every float needs an entry.
    shuffle
        Visit the grid in a random order (the grid is then held in memory; at
        most :data:`MAX_SHUFFLED` configs).
    seed
        The seed of the shuffle.

    Examples
    --------
    >>> from toolkit.space import SearchSpace
    >>> space = SearchSpace(lambda hp: {"lr": hp.float("lr", 1e-3, 1e-1, log=True), "bn": hp.bool("bn")})
    >>> s = GridSearcher(values={"lr": [1e-3, 1e-2]})
    >>> s.setup(space)
    >>> s.ask(), s.ask()
    ({'lr': 0.001, 'bn': False}, {'lr': 0.001, 'bn': True})
    """

    independent = True

    def __init__(
        self, values: Mapping[str, list[Any]] | None = None, shuffle: bool = False, seed: int | None = None
    ):
        self.values = values
        self.shuffle = shuffle
        self.seed = seed

    def validate(self) -> None:
        super().validate()
        if self.values is not None and not isinstance(self.values, Mapping):
            raise ConfigError(
                f"GridSearcher values must be a mapping {{name: [value, ...]}}; got {self.values!r}. "
                "For example GridSearcher(values={'learning_rate': [1e-3, 1e-2]})."
            )
        if not isinstance(self.shuffle, bool):
            raise ConfigError(f"GridSearcher shuffle must be True or False; got {self.shuffle!r}.")

    def _grid_values(self) -> dict[str, list[Any]]:
        """``values`` checked against the space: known names, values inside their domains, floats covered."""
        domains = self.space_.describe()
        grid: dict[str, list[Any]] = {}
        for name, vals in (self.values or {}).items():
            if name not in domains:
                raise ConfigError(
                    f"GridSearcher values name {name!r}, which is not a hyperparameter of the space "
                    f"{self.space_.fingerprint}{did_you_mean(name, domains)}; its hyperparameters are "
                    f"{list(domains)}."
                )
            dom = domains[name]
            if isinstance(vals, (str, bytes)) or not isinstance(vals, (list, tuple)) or not vals:
                raise ConfigError(
                    f"GridSearcher values[{name!r}] must be a non-empty list; got {vals!r}. "
                    f"For example values={{{name!r}: {_example_values(dom)!r}}}."
                )
            bad = [v for v in vals if not dom.contains(v)]
            if bad:
                raise ConfigError(
                    f"GridSearcher values[{name!r}] has value(s) {bad} outside its domain {dom!r}. "
                    "Use values inside the domain."
                )
            coerced = [dom.coerce(v) for v in vals]
            if len({config_key({"v": v}) for v in coerced}) != len(coerced):
                raise ConfigError(f"GridSearcher values[{name!r}] must be distinct; got {list(vals)!r}.")
            grid[name] = coerced
        for name, dom in domains.items():
            if name in grid:
                continue
            if isinstance(dom, Float):
                raise ConfigError(
                    f"GridSearcher cannot enumerate the float hyperparameter {name!r} ({dom!r}): it has "
                    f"no finite grid. Give its values, for example "
                    f"GridSearcher(values={{{name!r}: {_example_values(dom)!r}}})."
                )
            grid[name] = dom.grid_values()
        return grid

    def reset(self) -> None:
        super().reset()
        self._grid = self._grid_values()
        self._seen: set[str] = set()
        self._iter: Iterator[Config] = self._configs()

    def _configs(self) -> Iterator[Config]:
        if not self.shuffle:
            yield from self.space_.grid(self._grid)
            return
        configs: list[Config] = []
        for config in self.space_.grid(self._grid):
            configs.append(config)
            if len(configs) > MAX_SHUFFLED:
                raise ConfigError(
                    f"GridSearcher(shuffle=True) holds the grid in memory, and this one has more than "
                    f"{MAX_SHUFFLED:,} configs. Narrow it with values={{name: [...]}}, or use "
                    "shuffle=False, or RandomSearcher."
                )
        random.Random(f"{self.seed_}:grid").shuffle(configs)
        yield from configs

    def ask(self) -> Config | None:
        """The next config of the grid not yet asked or told, or ``None`` when there is none."""
        self.check_setup()
        for config in self._iter:
            key = config_key(config)
            if key not in self._seen:
                self._seen.add(key)
                self.n_asked_ += 1
                return config
        return None

    def note_ask(self, config: Config) -> None:
        self._seen.add(config_key(config))
        super().note_ask(config)

    def tell(self, trial: Trial) -> None:
        """Mark ``trial.config`` as done, so a config evaluated elsewhere is not asked again."""
        self._seen.add(config_key(trial.config))
