"""What every multi-fidelity scheduler shares: records, jobs, the WAIT sentinel, the base class.

A scheduler is a pure policy. The runner keeps one :class:`RungRecord` per
(trial, rung) that a trial was run at, and whenever a worker slot frees it asks
:meth:`Scheduler.next_job` what to do. The answer depends on the records alone,
so resuming a search is replaying its journal: the same records give the same
decision, on any machine, after any crash.

The caller's side of the contract:

* Before asking again, add a ``"running"`` record for every :class:`Job` you
  were given (for a new config, with the trial id you chose for it). A policy
  that is asked twice with the same records gives the same job twice.
* When the job ends, replace that record with a ``"finished"`` one carrying the
  score (higher is better, as :meth:`toolkit.trial.Objective.score` gives) or a
  ``"failed"`` one.
* ``n_started`` counts the distinct new configs started so far (promotions are
  not new configs); ``max_trials`` caps it.

Examples
--------
>>> rec = RungRecord(trial_id=0, bracket=0, rung=0, budget=1.0, status="finished", score=0.9)
>>> rec.is_done
True
>>> Job("new", bracket=0, rung=0, budget=1.0)
Job(kind='new', bracket=0, rung=0, budget=1.0, trial_id=None)
>>> WAIT
WAIT
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from toolkit.errors import ConfigError
from toolkit.params import Params

RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"
STATUSES = (RUNNING, FINISHED, FAILED)


class _Wait:
    """The type of :data:`WAIT`; there is exactly one instance."""

    _instance: ClassVar[_Wait | None] = None

    def __new__(cls) -> _Wait:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "WAIT"

    def __reduce__(self) -> str:
        return "WAIT"  # unpickles to the module-level singleton


WAIT = _Wait()
"""Returned by :meth:`Scheduler.next_job` when there is nothing to start until a
running job finishes (a synchronous rung waiting at its barrier). Compare with
``is``. It is only ever returned while at least one record is running."""


@dataclass(frozen=True)
class RungRecord:
    """One trial run at one rung: what a scheduler decides from.

    Parameters
    ----------
    trial_id
        The trial, as the runner numbered it.
    bracket
        The bracket it belongs to (always 0 except under :class:`Hyperband`).
    rung
        The rung index inside the bracket, 0 for the first.
    budget
        The cumulative budget of that rung (for example epochs trained up to).
    status
        ``"running"``, ``"finished"`` or ``"failed"``.
    score
        Higher is better (already passed through ``Objective.score``). Only
        read for finished records; ``None`` or NaN ranks below every number.

    Examples
    --------
    >>> RungRecord(3, 0, 1, 3.0, "running").is_done
    False
    """

    trial_id: int
    bracket: int
    rung: int
    budget: float
    status: str
    score: float | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ConfigError(
                f"a rung record's status must be one of {list(STATUSES)}; got {self.status!r} "
                f"for trial {self.trial_id} at rung {self.rung}. Record a stopped or lost job as "
                "'failed', or drop its record so that the job is given again."
            )

    @property
    def is_done(self) -> bool:
        """``True`` once the job ended (finished or failed)."""
        return self.status != RUNNING


@dataclass(frozen=True)
class Job:
    """What a scheduler asks the runner to do with a free worker slot.

    Parameters
    ----------
    kind
        ``"new"``: sample and start a new config; ``"promote"``: continue trial
        ``trial_id`` from its checkpoint up to ``budget``.
    bracket
        The bracket the job belongs to (record it in the job's records).
    rung
        The rung it runs at.
    budget
        The cumulative budget to train up to.
    trial_id
        The trial to promote; ``None`` for a new config (the runner numbers it).

    Examples
    --------
    >>> Job("promote", bracket=0, rung=2, budget=9.0, trial_id=4)
    Job(kind='promote', bracket=0, rung=2, budget=9.0, trial_id=4)
    """

    kind: Literal["new", "promote"]
    bracket: int
    rung: int
    budget: float
    trial_id: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("new", "promote"):
            raise ValueError(f"a job's kind must be 'new' or 'promote'; got {self.kind!r}")
        if (self.kind == "new") != (self.trial_id is None):
            raise ValueError(
                f"a {self.kind!r} job must {'not ' if self.kind == 'new' else ''}name a trial_id"
            )


def rank_key(record: RungRecord) -> tuple[int, float, int]:
    """Sort key, best first: finished by score (higher first), then failed; ties by earlier trial id.

    A finished record whose score is ``None`` or NaN ranks below every finished
    record with a number and above failed records.

    Examples
    --------
    >>> recs = [RungRecord(2, 0, 0, 1.0, "finished", 0.5), RungRecord(1, 0, 0, 1.0, "finished", 0.5),
    ...         RungRecord(0, 0, 0, 1.0, "failed"), RungRecord(3, 0, 0, 1.0, "finished", 0.7)]
    >>> [r.trial_id for r in sorted(recs, key=rank_key)]
    [3, 1, 2, 0]
    """
    score = record.score
    if score is None or not isinstance(score, (int, float)) or math.isnan(score):
        score = -math.inf
    return (0 if record.status == FINISHED else 1, -float(score), record.trial_id)


def budget_ladder(min_budget: float, max_budget: float, eta: int) -> list[float]:
    """Rung budgets ``min_budget * eta**i`` for every ``i`` that stays within ``max_budget``.

    When ``max_budget / min_budget`` is not a power of ``eta``, the top rung is
    the largest such budget below ``max_budget``.

    Examples
    --------
    >>> budget_ladder(1, 81, 3)
    [1.0, 3.0, 9.0, 27.0, 81.0]
    >>> budget_ladder(2, 100, 3)
    [2.0, 6.0, 18.0, 54.0]
    """
    ladder = [float(min_budget)]
    while min_budget * eta ** len(ladder) <= max_budget * (1 + 1e-9):
        ladder.append(float(min_budget * eta ** len(ladder)))
    return ladder


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_geometry(owner: str, min_budget: Any, max_budget: Any, eta: Any) -> None:
    """Refuse budgets and ``eta`` that no plan can be built from, saying how to fix them.

    Examples
    --------
    >>> check_geometry("ASHA", 1, 81, 3)
    >>> check_geometry("ASHA", 1, 81, 1)
    Traceback (most recent call last):
    ...
    toolkit.errors.ConfigError: ASHA: eta must be an integer >= 2 (each rung keeps the best 1/eta of the \
rung below); got eta=1. For example: ASHA(min_budget=1, max_budget=81, eta=3).
    """
    example = f"For example: {owner}(min_budget=1, max_budget=81, eta=3)."
    if not _is_number(eta) or eta != int(eta) or eta < 2:
        raise ConfigError(
            f"{owner}: eta must be an integer >= 2 (each rung keeps the best 1/eta of the rung below); "
            f"got eta={eta!r}. {example}"
        )
    if not _is_number(min_budget) or not _is_number(max_budget):
        raise ConfigError(
            f"{owner}: min_budget and max_budget must be finite numbers (of the resource, e.g. epochs); "
            f"got min_budget={min_budget!r}, max_budget={max_budget!r}. {example}"
        )
    if not 0 < min_budget <= max_budget:
        raise ConfigError(
            f"{owner}: budgets must satisfy 0 < min_budget <= max_budget; got min_budget={min_budget!r}, "
            f"max_budget={max_budget!r}. {example}"
        )


def group_records(
    records: Iterable[RungRecord], owner: str, rungs_per_bracket: Sequence[int]
) -> dict[int, dict[int, list[RungRecord]]]:
    """``{bracket: {rung: [records]}}``, refusing records that do not fit the plan.

    ``rungs_per_bracket[b]`` is the number of rungs of bracket ``b``. A record
    outside the plan means the journal was written with other scheduler settings.
    """
    groups: dict[int, dict[int, list[RungRecord]]] = {}
    for rec in records:
        if not (0 <= rec.bracket < len(rungs_per_bracket) and 0 <= rec.rung < rungs_per_bracket[rec.bracket]):
            raise ConfigError(
                f"{owner}: trial {rec.trial_id} has a record at bracket {rec.bracket}, rung {rec.rung}, "
                f"outside this scheduler's plan (rungs per bracket: {list(rungs_per_bracket)}). Were the "
                "records written with other scheduler settings? Resume with the scheduler that wrote them."
            )
        groups.setdefault(rec.bracket, {}).setdefault(rec.rung, []).append(rec)
    return groups


class Scheduler(Params, abc.ABC):
    """Base class of multi-fidelity scheduling policies.

    Following scikit-learn, ``__init__`` only stores its keyword arguments:
    schedulers print, compare equal and rebuild from :meth:`get_params`, which
    is what ``experiment.json`` records. Settings are checked by
    :meth:`from_params` and at first use (:meth:`next_job`, :meth:`budgets`).

    Subclasses implement :meth:`next_job` and :meth:`budgets`, and may override
    :meth:`validate`.

    Attributes
    ----------
    name
        The name :func:`toolkit.schedulers.get_scheduler` knows it by.
    bounded
        Whether the policy has a plan of its own, that is whether
        :meth:`next_job` eventually returns ``None`` with ``max_trials=None``.

    Examples
    --------
    >>> from toolkit.schedulers import SuccessiveHalving
    >>> sh = SuccessiveHalving.from_params({"max_budget": 9})
    >>> sh
    SuccessiveHalving(min_budget=1, max_budget=9, eta=3, n_configs=None, resource='epochs')
    >>> sh == SuccessiveHalving(**sh.get_params())
    True
    """

    name: ClassVar[str] = ""
    bounded: ClassVar[bool] = True
    resource: str = "epochs"

    def validate(self) -> None:
        """Raise :class:`~toolkit.errors.ConfigError` for invalid settings: ``resource`` and the budget ladder."""
        if not isinstance(self.resource, str) or not self.resource:
            raise ConfigError(
                f"{type(self).__name__}: resource must name the budget's unit, such as 'epochs'; "
                f"got {self.resource!r}."
            )
        if hasattr(self, "min_budget"):
            check_geometry(type(self).__name__, self.min_budget, self.max_budget, self.eta)

    @abc.abstractmethod
    def next_job(
        self, records: Sequence[RungRecord], n_started: int, max_trials: int | None = None
    ) -> Job | _Wait | None:
        """What a free worker slot should do, decided from ``records`` alone.

        Parameters
        ----------
        records
            One record per (trial, rung) run so far, running ones included.
        n_started
            How many distinct new configs have been started.
        max_trials
            Cap on new configs; ``None``: the policy's own plan.

        Returns
        -------
        Job, WAIT or None
            A job to start; :data:`WAIT` when nothing can start until a running
            job finishes; ``None`` when the plan is complete and no work remains.
        """

    def budgets(self) -> list[float]:
        """The rung budgets ``min_budget * eta**i``, lowest first (all of them: Hyperband's first bracket)."""
        self.validate()
        return budget_ladder(self.min_budget, self.max_budget, int(self.eta))
