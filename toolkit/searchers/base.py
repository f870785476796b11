"""The searcher contract: ``setup`` -> ``ask`` / ``tell`` -> ``restore`` on resume.

A searcher is a pure policy. It proposes configs (:meth:`Searcher.ask`), learns
from terminal trials (:meth:`Searcher.tell`) and rebuilds its state from a
journal (:meth:`Searcher.restore`). It never talks to Dask.

Determinism: the ``k``-th ask draws its randomness from ``(seed, k)`` alone
(:meth:`Searcher.rng_for`), not from one long-lived random generator. A
searcher's state is a function of the configs asked so far (in ask order) and
the set of trials told, whatever order the tells came in. So a fresh searcher
with the same seed, after ``setup`` and ``restore(history)``, gives the same
next ask as the one that lived through that history.

Following scikit-learn, ``__init__`` only stores its keyword arguments;
:meth:`Searcher.setup` validates them. Attributes set by ``setup`` end in an
underscore (``space_``, ``objective_``, ``seed_``, ``n_asked_``).

Examples
--------
>>> from toolkit.space import SearchSpace
>>> class Sampling(Searcher):
...     '''Independent random samples (RandomSearcher without duplicate avoidance).'''
...     independent = True
...     def __init__(self, seed=None):
...         self.seed = seed
...     def ask(self):
...         self.check_setup()
...         config = self.space_.sample(self.rng_for(self.n_asked_))
...         self.note_ask(config)
...         return config
>>> space = SearchSpace(lambda hp: {"x": hp.int("x", 0, 99)})
>>> a, b = Sampling(seed=0), Sampling(seed=0)
>>> a.setup(space, Objective("loss", "min"))
>>> b.setup(space, Objective("loss", "min"))
>>> [a.ask() for _ in range(3)] == [b.ask() for _ in range(3)]
True
>>> Sampling.from_params({"sed": 1})
Traceback (most recent call last):
    ...
toolkit.errors.ConfigError: Sampling has no parameter 'sed' (did you mean 'seed'?); valid parameters are ['seed'].
"""

from __future__ import annotations

import abc
import random
from collections import deque
from collections.abc import Hashable, Sequence
from typing import Any, ClassVar

from toolkit.errors import ConfigError
from toolkit.params import Params
from toolkit.space import SearchSpace
from toolkit.trial import Objective, Trial, TrialStatus, config_key

__all__ = ["TOLD_STATUSES", "AskBook", "Searcher", "status_of"]

Config = dict[str, Any]

TOLD_STATUSES = frozenset({TrialStatus.FINISHED, TrialStatus.FAILED, TrialStatus.STOPPED})
"""The statuses a searcher is told about; :meth:`Searcher.tell` ignores the others."""


def status_of(trial: Trial) -> TrialStatus:
    """The trial's status as a :class:`TrialStatus`, also when it was built from a plain string.

    Examples
    --------
    >>> status_of(Trial(0, {}, "failed")) is TrialStatus.FAILED
    True
    """
    return TrialStatus(trial.status)


