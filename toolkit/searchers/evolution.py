"""Regularized (aging) evolution, after Real et al., "Regularized Evolution for Image
Classifier Architecture Search", AAAI 2019.

Examples
--------
>>> from toolkit.space import SearchSpace
>>> from toolkit.spaces import conv_net
>>> s = EvolutionSearcher(population_size=4, sample_size=2, seed=0)
>>> s.setup(SearchSpace(conv_net))
>>> len(s.population_)
0
"""

from __future__ import annotations

import bisect
import math

from toolkit.errors import ConfigError
from toolkit.searchers.base import TOLD_STATUSES, AskBook, Config, Searcher, status_of
from toolkit.trial import Trial, TrialStatus, config_key

__all__ = ["EvolutionSearcher"]

_Birth = tuple[int, int]


def _has_result(trial: Trial) -> bool:
    v = trial.value
    return status_of(trial) is not TrialStatus.FAILED and isinstance(v, (int, float)) and not math.isnan(v)


class EvolutionSearcher(Searcher):
    """Aging evolution: tournament selection, one mutation, the oldest member dies.

    Until ``population_size`` results are in, asks are random samples. After
    that, each ask picks ``sample_size`` members of the population at random
    and returns a mutation (:meth:`~toolkit.space.SearchSpace.mutate`) of the
    best of them. A told result joins the population and, once the population
    holds ``population_size`` members, the oldest one leaves, so it stays at
    exactly ``population_size``.

    Age is birth order: the order in which configs were asked. With several
    workers, results arrive out of order, and ordering by birth keeps the
    population a function of the journal alone (which is what makes
    :meth:`restore` exact); a result that arrives after ``population_size``
    younger ones is too old to join.

    Failed trials, and trials without a value, never join. A stopped trial with
    a value (an early-stopped rung) joins with that value; a trial told again
    with a larger budget has its value updated while it is a member.

    Parameters
    ----------
    population_size
        ``P``: how many results the population holds (``P >= 1``).
    sample_size
        ``S``: the tournament size (``1 <= S <= P``). ``S = P`` always mutates
        the best member; ``S = 1`` mutates a random one.
    seed
        The search's seed; ``None`` draws one at :meth:`setup` (``seed_``).

    Attributes
    ----------
    population_
        The members, oldest first (set by :meth:`setup`).
    n_results_
        How many distinct trials have joined the population so far.

    Examples
    --------
    >>> from toolkit.space import SearchSpace
    >>> from toolkit.trial import Trial, TrialStatus
    >>> space = SearchSpace(lambda hp: {"x": hp.int("x", 0, 100)})
    >>> s = EvolutionSearcher(population_size=3, sample_size=2, seed=0)
    >>> s.setup(space)
    >>> for i in range(10):
    ...     config = s.ask()
    ...     s.tell(Trial(i, config, TrialStatus.FINISHED, value=config["x"]))
    >>> len(s.population_)
    3
    """

    def __init__(self, population_size: int = 20, sample_size: int = 5, seed: int | None = None):
        self.population_size = population_size
        self.sample_size = sample_size
        self.seed = seed

    def validate(self) -> None:
        super().validate()
        p, s = self.population_size, self.sample_size
        if not isinstance(p, int) or isinstance(p, bool) or p < 1:
            raise ConfigError(
                f"EvolutionSearcher population_size must be an int >= 1; got population_size={p!r}. "
                "For example EvolutionSearcher(population_size=20, sample_size=5)."
            )
        if not isinstance(s, int) or isinstance(s, bool) or not 1 <= s <= p:
            raise ConfigError(
                f"EvolutionSearcher sample_size must be an int with 1 <= sample_size <= population_size; "
                f"got sample_size={s!r} with population_size={p!r}. "
                f"For example EvolutionSearcher(population_size={p}, sample_size={max(1, p // 4)})."
            )

    def reset(self) -> None:
        super().reset()
        self._book = AskBook()
        self._members: list[tuple[_Birth, Trial]] = []
        self._counted: set[int] = set()
        self._n_external = 0
        self.n_results_ = 0

    @property
    def population_(self) -> list[Trial]:
        """The members of the population, oldest first."""
        self.check_setup()
        return [trial for _, trial in self._members]

    def ask(self) -> Config:
        """A random config while the population fills, then a mutation of a tournament winner."""
        self.check_setup()
        rng = self.rng_for(self.n_asked_)
        if self.n_results_ < self.population_size:
            config = self.space_.sample(rng)
        else:
            score = self.objective_.score
            contenders = rng.sample(self.population_, self.sample_size)
            parent = max(contenders, key=lambda t: score(t.value))
            parent_key = config_key(parent.config)
            config = self.space_.mutate(parent.config, rng)
            for _ in range(8):  # a mutation can be a no-op (a one-value domain): try another
                if config_key(config) != parent_key:
                    break
                config = self.space_.mutate(parent.config, rng)
        self.note_ask(config)
        return config

    def note_ask(self, config: Config) -> None:
        self._book.add(config, (self.n_asked_, 0))
        super().note_ask(config)

    def tell(self, trial: Trial) -> None:
        """Add a result to the population (dropping the oldest member), or update a member's value."""
        self.check_setup()
        if status_of(trial) not in TOLD_STATUSES:
            return
        birth, first = self._book.match(trial)
        if birth is None and first:  # a config this searcher did not ask: born now
            self._n_external += 1
            birth = (self.n_asked_ - 1, self._n_external)
            self._book.bind(trial.trial_id, birth)
        if not _has_result(trial):
            return
        if trial.trial_id in self._counted:  # told again (a later rung): update it while it lives
            for i, (b, member) in enumerate(self._members):
                if member.trial_id == trial.trial_id:
                    self._members[i] = (b, trial)
                    break
            return
        self._counted.add(trial.trial_id)
        self.n_results_ += 1
        bisect.insort(self._members, (birth, trial), key=lambda m: m[0])  # type: ignore[arg-type]
        if len(self._members) > self.population_size:
            del self._members[0]
