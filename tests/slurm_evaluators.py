"""Evaluators for tests/test_slurm_search.py, in a module of their own so that SLURM workers import them.

A SLURM job's worker is a fresh ``python -m distributed.cli.dask_worker`` that cannot import the test
module, so the tests put this folder on the job's ``PYTHONPATH`` (a ``job_script_prologue`` line) and
the workers unpickle :class:`GPUSleeper` by reference, as they would a user's own evaluator module.
"""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar

from toolkit.evaluators.synthetic import SyntheticEvaluator


class GPUSleeper(SyntheticEvaluator):
    """A SyntheticEvaluator that needs one GPU per trial and sleeps ``sleep`` seconds.

    Its result also says where and until when it ran: ``worker_deadline`` (the worker's
    ``DARCH_WORKER_DEADLINE``, None when it has none) and ``ended_t`` (``time.time()`` at the end).
    """

    resources: ClassVar[dict[str, float]] = {"GPU": 1}

    def __call__(self, arch: Any, **kwargs: Any) -> dict[str, Any]:
        result = super().__call__(arch, **kwargs)
        deadline = os.environ.get("DARCH_WORKER_DEADLINE")
        result["worker_deadline"] = float(deadline) if deadline else None
        result["ended_t"] = time.time()
        return result