class Searcher(Params, abc.ABC):
    """Base class of ask/tell search policies.

    Subclasses implement :meth:`ask`; :meth:`tell` is a no-op hook, and
    :meth:`restore` replays a history through :meth:`note_ask` and
    :meth:`tell`. A subclass that keeps state extends :meth:`reset` (to clear
    it) and :meth:`note_ask` (to record an ask).

    Attributes
    ----------
    independent
        ``True`` when proposals never depend on results (random, grid): the
        runner may then submit ahead or ``client.map`` a batch of asks.

    Examples
    --------
    >>> from toolkit.searchers import EvolutionSearcher, RandomSearcher
    >>> isinstance(RandomSearcher(seed=0), Searcher), RandomSearcher.independent
    (True, True)
    >>> EvolutionSearcher(population_size=8, sample_size=2)
    EvolutionSearcher(population_size=8, sample_size=2, seed=None)
    """

    independent: ClassVar[bool] = False

    seed: int | None

    # -- parameters (scikit-learn conventions) -------------------------------------------
    def validate(self) -> None:
        """Check the stored parameters; raise :class:`ConfigError` with a corrected call."""
        seed = getattr(self, "seed", None)
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ConfigError(
                f"{type(self).__name__} seed must be an int or None; got {seed!r}. "
                f"For example {type(self).__name__}(seed=0)."
            )

    # -- lifecycle ------------------------------------------------------------------------
    def setup(self, space: SearchSpace, objective: Objective | None = None) -> None:
        """Bind to a space and an objective, validating the parameters; resets all state.

        Called once before any :meth:`ask`. It ends with :meth:`reset`.

        Parameters
        ----------
        space
            The search space to propose configs from.
        objective
            The metric and its direction; ``Objective()`` (``val_accuracy``,
            ``max``) when omitted.
        """
        if not isinstance(space, SearchSpace):
            raise ConfigError(
                f"{type(self).__name__}.setup needs a SearchSpace; got {type(space).__name__} {space!r:.80}. "
                "Wrap the space function: searcher.setup(SearchSpace(my_space), Objective('val_accuracy'))."
            )
        objective = Objective() if objective is None else objective
        if not isinstance(objective, Objective):
            raise ConfigError(
                f"{type(self).__name__}.setup needs an Objective; got {objective!r}. "
                "Pass, for example, Objective('val_accuracy', 'max')."
            )
        self.validate()
        self.space_ = space
        self.objective_ = objective
        seed = getattr(self, "seed", None)
        self.seed_: int = seed if seed is not None else random.SystemRandom().randrange(2**32)
        self.reset()

    def reset(self) -> None:
        """Forget every ask and tell (keeping the space, objective and ``seed_``).

        Subclasses that keep state extend it (call ``super().reset()``).
        """
        self.n_asked_ = 0

    def check_setup(self) -> None:
        """Raise a clear error when :meth:`setup` has not been called."""
        if not hasattr(self, "space_"):
            raise RuntimeError(
                f"{type(self).__name__} is not bound to a search space; call "
                "searcher.setup(space, objective) before ask(), tell() or restore()."
            )

    @abc.abstractmethod
    def ask(self) -> Config | None:
        """The next config to evaluate, or ``None`` when the space is exhausted.

        Implementations draw their randomness from :meth:`rng_for` with
        ``self.n_asked_`` and call :meth:`note_ask` with the config they return.
        """

    def tell(self, trial: Trial) -> None:  # noqa: B027 - an optional hook, a no-op by default
        """Learn from a terminal trial (finished, failed or stopped). No-op by default.

        It may come more than once for the same ``trial_id`` (once per rung of a
        multi-fidelity scheduler, with a growing ``trial.budget``), for several
        pending trials in any order, and for configs this searcher never asked.
        """

    def note_ask(self, config: Config) -> None:
        """Record that ``config`` is ask number ``n_asked_`` (then count it).

        :meth:`ask` calls it for the config it returns and :meth:`restore` for
        every trial of the history. Subclasses that keep per-ask state extend it.
        """
        self.n_asked_ += 1

    def restore(self, trials: Sequence[Trial]) -> None:
        """Rebuild the state from a journal's trials, given in the order they were asked.

        Pending and running trials were asked but not told and stay pending;
        the others are told. After ``setup`` and ``restore(history)``, the next
        :meth:`ask` is the one the original searcher would have made, given the
        same seed (with ``seed=None``, build the new searcher with the
        original's ``seed_``).

        Examples
        --------
        >>> from toolkit.searchers import RandomSearcher
        >>> space = SearchSpace(lambda hp: {"x": hp.float("x", 0.0, 1.0)})
        >>> a, b = RandomSearcher(seed=0), RandomSearcher(seed=0)
        >>> a.setup(space)
        >>> history = [Trial(i, a.ask(), TrialStatus.PENDING) for i in range(3)]
        >>> b.setup(space)
        >>> b.restore(history)
        >>> a.ask() == b.ask()
        True
        """
        self.check_setup()
        self.reset()
        for trial in trials:
            self.note_ask(dict(trial.config))
        for trial in trials:
            if status_of(trial) in TOLD_STATUSES:
                self.tell(trial)

    # -- helpers --------------------------------------------------------------------------
    def rng_for(self, k: int) -> random.Random:
        """The random generator of ask number ``k``: a function of ``(seed_, k)`` only.

        Examples
        --------
        >>> from toolkit.searchers import RandomSearcher
        >>> from toolkit.spaces import mlp
        >>> s = RandomSearcher(seed=1)
        >>> s.setup(SearchSpace(mlp))
        >>> s.rng_for(5).random() == s.rng_for(5).random()
        True
        """
        return random.Random(f"{self.seed_}:{k}")


class AskBook:
    """Matches told trials to the asks that produced them, by config.

    Several asks may be pending at once and be told in any order; each ask is
    registered with a reference (an ask index, an Optuna trial number). The
    first tell of a ``trial_id`` takes the oldest pending ask with the same
    config; later tells of that ``trial_id`` return the same reference.

    Examples
    --------
    >>> book = AskBook()
    >>> book.add({"x": 1}, "first")
    >>> book.add({"x": 1}, "second")
    >>> t = Trial(7, {"x": 1}, TrialStatus.FINISHED, value=0.5)
    >>> book.match(t), book.match(t)
    (('first', True), ('first', False))
    >>> book.match(Trial(8, {"x": 2}, TrialStatus.FAILED))
    (None, True)
    """

    __slots__ = ("_pending", "_bound")

    def __init__(self) -> None:
        self._pending: dict[str, deque[Hashable]] = {}
        self._bound: dict[int, Hashable | None] = {}

    def add(self, config: Config, ref: Hashable) -> None:
        """Register a pending ask of ``config``."""
        self._pending.setdefault(config_key(config), deque()).append(ref)

    def match(self, trial: Trial) -> tuple[Hashable | None, bool]:
        """``(reference, first)``: the ask ``trial`` answers (``None``: not asked) and whether it is new."""
        if trial.trial_id in self._bound:
            return self._bound[trial.trial_id], False
        key = config_key(trial.config)
        queue = self._pending.get(key)
        ref = None
        if queue:
            ref = queue.popleft()
            if not queue:
                del self._pending[key]
        self._bound[trial.trial_id] = ref
        return ref, True

    def bind(self, trial_id: int, ref: Hashable) -> None:
        """Attach a reference to a trial that :meth:`match` did not find."""
        self._bound[trial_id] = ref

    @property
    def n_pending(self) -> int:
        """How many asks are not yet told."""
        return sum(len(q) for q in self._pending.values())
