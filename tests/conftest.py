"""Shared fixtures: real Dask clusters with worker processes, and the real datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "datasets" / "mnist.npz"

# TF in workers: one thread each, no log noise (see shared FACTS.md).
WORKER_ENV = {
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "OMP_NUM_THREADS": "1",
}


def _local_cluster(n_workers: int = 2):
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        env=WORKER_ENV,
        silence_logs=40,
    )


@pytest.fixture(scope="session")
def cluster():
    """A session-wide LocalCluster: 2 worker processes, 1 thread each."""
    c = _local_cluster(2)
    yield c
    c.close()


@pytest.fixture
def client(cluster):
    """A client on the shared LocalCluster."""
    from distributed import Client

    with Client(cluster) as c:
        yield c


@pytest.fixture
def fresh_cluster():
    """A LocalCluster of its own, for tests that kill or restart workers."""
    c = _local_cluster(2)
    yield c
    c.close()


@pytest.fixture
def mnist_path():
    """The real MNIST file; the test is skipped when it is absent."""
    if not MNIST.exists():
        pytest.skip(f"{MNIST} is absent (it is not in a fresh clone); skipping the MNIST test")
    return MNIST


@pytest.fixture(autouse=True)
def _quiet_tf(monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"))
