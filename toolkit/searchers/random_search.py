"""Random search: independent samples, avoiding configs already asked.

Examples
--------
>>> from toolkit.space import SearchSpace
>>> from toolkit.spaces import conv_net
>>> s = RandomSearcher(seed=0)
>>> s.setup(SearchSpace(conv_net, num_classes=10))
>>> config = s.ask()
>>> config["conv_blocks"] in (1, 2, 3)
True
"""

from __future__ import annotations

from typing import Any

from toolkit.errors import ConfigError
from toolkit.searchers.base import Config, Searcher
from toolkit.trial import config_key

__all__ = ["RandomSearcher"]


class RandomSearcher(Searcher):
    """Samples every config independently from the space.

    Ask number ``k`` draws from a generator seeded by ``(seed, k)``, so the
    same seed gives the same configs on any machine. A config that was already
    asked is redrawn up to ``max_retries`` times; after that the duplicate is
    returned (a small space may have fewer configs than the search wants).

    Parameters
    ----------
    seed
        The search's seed; ``None`` draws one at :meth:`setup` (``seed_``).
    max_retries
        How many times a duplicate is redrawn before it is accepted.

    Examples
    --------
    >>> from toolkit.space import SearchSpace
    >>> space = SearchSpace(lambda hp: {"x": hp.choice("x", ["a", "b", "c"])})
    >>> s = RandomSearcher(seed=1)
    >>> s.setup(space)
    >>> sorted(s.ask()["x"] for _ in range(3))
    ['a', 'b', 'c']
    """

    independent = True

    def __init__(self, seed: int | None = None, max_retries: int = 10):
        self.seed = seed
        self.max_retries = max_retries

    def validate(self) -> None:
        super().validate()
        r = self.max_retries
        if not isinstance(r, int) or isinstance(r, bool) or r < 0:
            raise ConfigError(
                f"RandomSearcher max_retries must be an int >= 0; got {r!r}. "
                "For example RandomSearcher(seed=0, max_retries=10)."
            )

    def reset(self) -> None:
        super().reset()
        self._seen: set[str] = set()

    def ask(self) -> Config:
        """A random config, different from those already asked when the retries allow.

        Examples
        --------
        >>> from toolkit.space import SearchSpace
        >>> s = RandomSearcher(seed=0)
        >>> s.setup(SearchSpace(lambda hp: {"lr": hp.float("lr", 1e-4, 1e-1, log=True)}))
        >>> 1e-4 <= s.ask()["lr"] <= 1e-1
        True
        """
        self.check_setup()
        rng = self.rng_for(self.n_asked_)
        sample = self.space_.sample
        seen = self._seen
        config: dict[str, Any] = sample(rng)
        key = config_key(config)
        for _ in range(self.max_retries):
            if key not in seen:
                break
            config = sample(rng)
            key = config_key(config)
        seen.add(key)
        self.n_asked_ += 1
        return config

    def note_ask(self, config: Config) -> None:
        self._seen.add(config_key(config))
        super().note_ask(config)
