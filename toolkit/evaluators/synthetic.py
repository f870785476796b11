"""A synthetic evaluator with no TensorFlow, for engine tests and benchmarks.

Its score is a deterministic function of the config, it can draw a learning
curve over epochs (so multi-fidelity schedulers have something to rank), sleep
to imitate work, and fail on purpose.

Examples
--------
>>> ev = SyntheticEvaluator(epochs=3)
>>> r = ev({}, config={"x": 0.5}, seed=0)
>>> r["epochs"], len(r["history"]["val_accuracy"])
(3, 3)
>>> r["history"] == ev({}, config={"x": 0.5}, seed=0)["history"]
True
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from typing import Any

from toolkit.evaluators.base import Evaluator

_PROCESS_TRIALS = 0  # trials this process has run, reported like the Keras evaluator does


def _unit(*parts: Any) -> float:
    """A stable pseudo-random number in [0, 1) from ``parts``."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "big") / 2**64


def config_quality(config: dict[str, Any]) -> float:
    """The asymptotic accuracy of a config, in [0.5, 0.95]."""
    if not config:
        return 0.75
    scores = []
    for name, value in sorted(config.items()):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            phase = 2 * math.pi * _unit(name)
            scores.append(0.5 + 0.5 * math.sin(3.0 * math.log1p(abs(float(value))) + phase))
        else:
            scores.append(_unit(name, value))
    return 0.5 + 0.45 * sum(scores) / len(scores)


class SyntheticEvaluator(Evaluator):
    """Scores a config without training anything.

    Parameters
    ----------
    epochs
        Epochs when the runner gives no budget.
    sleep
        Seconds to sleep per trial (spread over its epochs), to imitate work.
    fail_rate
        Fraction of configs (chosen deterministically by hash) that raise.
    fail_on
        ``{name: value}``: configs with any of these values raise.
    noise
        Standard deviation of seeded per-epoch noise on the curve.
    objective
        Name of the metric the score is reported under.

    The curve is ``q - (q - 0.1) * exp(-epoch / tau)``, with ``q`` from
    :func:`config_quality` and ``tau`` from the config's hash, so configs that
    are good early tend to be good late, as multi-fidelity search assumes.
    """

    def __init__(
        self,
        epochs: int = 1,
        sleep: float = 0.0,
        fail_rate: float = 0.0,
        fail_on: dict[str, Any] | None = None,
        noise: float = 0.0,
        objective: str = "val_accuracy",
    ):
        self.epochs = epochs
        self.sleep = sleep
        self.fail_rate = fail_rate
        self.fail_on = fail_on
        self.noise = noise
        self.objective = objective

    def __call__(
        self,
        arch: Any,
        *,
        config: dict[str, Any],
        budget: float | None = None,
        trial_dir: str | None = None,
        seed: int = 0,
        resume: bool = False,
    ) -> dict[str, Any]:
        global _PROCESS_TRIALS
        _PROCESS_TRIALS += 1
        start = time.perf_counter()
        for name, bad in (self.fail_on or {}).items():
            if config.get(name) == bad:
                raise ValueError(f"synthetic failure: {name}={bad!r}")
        if self.fail_rate and _unit("fail", config) < self.fail_rate:
            raise RuntimeError("synthetic failure injected by fail_rate")
        total = int(budget if budget is not None else self.epochs)
        first = 1
        ckpt = os.path.join(trial_dir, "synthetic_checkpoint.json") if trial_dir else None
        if resume and ckpt and os.path.exists(ckpt):
            with open(ckpt) as fh:
                first = int(json.load(fh)["epoch"]) + 1
        q = config_quality(config)
        tau = 0.5 + 2.5 * _unit("tau", config)
        epochs = list(range(first, total + 1))
        if self.sleep and epochs:
            time.sleep(self.sleep)
        acc, loss = [], []
        for e in epochs:
            a = q - (q - 0.1) * math.exp(-e / tau)
            if self.noise:
                a += self.noise * (2 * _unit("noise", seed, e, config) - 1)
            acc.append(a)
            loss.append(-math.log(max(a, 1e-6)))
        if ckpt and epochs:
            tmp = f"{ckpt}.{os.getpid()}.tmp"
            with open(tmp, "w") as fh:
                json.dump({"epoch": epochs[-1]}, fh)
            os.replace(tmp, ckpt)
        best = max(range(len(acc)), key=acc.__getitem__) if acc else None
        return {
            self.objective: acc[best] if acc else float("nan"),
            "val_loss": loss[best] if acc else float("nan"),
            "best_epoch": epochs[best] if acc else None,
            "epochs": total,
            "num_params": int(1000 + 1e6 * _unit("params", config)),
            "history": {"epoch": epochs, self.objective: acc, "val_loss": loss},
            "train_time_s": time.perf_counter() - start,
            "process_trials": _PROCESS_TRIALS,
        }
