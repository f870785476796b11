"""Asynchronous successive halving, ASHA (Li et al. 2020): no barriers.

Whenever a slot frees, look at the rungs from the highest promotable one down:
in rung ``k``, the candidates are the best ``floor(n_k / eta)`` trials, where
``n_k`` counts the trials that ended there. The best candidate not yet promoted
goes on to rung ``k + 1``. When no rung has one, a new config starts at rung 0.

Rules
-----
* Only ended trials count: running records are neither ranked nor in ``n_k``.
* Failed trials count in ``n_k`` (they ran, like a score of minus infinity) and
  rank below every finished trial, but are never promoted. So the best
  ``min(floor(n_k / eta), finished)`` finished trials are promoted, as in
  :class:`~toolkit.schedulers.SuccessiveHalving`.
* Ties go to the earlier trial id; a finished score of ``None``/NaN ranks below
  every number.
* A trial is promoted from a rung at most once (a record at rung ``k + 1``, in
  any status, means it was), and never from the top rung.
* ``max_trials`` reached: :data:`WAIT` while jobs run (they may make promotions
  possible), else ``None``. With ``max_trials=None`` ASHA never ends by itself.
* Promotions are never undone: a trial promoted while it was in the top
  ``1/eta`` stays promoted if later trials push it out, so a rung can end with
  a few more than ``n_k // eta`` promoted from it (as in the paper).

Each decision sorts the records: ``O(n log n)`` for ``n`` records.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

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


class ASHA(Scheduler):
    """Asynchronous successive halving: promote as soon as a trial is in its rung's top ``1/eta``.

    Parameters
    ----------
    min_budget
        Budget of rung 0.
    max_budget
        Largest budget; rungs are ``min_budget * eta**i`` up to it (the top rung
        is the largest such budget below it when the ratio is not a power of ``eta``).
    eta
        Promotion factor, an integer >= 2: the top ``1/eta`` of a rung go on.
    resource
        Name of the budget's unit.

    Notes
    -----
    The number of configs comes from ``max_trials`` in :meth:`next_job`; ASHA
    has no plan of its own (``bounded`` is ``False``). Every job is in bracket 0.
    See the module docstring for ties, failures and running trials.

    Examples
    --------
    >>> asha = ASHA(max_budget=9)
    >>> recs = [RungRecord(i, 0, 0, 1.0, "finished", s) for i, s in enumerate([0.2, 0.8, 0.5])]
    >>> asha.next_job(recs, n_started=3, max_trials=10)
    Job(kind='promote', bracket=0, rung=1, budget=3.0, trial_id=1)
    >>> recs.append(RungRecord(1, 0, 1, 3.0, "running"))
    >>> asha.next_job(recs, n_started=3, max_trials=10)
    Job(kind='new', bracket=0, rung=0, budget=1.0, trial_id=None)
    >>> asha.next_job(recs, n_started=10, max_trials=10)
    WAIT
    """

    name = "asha"
    bounded = False

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

    def next_job(
        self, records: Sequence[RungRecord], n_started: int, max_trials: int | None = None
    ) -> Job | _Wait | None:
        """Promote the best candidate of the highest rung that has one, else start a config."""
        budgets = self.budgets()
        eta = int(self.eta)
        by_rung = group_records(records, type(self).__name__, [len(budgets)]).get(0, {})
        for k in range(len(budgets) - 2, -1, -1):
            ended = [r for r in by_rung.get(k, ()) if r.status != RUNNING]
            quota = len(ended) // eta
            if quota == 0:
                continue
            promoted = {r.trial_id for r in by_rung.get(k + 1, ())}
            for r in heapq.nsmallest(quota, ended, key=rank_key):
                if r.status == FINISHED and r.trial_id not in promoted:
                    return Job("promote", 0, k + 1, budgets[k + 1], r.trial_id)
        if max_trials is None or n_started < max_trials:
            return Job("new", 0, 0, budgets[0])
        if any(r.status == RUNNING for recs in by_rung.values() for r in recs):
            return WAIT
        return None
