"""The function a Dask worker runs for one trial. Kept tiny: workers import it.

It announces the start (a Dask event on topic ``darch-started``, which the
runner journals and counts as an attempt), calls the evaluator, and returns
the outcome in-band: an exception inside the evaluator is a *failed trial*,
not a failed task, so the runner can tell it apart from a lost worker.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
import traceback
from typing import Any

STARTED_TOPIC = "darch-started"
_COUNTER = itertools.count()


def provenance() -> dict[str, Any]:
    """Where this code runs: host, pid, Dask worker, SLURM job and GPU."""
    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "worker": None,
    }
    try:
        from distributed import get_worker

        info["worker"] = get_worker().address
    except (ImportError, ValueError):
        pass
    return info


def run_trial(payload: dict[str, Any], evaluator: Any) -> dict[str, Any]:
    """Run ``evaluator`` on one trial and report the outcome as a dict."""
    start = provenance()
    start.update(
        trial=payload["trial"], token=f"{start['pid']}-{next(_COUNTER)}-{time.time_ns()}", t=time.time()
    )
    if start["worker"] is not None and not os.environ.get("DARCH_NO_EV"):
        try:
            from distributed import get_worker

            get_worker().log_event(STARTED_TOPIC, start)
        except Exception:  # noqa: BLE001 - announcing is best effort
            pass
    t0 = time.perf_counter()
    out: dict[str, Any] = {"start": start}
    try:
        if payload.get("trial_dir"):
            os.makedirs(payload["trial_dir"], mode=0o700, exist_ok=True)
        result = evaluator(
            payload["arch"],
            config=payload["config"],
            budget=payload.get("budget"),
            trial_dir=payload.get("trial_dir"),
            seed=payload.get("seed", 0),
            resume=payload.get("resume", False),
        )
        out["status"] = "finished"
        out["result"] = result
    except Exception as exc:  # noqa: BLE001 - any evaluator error fails the trial
        out["status"] = "failed"
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc(limit=20)
    out["duration_s"] = time.perf_counter() - t0
    return out
