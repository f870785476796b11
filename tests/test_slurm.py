"""Against a real SLURM: the ``test-slurm`` profile on the cluster that ``tools/slurm.sh start`` runs.

Skipped, with the reason, when ``sinfo`` is missing or the controller does not answer; with
``DARCH_REQUIRE_SLURM=1`` (as CI sets) that is a failure instead.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path

import dask.config
import pytest
from distributed import Client
from distributed.security import Security

from toolkit.cluster import make_cluster

pytestmark = pytest.mark.slurm

WAIT_S = 90  # generous but bounded: jobs start in 2-4 s on the test SLURM


def _slurm_problem() -> str | None:
    if shutil.which("sinfo") is None:
        return "sinfo is not installed; start the test SLURM with tools/slurm.sh start"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 15 s; is slurmctld running? (tools/slurm.sh status)"
    if out.returncode != 0 or not out.stdout.strip():
        said = "; ".join(line.strip() for line in out.stderr.splitlines() if line.strip()) or "no nodes"
        return f"the SLURM controller does not answer ({said}); run tools/slurm.sh start"
    return None


@pytest.fixture(scope="module", autouse=True)
def _slurm_is_up():
    problem = _slurm_problem()
    if problem and os.environ.get("DARCH_REQUIRE_SLURM"):
        pytest.fail(f"DARCH_REQUIRE_SLURM is set but {problem}")
    if problem:
        pytest.skip(problem)


def _job_logs(folder: Path) -> str:
    parts = [f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(folder.glob("*")) if p.is_file()]
    queue = subprocess.run(["squeue"], capture_output=True, text=True).stdout
    return "\n".join([f"squeue:\n{queue}", *parts]) or "(no job logs)"


def _wait_for(client: Client, n: int, logs: Path) -> None:
    try:
        client.wait_for_workers(n, timeout=WAIT_S)
    except TimeoutError as exc:
        raise AssertionError(f"{n} workers did not connect in {WAIT_S}s\n{_job_logs(logs)}") from exc


def _test_cluster(tmp_path_factory, **overrides):
    folder = tmp_path_factory.mktemp("slurm")
    overrides = {
        "shared_temp_directory": str(folder / "tls"),
        "log_directory": str(folder / "jobs"),
        "scheduler_options": {"dashboard_address": ":0"},
        **overrides,
    }
    return make_cluster("test-slurm", **overrides), folder / "jobs"


@pytest.fixture(scope="module")
def two_jobs(tmp_path_factory):
    """Two test-slurm jobs (scale, no replacement): one worker and one fake GPU each."""
    cluster, logs = _test_cluster(tmp_path_factory, jobs=2, replace_jobs=False)
    with Client(cluster) as client:
        _wait_for(client, 2, logs)
        yield cluster, client
    cluster.close()


def _probe():
    """A task that reports its SLURM job, GPUs and deadline.

    Nested, so that cloudpickle sends it by value: the workers cannot import this test module.
    """

    def where_am_i() -> dict[str, str | None]:
        return {
            k: os.environ.get(k) for k in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES", "DARCH_WORKER_DEADLINE")
        }

    return where_am_i


_where_am_i = _probe()


def test_two_jobs_give_two_workers_with_one_gpu_each(two_jobs):
    _, client = two_jobs
    workers = client.scheduler_info()["workers"]
    assert len(workers) == 2
    assert all(w["resources"] == {"GPU": 1} for w in workers.values())


def test_a_gpu_task_sees_its_slurm_job_and_gpu(two_jobs):
    _, client = two_jobs
    seen = [
        client.submit(_where_am_i, resources={"GPU": 1}, workers=[address], pure=False).result(timeout=WAIT_S)
        for address in client.scheduler_info()["workers"]
    ]
    assert len({s["SLURM_JOB_ID"] for s in seen}) == 2
    assert all(s["SLURM_JOB_ID"] and s["CUDA_VISIBLE_DEVICES"] for s in seen)


def test_workers_publish_a_deadline_before_the_walltime(two_jobs):
    _, client = two_jobs
    now = time.time()
    deadlines = [float(s["DARCH_WORKER_DEADLINE"]) for s in client.run(_where_am_i).values()]
    assert all(now < d < now + 600 for d in deadlines)


def _connect(address: str, security: Security | None = None) -> str:
    """Connect a plain distributed.Client; return the scheduler's type, or raise why it was refused.

    Asynchronous, so that a refused client leaves no IO-loop thread behind (a synchronous Client
    that fails in its constructor leaks one, and the next may then fail to start its own).
    """

    async def attempt() -> str:
        client = Client(address, asynchronous=True, timeout=10, security=security)
        try:
            await client
            return client.scheduler_info()["type"]
        finally:
            await client.close()

    return asyncio.run(attempt())


def test_the_scheduler_listens_with_tls(two_jobs):
    cluster, _ = two_jobs
    assert cluster.scheduler_address.startswith("tls://")


def test_a_client_without_credentials_is_refused(two_jobs):
    cluster, _ = two_jobs
    with pytest.raises(TypeError, match="TLS expects a `ssl_context`"):
        _connect(cluster.scheduler_address)


def test_a_client_with_someone_elses_credentials_is_refused(two_jobs):
    cluster, _ = two_jobs
    with pytest.raises(OSError, match="certificate"):  # what another user on the login node could make
        _connect(cluster.scheduler_address, Security.temporary())


def test_plain_tcp_to_the_scheduler_is_refused(two_jobs):
    cluster, _ = two_jobs
    with pytest.raises(OSError):
        _connect(cluster.scheduler_address.replace("tls://", "tcp://"))


def test_a_client_with_the_clusters_credentials_connects(two_jobs):
    cluster, _ = two_jobs
    assert _connect(cluster.scheduler_address, cluster.security) == "Scheduler"


def test_a_client_with_the_credentials_runs_tasks(two_jobs):
    cluster, _ = two_jobs
    with Client(cluster.scheduler_address, security=cluster.security, timeout=30) as client:
        assert client.submit(sum, [1, 2, 3]).result(timeout=WAIT_S) == 6


def test_workers_of_one_job_are_pinned_to_their_own_gpus(tmp_path_factory):
    cluster, logs = _test_cluster(
        tmp_path_factory, cores=2, processes=2, memory="2GB", job_extra_directives=["--gres=gpu:2"]
    )
    with cluster, Client(cluster) as client:
        cluster.scale(jobs=1)
        _wait_for(client, 2, logs)
        seen = list(client.run(_where_am_i).values())
    assert len({s["SLURM_JOB_ID"] for s in seen}) == 1
    devices = [s["CUDA_VISIBLE_DEVICES"] for s in seen]
    assert len(set(devices)) == 2  # SLURM gave the job two GPUs; each worker kept one of them
    assert all(d.isdigit() for d in devices)


def test_a_cancelled_job_is_replaced(tmp_path_factory):
    # lost-worker-timeout (15 s by default) is how long the cluster waits before it forgets a lost job.
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "3s"}):
        cluster, logs = _test_cluster(tmp_path_factory, jobs=2)  # replace_jobs: adapt(2, 2)
        with cluster, Client(cluster) as client:
            _wait_for(client, 2, logs)
            before = {job.job_id for job in cluster.workers.values()}
            victim = sorted(before)[0]
            subprocess.run(["scancel", victim], check=True)
            deadline = time.monotonic() + WAIT_S
            jobs = before
            while time.monotonic() < deadline:
                jobs = {job.job_id for job in cluster.workers.values()}
                if victim not in jobs and len(jobs) == 2 and len(client.scheduler_info()["workers"]) == 2:
                    break
                time.sleep(0.2)
            assert victim not in jobs and len(jobs) == 2, (
                f"no replacement for job {victim}\n{_job_logs(logs)}"
            )
            assert before - {victim} <= jobs
            _wait_for(client, 2, logs)
            assert {s["SLURM_JOB_ID"] for s in client.run(_where_am_i).values()} == jobs
