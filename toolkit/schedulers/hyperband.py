"""Hyperband (Li et al. 2018): successive halving over several brackets.

Bracket ``s`` (from ``s_max = floor(log_eta(max_budget / min_budget))`` down to
0) starts ``n = ceil((s_max + 1) / (s + 1) * eta**s)`` configs at budget
``r = max_budget * eta**-s`` and halves them as
:class:`~toolkit.schedulers.SuccessiveHalving` does. Bracket index ``b`` in
records and jobs is ``s_max - s``: bracket 0 is the most exploratory one.

Overlap rule
------------
Brackets are visited in order, 0 first, and the first bracket that has work (a
config to start or a trial to promote) gets the free slot. A bracket waiting at
its barrier does not hold the others back: the next bracket starts while it
waits, so workers stay busy. Since a bracket hands out all its rung-0 jobs
before its first barrier, new configs are still started bracket by bracket, and
``max_trials`` cuts the plan in bracket order. :data:`WAIT` comes back only when
every unfinished bracket waits at a barrier, and ``None`` when all are complete.
The plan is one Hyperband iteration; it does not repeat.
"""

from __future__ import annotations

from collections.abc import Sequence

from toolkit.schedulers.base import (
    WAIT,
    Job,
    RungRecord,
    Scheduler,
    _Wait,
    group_records,
)
from toolkit.schedulers.halving import Bracket, bracket_step, rung_sizes


class Hyperband(Scheduler):
    """Hyperband: brackets of synchronous successive halving, from exploratory to conservative.

    Parameters
    ----------
    min_budget
        Smallest budget (of the first rung of bracket 0).
    max_budget
        Largest budget; every bracket's top rung. When ``max_budget /
        min_budget`` is not a power of ``eta``, darch keeps the ladder
        ``min_budget * eta**i`` of :class:`SuccessiveHalving` and tops it at the
        largest such budget below ``max_budget`` (the paper's
        ``max_budget * eta**-s`` would give fractional epochs).
    eta
        Halving factor, an integer >= 2.
    resource
        Name of the budget's unit.

    Notes
    -----
    See the module docstring for the overlap rule between brackets, and
    :mod:`toolkit.schedulers.halving` for barriers, failures and ties.

    Examples
    --------
    >>> hb = Hyperband(max_budget=81, eta=3)
    >>> [(b.n_configs, b.budgets[0]) for b in hb.brackets()]
    [(81, 1.0), (34, 3.0), (15, 9.0), (8, 27.0), (5, 81.0)]
    >>> hb.brackets()[1].sizes
    (34, 11, 3, 1)
    >>> hb.budgets()
    [1.0, 3.0, 9.0, 27.0, 81.0]
    """

    name = "hyperband"

    def __init__(
        self,
        min_budget: float = 1,
        max_budget: float = 81,
        eta: int = 3,
        resource: str = "epochs",
    ):
        self.min_budget = min_budget
        self.max_budget = max_budget
        self.eta = eta
        self.resource = resource

    def brackets(self) -> list[Bracket]:
        """The plan of every bracket, in the order they are started."""
        ladder = self.budgets()
        eta = int(self.eta)
        s_max = len(ladder) - 1
        out = []
        for s in range(s_max, -1, -1):
            n = -(-((s_max + 1) * eta**s) // (s + 1))  # ceil((s_max+1)/(s+1) * eta**s), exactly
            budgets = tuple(ladder[s_max - s :])
            out.append(Bracket(s_max - s, n, tuple(rung_sizes(n, len(budgets), eta)), budgets))
        return out

    def next_job(
        self, records: Sequence[RungRecord], n_started: int, max_trials: int | None = None
    ) -> Job | _Wait | None:
        """The first bracket with work gets the slot; see the module docstring."""
        plan = self.brackets()
        groups = group_records(records, type(self).__name__, [len(b.budgets) for b in plan])
        may_start = max_trials is None or n_started < max_trials
        waiting = False
        for b in plan:
            step = bracket_step(
                groups.get(b.index, {}), b.index, b.n_configs, b.budgets, int(self.eta), may_start
            )
            if step is WAIT:
                waiting = True
            elif step is not None:
                return step
        return WAIT if waiting else None
