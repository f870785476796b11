"""Trials, their states, and the objective they are ranked by.

A :class:`Trial` is what a searcher is told about: a config, its status and its
objective value. Finished trials are immutable (frozen dataclasses).

Examples
--------
>>> obj = Objective("val_accuracy", "max")
>>> t = Trial(0, {"x": 1}, TrialStatus.FINISHED, value=0.9)
>>> obj.score(t.value) > obj.score(0.5)
True
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass, field
from typing import Any

from toolkit.errors import ConfigError


class TrialStatus(str, enum.Enum):
    """Where a trial stands. ``PENDING`` covers sampled, queued and running."""

    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def is_terminal(self) -> bool:
        """``True`` for finished and failed trials (they count toward ``n_trials``)."""
        return self in (TrialStatus.FINISHED, TrialStatus.FAILED)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Trial:
    """One evaluated (or in-flight) config.

    ``value`` is the objective metric as reported (not negated); compare trials
    through :meth:`Objective.score`. Under a multi-fidelity scheduler a trial is
    told once per rung, with growing ``budget``.
    """

    trial_id: int
    config: dict[str, Any]
    status: TrialStatus
    value: float | None = None
    result: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    error: str | None = None
    budget: float | None = None
    rung: int | None = None
    attempts: int = 0


def config_key(config: dict[str, Any]) -> str:
    """A canonical string for a config, for duplicate detection and lookups."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Objective:
    """The metric a search optimises and its direction (``"max"`` or ``"min"``)."""

    name: str = "val_accuracy"
    mode: str = "max"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"objective must be a metric name such as 'val_accuracy'; got {self.name!r}.")
        if self.mode not in ("max", "min"):
            raise ConfigError(
                f"mode must be 'max' or 'min'; got {self.mode!r}. "
                "Use mode='max' for accuracy and mode='min' for a loss."
            )

    def score(self, value: float | None) -> float:
        """Higher is better: ``value`` for max, ``-value`` for min, ``-inf`` for missing or NaN."""
        if value is None or not isinstance(value, (int, float)) or math.isnan(value):
            return -math.inf
        return float(value) if self.mode == "max" else -float(value)

    def better(self, a: float | None, b: float | None) -> bool:
        """Whether ``a`` is strictly better than ``b``."""
        return self.score(a) > self.score(b)
