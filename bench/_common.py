"""Helpers the benchmark scripts share: machine info, the LocalCluster they run on, and writing results.

Convention: a bench writes ``bench/results/<name>.json`` and prints its figures as one JSON object on
its last line of output.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PACKAGES = (
    "darch",
    "dask",
    "distributed",
    "optuna",
    "optuna-integration",
    "pandas",
    "numpy",
    "pyarrow",
    "xarray",
    "orjson",
)


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


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """What a figure was measured on: CPU, cores, memory, Python and package versions."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "versions": {d: _version(d) for d in PACKAGES},
    }


def local_cluster(n_workers: int = 2) -> Any:
    """The LocalCluster every engine bench runs on: processes, one thread each, no dashboard."""
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=40,
        env={"OMP_NUM_THREADS": "1"},
    )


def report(name: str, result: dict[str, Any]) -> dict[str, Any]:
    """Add machine info and a timestamp, write ``bench/results/<name>.json``, print the JSON line last."""
    result = {"bench": name, **result, "machine": machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    print(json.dumps(result), flush=True)
    return result


def ms(seconds: float, n: int) -> float:
    """Milliseconds per item, rounded for reports."""
    return round(1000.0 * seconds / max(n, 1), 3)
