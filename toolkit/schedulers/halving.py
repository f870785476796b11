"""Synchronous successive halving (Jamieson & Talwalkar 2016; Li et al. 2018).

One bracket: start ``n_0`` configs at the lowest budget; when that rung is
complete, continue the best ``n_1 = n_0 // eta`` to the next budget; and so on
up to ``max_budget``. :func:`bracket_step` is the whole policy for one bracket;
:class:`~toolkit.schedulers.Hyperband` runs several.

Rules (shared with Hyperband)
-----------------------------
* Rung ``i`` has budget ``min_budget * eta**i`` and size
  ``max(1, n // eta**i)``, where ``n`` is the number of configs the bracket
  started. The ``max(1, ...)`` only matters when ``n < eta**(rungs-1)``: the
  best config is then still trained up to the top rung.
* A rung is complete when every job in it has finished or failed (running
  records don't count); until then the bracket WAITs at the barrier.
* Failed trials count in a rung's size (they ran) but rank below every finished
  trial and are never promoted: the best ``min(size, finished)`` are. A rung in
  which every trial failed ends the bracket early.
* Ties are broken by the earlier trial id.
* ``max_trials`` closes rung 0 early: the bracket then plans its rungs from the
  configs it did start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from toolkit.errors import ConfigError
from toolkit.schedulers.base import (
    FINISHED,
    RUNNING,
    WAIT,
    Job,
    RungRecord,
    Scheduler,
    _Wait,
    group_records,
    rank_key,
)


@dataclass(frozen=True)
class Bracket:
    """The plan of one bracket: how many trials run at which budget.

    Examples
    --------
    >>> Bracket(index=0, n_configs=9, sizes=(9, 3, 1), budgets=(1.0, 3.0, 9.0)).total(resume=True)
    21.0
    """

    index: int
    n_configs: int
    sizes: tuple[int, ...]
    budgets: tuple[float, ...]

    def total(self, resume: bool = True) -> float:
        """Budget the whole bracket trains: incremental when promotions resume from checkpoints."""
        out, prev = 0.0, 0.0
        for size, budget in zip(self.sizes, self.budgets):
            out += size * (budget - prev if resume else budget)
            prev = budget
        return out


def rung_sizes(n: int, n_rungs: int, eta: int) -> list[int]:
    """``max(1, n // eta**i)`` for each rung (``[]`` when ``n`` is 0).

    Examples
    --------
    >>> rung_sizes(81, 5, 3)
    [81, 27, 9, 3, 1]
    >>> rung_sizes(10, 3, 4)
    [10, 2, 1]
    """
    return [max(1, n // eta**i) for i in range(n_rungs)] if n > 0 else []


def bracket_step(
    by_rung: Mapping[int, Sequence[RungRecord]],
    bracket: int,
    n_configs: int,
    budgets: Sequence[float],
    eta: int,
    may_start: bool,
) -> Job | _Wait | None:
    """The next job of one synchronous successive-halving bracket.

    Parameters
    ----------
    by_rung
        The bracket's records, by rung.
    bracket
        The bracket's index (copied into the job).
    n_configs
        The configs the bracket plans to start at rung 0.
    budgets
        The bracket's rung budgets.
    eta
        The halving factor.
    may_start
        Whether a new config may be started (``max_trials`` not reached).

    Returns
    -------
    Job, WAIT or None
        ``None`` when the bracket is complete.

    Examples
    --------
    >>> bracket_step({}, 0, 3, [1.0, 3.0], 3, may_start=True)
    Job(kind='new', bracket=0, rung=0, budget=1.0, trial_id=None)
    >>> done = [RungRecord(i, 0, 0, 1.0, "finished", s) for i, s in enumerate([0.1, 0.9, 0.5])]
    >>> bracket_step({0: done}, 0, 3, [1.0, 3.0], 3, may_start=True)
    Job(kind='promote', bracket=0, rung=1, budget=3.0, trial_id=1)
    """
    rung0 = by_rung.get(0, ())
    if len(rung0) < n_configs and may_start:
        return Job("new", bracket, 0, budgets[0])
    sizes = rung_sizes(len(rung0), len(budgets), eta)
    if not sizes:
        return None
    below: Sequence[RungRecord] = ()
    for i, size in enumerate(sizes):
        here = by_rung.get(i, ())
        if i > 0:
            chosen = [r for r in sorted(below, key=rank_key)[:size] if r.status == FINISHED]
            if not chosen:
                return None  # every trial of the rung below failed
            promoted = {r.trial_id for r in here}
            for r in chosen:
                if r.trial_id not in promoted:
                    return Job("promote", bracket, i, budgets[i], r.trial_id)
        if any(r.status == RUNNING for r in here):
            return WAIT
        below = here
    return None


class SuccessiveHalving(Scheduler):
    """Synchronous successive halving: one bracket, with a barrier after each rung.

    Parameters
    ----------
    min_budget
        Budget of the first rung (for example 1 epoch).
    max_budget
        Largest budget. Rungs are ``min_budget * eta**i`` up to it; when
        ``max_budget / min_budget`` is not a power of ``eta`` the top rung is the
        largest such budget below ``max_budget``.
    eta
        Halving factor, an integer >= 2: rung ``i`` runs ``n_configs // eta**i``
        trials (at least 1).
    n_configs
        Configs started at rung 0. ``None``: ``eta**(rungs - 1)``, enough for the
        top rung to have exactly one. ``max_trials`` in :meth:`next_job` caps it.
    resource
        Name of the budget's unit, for messages and reports.

    Notes
    -----
    The rules for barriers, failures and ties are in the module docstring. All
    jobs are in bracket 0. A rung's jobs are given out best first.

    Examples
    --------
    >>> sh = SuccessiveHalving(max_budget=9)
    >>> sh.budgets(), sh.rung_sizes()
    ([1.0, 3.0, 9.0], [9, 3, 1])
    >>> sh.next_job([], n_started=0, max_trials=None)
    Job(kind='new', bracket=0, rung=0, budget=1.0, trial_id=None)
    >>> running = [RungRecord(i, 0, 0, 1.0, "running") for i in range(9)]
    >>> sh.next_job(running, n_started=9, max_trials=None)
    WAIT
    """

    name = "successive_halving"

    def __init__(
        self,
        min_budget: float = 1,
        max_budget: float = 81,
        eta: int = 3,
        n_configs: int | None = None,
        resource: str = "epochs",
    ):
        self.min_budget = min_budget
        self.max_budget = max_budget
        self.eta = eta
        self.n_configs = n_configs
        self.resource = resource

    def validate(self) -> None:
        super().validate()
        n = self.n_configs
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise ConfigError(
                f"{type(self).__name__}: n_configs must be a positive integer or None (enough for one "
                f"trial at the top rung); got n_configs={n!r}. For example: "
                f"{type(self).__name__}(max_budget={self.max_budget!r}, n_configs=27)."
            )

    def rung_sizes(self) -> list[int]:
        """Planned trials per rung (before ``max_trials`` and failures)."""
        budgets = self.budgets()
        eta = int(self.eta)
        n = self.n_configs if self.n_configs is not None else eta ** (len(budgets) - 1)
        return rung_sizes(n, len(budgets), eta)

    def next_job(
        self, records: Sequence[RungRecord], n_started: int, max_trials: int | None = None
    ) -> Job | _Wait | None:
        """The next job of the single bracket; see :meth:`Scheduler.next_job`."""
        budgets = self.budgets()
        sizes = self.rung_sizes()
        groups = group_records(records, type(self).__name__, [len(budgets)])
        may_start = max_trials is None or n_started < max_trials
        return bracket_step(groups.get(0, {}), 0, sizes[0], budgets, int(self.eta), may_start)
