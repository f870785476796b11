"""Cost a scheduler's plan without training anything.

:func:`simulate` drives a policy exactly as the runner does (one call to
``next_job`` per free slot, a running record per job given out), but a job's
"training" is a timer: it lasts as many time units as the epochs it trains, and
its score is drawn from a seeded random number generator. It reports what the
plan costs: total budget trained, trials per rung, configs, makespan and
utilization of the workers.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from toolkit.errors import ConfigError
from toolkit.schedulers.base import FINISHED, RUNNING, WAIT, Job, RungRecord, Scheduler


@dataclass(frozen=True)
class SimulationResult:
    """What a simulated plan cost.

    Attributes
    ----------
    total_budget
        Budget trained in total, in units of the scheduler's ``resource``:
        incremental when promotions resume from checkpoints, full budgets
        otherwise. ``total_epochs`` is the same number.
    n_configs
        Distinct configs started.
    n_jobs
        Jobs run (new configs plus promotions).
    trials_per_rung
        ``{(bracket, rung): trials run there}``.
    makespan
        Simulated wall time until the last job ends, in units of one worker
        training one unit of budget.
    utilization
        Busy worker time over ``n_workers * makespan`` (0 when nothing ran).
    resource
        The scheduler's budget unit.
    records
        The final records, one per (trial, rung), in the order the jobs started.
    """

    total_budget: float
    n_configs: int
    n_jobs: int
    trials_per_rung: dict[tuple[int, int], int]
    makespan: float
    utilization: float
    resource: str = "epochs"
    records: tuple[RungRecord, ...] = field(default=(), repr=False)

    @property
    def total_epochs(self) -> float:
        """Alias of :attr:`total_budget`, for a budget counted in epochs."""
        return self.total_budget


def simulate(
    policy: Scheduler,
    n_workers: int = 1,
    max_trials: int | None = None,
    seed: int = 0,
    resume: bool = True,
) -> SimulationResult:
    """Run a scheduler's plan on simulated workers and report its cost.

    Parameters
    ----------
    policy
        The scheduler to cost.
    n_workers
        Simulated worker slots, each running one job at a time.
    max_trials
        Cap on new configs, as the runner passes it. Required for a policy
        without a plan of its own (ASHA).
    seed
        Seed of the scores: the same seed gives the same result.
    resume
        Whether a promotion continues from the checkpoint (trains only the
        extra budget) or retrains from scratch (trains the full budget).

    Returns
    -------
    SimulationResult

    Notes
    -----
    Each config gets a random quality ``q``; its score at budget ``b`` is
    ``q * b / (b + 1)`` plus a little noise, so rankings mostly hold across
    rungs. Jobs that end at the same time are completed in the order they were
    started.

    Examples
    --------
    >>> from toolkit.schedulers import SuccessiveHalving
    >>> res = simulate(SuccessiveHalving(max_budget=9), n_workers=3)
    >>> res.total_epochs, res.n_configs, res.trials_per_rung
    (21.0, 9, {(0, 0): 9, (0, 1): 3, (0, 2): 1})
    >>> simulate(SuccessiveHalving(max_budget=9), resume=False).total_epochs
    27.0
    """
    if not isinstance(n_workers, int) or isinstance(n_workers, bool) or n_workers < 1:
        raise ConfigError(
            f"n_workers must be a positive integer; got {n_workers!r}. For example: n_workers=4."
        )
    if max_trials is None and not policy.bounded:
        raise ConfigError(
            f"{type(policy).__name__} has no plan of its own, so simulating it needs a cap on configs; "
            f"got max_trials=None. For example: simulate({type(policy).__name__}(), max_trials=100)."
        )
    rng = random.Random(seed)
    records: dict[tuple[int, int], RungRecord] = {}
    quality: dict[int, float] = {}
    reached: dict[int, float] = {}  # budget each trial has trained up to
    running: list[tuple[float, int, tuple[int, int]]] = []  # (end time, start order, record key)
    now = busy = 0.0
    n_started = n_jobs = 0
    done = False
    while True:
        while not done and len(running) < n_workers:
            job = policy.next_job(list(records.values()), n_started, max_trials)
            if job is None:
                done = True
            elif job is WAIT:
                if not running:
                    raise RuntimeError(f"{policy!r} returned WAIT with no job running: it would wait forever")
                break
            else:
                assert isinstance(job, Job)
                if job.kind == "new":
                    tid = n_started
                    n_started += 1
                    quality[tid] = rng.random()
                else:
                    tid = job.trial_id
                trained = job.budget - reached.get(tid, 0.0) if resume else job.budget
                reached[tid] = job.budget
                key = (tid, job.rung)
                records[key] = RungRecord(tid, job.bracket, job.rung, job.budget, RUNNING)
                heapq.heappush(running, (now + trained, n_jobs, key))
                busy += trained
                n_jobs += 1
        if not running:
            break
        now, _, key = heapq.heappop(running)
        rec = records[key]
        score = quality[rec.trial_id] * rec.budget / (rec.budget + 1) + rng.gauss(0.0, 0.01)
        records[key] = RungRecord(rec.trial_id, rec.bracket, rec.rung, rec.budget, FINISHED, score)
    per_rung: dict[tuple[int, int], int] = {}
    for rec in records.values():
        per_rung[(rec.bracket, rec.rung)] = per_rung.get((rec.bracket, rec.rung), 0) + 1
    return SimulationResult(
        total_budget=busy,
        n_configs=n_started,
        n_jobs=n_jobs,
        trials_per_rung=dict(sorted(per_rung.items())),
        makespan=now,
        utilization=busy / (n_workers * now) if now > 0 else 0.0,
        resource=policy.resource,
        records=tuple(records.values()),
    )
