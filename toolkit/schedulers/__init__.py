"""Multi-fidelity schedulers: successive halving, Hyperband and ASHA, as pure policies.

A scheduler decides, from the records of the trials run so far, what a free
worker slot should do next: start a new config, promote a trial to a larger
budget, wait, or nothing (the plan is complete). There is no Dask in here; the
runner asks and carries out. :func:`simulate` costs a plan without running it.

Examples
--------
>>> sched = get_scheduler("sh", max_budget=27)
>>> sched.budgets()
[1.0, 3.0, 9.0, 27.0]
>>> simulate(sched, n_workers=4).trials_per_rung
{(0, 0): 27, (0, 1): 9, (0, 2): 3, (0, 3): 1}
"""

from __future__ import annotations

from typing import Any

from toolkit.errors import ConfigError, did_you_mean
from toolkit.schedulers.asha import ASHA
from toolkit.schedulers.base import WAIT, Job, RungRecord, Scheduler
from toolkit.schedulers.halving import Bracket, SuccessiveHalving
from toolkit.schedulers.hyperband import Hyperband
from toolkit.schedulers.simulate import SimulationResult, simulate

SCHEDULERS: dict[str, type[Scheduler]] = {
    "sh": SuccessiveHalving,
    "successive_halving": SuccessiveHalving,
    "hyperband": Hyperband,
    "asha": ASHA,
}


def get_scheduler(name: str, **params: Any) -> Scheduler:
    """Build a scheduler by name, checking its parameters.

    Parameters
    ----------
    name
        ``"sh"`` (or ``"successive_halving"``), ``"hyperband"`` or ``"asha"``;
        case and dashes don't matter.
    **params
        The scheduler's keyword arguments.

    Examples
    --------
    >>> get_scheduler("hyperband", max_budget=27, eta=3)
    Hyperband(min_budget=1, max_budget=27, eta=3, resource='epochs')
    >>> get_scheduler("asah")
    Traceback (most recent call last):
    ...
    toolkit.errors.ConfigError: unknown scheduler 'asah' (did you mean 'asha'?); valid names are \
['sh', 'successive_halving', 'hyperband', 'asha'].
    """
    key = str(name).strip().lower().replace("-", "_")
    if key not in SCHEDULERS:
        raise ConfigError(
            f"unknown scheduler {name!r}{did_you_mean(key, SCHEDULERS)}; valid names are {list(SCHEDULERS)}."
        )
    return SCHEDULERS[key].from_params(params)


__all__ = [
    "ASHA",
    "WAIT",
    "Bracket",
    "Hyperband",
    "Job",
    "RungRecord",
    "Scheduler",
    "SimulationResult",
    "SuccessiveHalving",
    "get_scheduler",
    "simulate",
]
