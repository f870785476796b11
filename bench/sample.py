"""Sampling throughput: RandomSearcher.ask() + json.dumps on the MNIST conv-net space, one core.

This is the master-side cost of one trial before anything reaches Dask, so it
must stay far below the per-trial cost of the runner (milliseconds). The goal
is at least 10,000 configs per second.

Usage::

    python bench/sample.py [--seconds 2.0] [--repeats 5]

Writes ``bench/results/sample.json``; the last printed line is one JSON object
with ``configs_per_s`` (the median over the repeats).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from toolkit.searchers import RandomSearcher  # noqa: E402
from toolkit.space import SearchSpace  # noqa: E402
from toolkit.spaces import conv_net  # noqa: E402

logger = logging.getLogger("bench.sample")
GOAL = 10_000


def _pin_to_one_core() -> int | None:
    """Pin this process to one CPU where the OS allows it; return the core, or None."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """What the figure was measured on."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "versions": {d: _version(d) for d in ("darch", "optuna", "numpy", "dask", "distributed")},
    }


def measure(seconds: float, seed: int) -> tuple[float, int]:
    """Ask and serialise configs for about ``seconds``; return (configs per second, count)."""
    searcher = RandomSearcher(seed=seed)
    searcher.setup(SearchSpace(conv_net, num_classes=10))
    ask, dumps = searcher.ask, json.dumps
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(1000):
            dumps(ask())
        n += 1000
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start), n


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one repeat")
    parser.add_argument("--repeats", type=int, default=5, help="how many repeats (the median is reported)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    core = _pin_to_one_core()
    measure(0.2, seed=-1)  # warm up: describe, domain caches
    runs = [measure(args.seconds, seed=r) for r in range(args.repeats)]
    rates = [rate for rate, _ in runs]
    for r, (rate, n) in enumerate(runs):
        logger.info("repeat %d: %d configs, %.0f configs/s", r, n, rate)
    result = {
        "bench": "sample",
        "what": "RandomSearcher.ask() + json.dumps(config), MNIST conv_net space, one process on one core",
        "configs_per_s": round(statistics.median(rates)),
        "configs_per_s_min": round(min(rates)),
        "configs_per_s_max": round(max(rates)),
        "us_per_config": round(1e6 / statistics.median(rates), 2),
        "goal_configs_per_s": GOAL,
        "meets_goal": statistics.median(rates) >= GOAL,
        "repeats": args.repeats,
        "seconds_per_repeat": args.seconds,
        "configs_per_repeat": [n for _, n in runs],
        "pinned_core": core,
        "space_fingerprint": SearchSpace(conv_net, num_classes=10).fingerprint,
        "machine": machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "sample.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
