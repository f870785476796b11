"""Folding journal events into the state of each trial.

The journal is the single source of truth: the runner rebuilds its state from
it on resume, and searchers and schedulers are restored from the records built
here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from toolkit.trial import Objective, Trial, TrialStatus

__all__ = ["TrialRecord", "fold", "merge_history"]


def merge_history(old: dict[str, list] | None, new: dict[str, list] | None) -> dict[str, list]:
    """Merge per-epoch histories keyed by ``"epoch"``; later epochs overwrite earlier ones.

    Examples
    --------
    >>> merge_history({"epoch": [1, 2], "loss": [3.0, 2.0]}, {"epoch": [3], "loss": [1.0]})
    {'epoch': [1, 2, 3], 'loss': [3.0, 2.0, 1.0]}
    """
    if not old or not old.get("epoch"):
        return {k: list(v) for k, v in (new or {}).items()}
    if not new or not new.get("epoch"):
        return {k: list(v) for k, v in old.items()}
    rows: dict[int, dict[str, Any]] = {}
    for hist in (old, new):
        keys = [k for k in hist if k != "epoch"]
        for i, e in enumerate(hist["epoch"]):
            row = rows.setdefault(int(e), {})
            for k in keys:
                vals = hist[k]
                if i < len(vals):
                    row[k] = vals[i]
    epochs = sorted(rows)
    names = list(dict.fromkeys(k for h in (old, new) for k in h if k != "epoch"))
    out: dict[str, list] = {"epoch": epochs}
    for k in names:
        out[k] = [rows[e].get(k, math.nan) for e in epochs]
    return out


@dataclass
class TrialRecord:
    """The mutable state of one trial while events are folded."""

    trial_id: int
    config: dict[str, Any]
    seed: int = 0
    status: TrialStatus = TrialStatus.PENDING
    value: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    traceback: str | None = None
    attempts: int = 0
    starts: set[str] = field(default_factory=set)
    budget: float | None = None
    rung: int | None = None
    bracket: int | None = None
    rung_values: dict[int, float | None] = field(default_factory=dict)
    rung_status: dict[int, str] = field(default_factory=dict)
    history: dict[str, list] = field(default_factory=dict)
    start_info: dict[str, Any] = field(default_factory=dict)
    sampled_t: float | None = None
    finished_t: float | None = None
    duration_s: float = 0.0

    def to_trial(self) -> Trial:
        """The immutable :class:`Trial` searchers are told about."""
        return Trial(
            trial_id=self.trial_id,
            config=self.config,
            status=self.status,
            value=self.value,
            result=self.result,
            error=self.error,
            budget=self.budget,
            rung=self.rung,
            attempts=self.attempts,
        )


def fold(events: list[dict[str, Any]], objective: Objective | None = None) -> dict[int, TrialRecord]:
    """Replay events into ``{trial_id: TrialRecord}`` (insertion order = sampling order)."""
    trials: dict[int, TrialRecord] = {}
    for ev in events:
        kind = ev.get("event")
        tid = ev.get("trial")
        if kind == "sampled":
            if tid in trials:  # a re-sample after a crash before any other event: keep the first
                continue
            trials[tid] = TrialRecord(
                trial_id=tid,
                config=ev.get("config", {}),
                seed=ev.get("seed", 0),
                budget=ev.get("budget"),
                rung=ev.get("rung"),
                bracket=ev.get("bracket"),
                sampled_t=ev.get("t"),
            )
            if ev.get("rung") is not None:
                trials[tid].rung_status[ev["rung"]] = "running"
            continue
        rec = trials.get(tid)
        if rec is None:
            continue
        if kind == "started":
            rec.starts.add(ev.get("token", str(len(rec.starts))))
            rec.attempts = max(rec.attempts, len(rec.starts))
            rec.start_info = ev
            if not rec.status.is_terminal:
                rec.status = TrialStatus.RUNNING
        elif kind == "finished":
            rec.status = TrialStatus.FINISHED
            rec.value = ev.get("value")
            res = ev.get("result") or {}
            rec.history = merge_history(rec.history, res.get("history"))
            rec.result = res
            rec.error = None
            rec.attempts = max(rec.attempts, ev.get("attempts", 0))
            rec.finished_t = ev.get("t")
            rec.duration_s += ev.get("duration_s", 0.0) or 0.0
            if ev.get("start"):
                rec.start_info = ev["start"]
            if ev.get("rung") is not None:
                rec.rung = ev["rung"]
                rec.budget = ev.get("budget", rec.budget)
                rec.rung_values[ev["rung"]] = rec.value
                rec.rung_status[ev["rung"]] = "finished"
        elif kind == "failed":
            rec.status = TrialStatus.FAILED
            rec.error = ev.get("error")
            rec.traceback = ev.get("traceback")
            rec.attempts = max(rec.attempts, ev.get("attempts", 0))
            rec.finished_t = ev.get("t")
            rec.duration_s += ev.get("duration_s", 0.0) or 0.0
            if ev.get("start"):
                rec.start_info = ev["start"]
            if ev.get("rung") is not None:
                rec.rung = ev["rung"]
                rec.rung_status[ev["rung"]] = "failed"
        elif kind == "stopped":
            if not rec.status.is_terminal or rec.rung_status.get(rec.rung or 0) == "running":
                rec.status = TrialStatus.STOPPED
        elif kind == "promoted":
            rec.status = TrialStatus.PENDING
            rec.starts = set()  # attempts count per rung
            rec.attempts = 0
            rec.rung = ev.get("rung")
            rec.budget = ev.get("budget")
            rec.rung_status[ev["rung"]] = "running"
    return trials
