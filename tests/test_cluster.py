"""Cluster profiles: generated job scripts, config layering, errors, and a real LocalCluster.

No SLURM is needed: ``job_script`` builds the SLURMCluster (its scheduler runs in this process) and
reads the script that each job would run, as dask-jobqueue's own tests do.
"""

from __future__ import annotations

import logging
import os
import stat
import time

import dask
import dask.config
import pytest
from distributed import Client, LocalCluster

from toolkit.cluster import (
    gpus_per_job,
    job_script,
    lifetime_plan,
    list_profiles,
    make_cluster,
    profile_settings,
    walltime_seconds,
    worker_deadline,
)
from toolkit.errors import ConfigError

ACCOUNT_VARS = ("DARCH_ACCOUNT", "SBATCH_ACCOUNT", "SLURM_ACCOUNT")


@pytest.fixture(autouse=True)
def _no_site_account(monkeypatch):
    for var in ACCOUNT_VARS + ("JUPYTERHUB_SERVICE_PREFIX",):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def script(tmp_path):
    """job_script with the TLS key files in a folder of the test's own (not ~/.darch)."""

    def make(profile: str, **overrides) -> str:
        overrides.setdefault("shared_temp_directory", str(tmp_path / "tls"))
        return job_script(profile, **overrides)

    return make


@pytest.fixture
def dask_env(monkeypatch):
    """Set DASK_* environment variables (or extra YAML folders) and reload dask's config."""
    extra_paths: list[str] = []

    def set_env(name: str | None = None, value: str | None = None, *, yaml_dir: str | None = None) -> None:
        if name is not None:
            monkeypatch.setenv(name, value)
        if yaml_dir is not None:
            extra_paths.append(yaml_dir)
        dask.config.refresh(paths=[*dask.config.paths, *extra_paths])

    yield set_env
    monkeypatch.undo()
    dask.config.refresh()


def header(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]


def worker_command(text: str) -> str:
    return next(line for line in text.splitlines() if "distributed.cli.dask_worker" in line)


# --- profiles and job scripts ---------------------------------------------------------------------


def test_packaged_profiles_are_listed():
    assert {"local", "slurm", "bridges2-gpu", "bridges2-gpu-node", "bridges-gpu", "test-slurm"} <= set(
        list_profiles()
    )


@pytest.mark.parametrize(
    "profile", ["local", "slurm", "bridges2-gpu", "bridges2-gpu-node", "bridges-gpu", "test-slurm"]
)
def test_every_packaged_profile_validates(profile):
    settings = profile_settings(profile)
    assert settings["profile"] == profile
    assert settings["kind"] in {"local", "slurm"}
    assert settings["description"]


def test_bridges2_gpu_asks_for_one_v100_on_gpu_shared(script):
    text = script("bridges2-gpu", account="abc123p")
    lines = header(text)
    assert "#SBATCH -p GPU-shared" in lines
    assert "#SBATCH --gpus=v100-32:1" in lines
    assert "#SBATCH -A abc123p" in lines
    assert "#SBATCH -t 02:00:00" in lines
    assert not any("--mem" in line for line in lines)
    assert "module load anaconda3\nconda activate darch\n" in text
    command = worker_command(text)
    assert command.startswith("python -m distributed.cli.dask_worker tls://")
    assert "--resources GPU=1 " in command
    assert "--lifetime 6300s --lifetime-stagger 300s" in command
    assert "--local-directory $LOCAL " in command
    assert "--protocol tls://" in command
    for flag in ("--tls-ca-file", "--tls-cert", "--tls-key"):
        assert flag in command
    assert "--preload toolkit.cluster" in command


def test_bridges2_gpu_takes_the_account_from_darch_account(script, monkeypatch):
    monkeypatch.setenv("DARCH_ACCOUNT", "xyz999p")
    assert "#SBATCH -A xyz999p" in header(script("bridges2-gpu"))


def test_bridges2_gpu_without_an_account_sends_no_account_line(script):
    assert not any(line.startswith("#SBATCH -A") for line in header(script("bridges2-gpu")))


def test_bridges_gpu_asks_for_a_p100_through_gres(script):
    text = script("bridges-gpu")
    assert "#SBATCH --gres=gpu:p100:1" in header(text)
    assert "#SBATCH -p GPU-shared" in header(text)
    assert "--local-directory $SCRATCH/dask-worker-space " in worker_command(text)
    assert "--resources GPU=1 " in worker_command(text)


def test_bridges2_gpu_node_runs_eight_workers_one_gpu_each(script):
    text = script("bridges2-gpu-node")
    assert "#SBATCH -p GPU" in header(text)
    assert "#SBATCH --gpus=v100-32:8" in header(text)
    assert "#SBATCH --cpus-per-task=40" in header(text)
    assert "export DARCH_WORKERS_PER_JOB=8 DARCH_GPUS_PER_WORKER=1" in text
    command = worker_command(text)
    assert "--nworkers 8 " in command
    assert "--nthreads 5 " in command
    assert "--resources GPU=1 " in command
    assert "--preload toolkit.cluster" in command


def test_worker_gpu_resources_follow_the_jobs_gpu_request(script):
    text = script("bridges2-gpu", job_extra_directives=["--gpus=v100-32:2"])
    assert "#SBATCH --gpus=v100-32:2" in header(text)
    assert "--resources GPU=2 " in worker_command(text)


def test_explicit_resources_replace_the_derived_ones(script):
    assert "--resources GPU=1,MEM=2 " in worker_command(
        script("bridges2-gpu", resources={"GPU": 1, "MEM": 2})
    )


def test_a_cpu_profile_advertises_no_gpu(script):
    assert "--resources" not in worker_command(script("slurm"))


def test_gpus_that_do_not_split_evenly_over_processes_are_refused(script):
    with pytest.raises(ConfigError, match=r"(?s)8 GPUs per job cannot be shared evenly by 3 .*processes=8"):
        script("bridges2-gpu-node", processes=3)


@pytest.mark.parametrize(
    ("directives", "gpus"),
    [
        (["--gpus=v100-32:8"], 8),
        (["--gpus=2"], 2),
        (["--gres=gpu:p100:1"], 1),
        (["--gres=gpu:1"], 1),
        (["--gres=tmp:10G,gpu:k80:4"], 4),
        (["-G 3"], 3),
        (["--gpus-per-node=v100-32:4"], 4),
        (["--exclusive", "--constraint=v100"], 0),
    ],
)
def test_gpus_per_job_reads_slurms_gpu_requests(directives, gpus):
    assert gpus_per_job(directives) == gpus


def test_two_gpu_requests_in_one_job_are_refused():
    with pytest.raises(ConfigError, match="ask for GPUs 2 times"):
        gpus_per_job(["--gpus=1", "--gres=gpu:1"])


# --- layering: keyword > user YAML / DASK_ env > packaged ----------------------------------------


def test_packaged_walltime_is_used_when_nothing_overrides_it(script):
    assert "#SBATCH -t 02:00:00" in header(script("bridges2-gpu"))


def test_dask_env_variable_beats_the_packaged_profile(script, dask_env):
    dask_env("DASK_DARCH__CLUSTERS__BRIDGES2_GPU__WALLTIME", "04:00:00")
    assert "#SBATCH -t 04:00:00" in header(script("bridges2-gpu"))


def test_keyword_beats_the_dask_env_variable(script, dask_env):
    dask_env("DASK_DARCH__CLUSTERS__BRIDGES2_GPU__WALLTIME", "04:00:00")
    assert "#SBATCH -t 08:00:00" in header(script("bridges2-gpu", walltime="08:00:00"))


def test_user_yaml_beats_the_packaged_profile_and_keeps_its_other_keys(script, dask_env, tmp_path):
    user = tmp_path / "user-dask"
    user.mkdir()
    (user / "darch.yaml").write_text("darch:\n  clusters:\n    bridges2-gpu:\n      queue: GPU-small\n")
    dask_env(yaml_dir=str(user))
    lines = header(script("bridges2-gpu"))
    assert "#SBATCH -p GPU-small" in lines
    assert "#SBATCH --gpus=v100-32:1" in lines


def test_dask_config_set_beats_packaged_and_keyword_beats_it(script):
    with dask.config.set({"darch.clusters.bridges2-gpu.account": "fromconfig"}):
        assert "#SBATCH -A fromconfig" in header(script("bridges2-gpu"))
        assert "#SBATCH -A fromkw" in header(script("bridges2-gpu", account="fromkw"))


def test_configured_account_beats_the_account_variable(script, monkeypatch):
    monkeypatch.setenv("DARCH_ACCOUNT", "fromenv")
    with dask.config.set({"darch.clusters.bridges2-gpu.account": "fromconfig"}):
        assert "#SBATCH -A fromconfig" in header(script("bridges2-gpu"))


def test_a_profile_defined_only_in_user_config_works(script):
    mine = {"kind": "slurm", "description": "mine", "queue": "long", "cores": 2, "memory": "4GB"}
    with dask.config.set({"darch.clusters.mysite": mine}):
        assert "mysite" in list_profiles()
        assert "#SBATCH -p long" in header(script("mysite"))


# --- errors ---------------------------------------------------------------------------------------


def test_unknown_profile_lists_the_valid_ones_with_a_suggestion():
    with pytest.raises(ConfigError) as info:
        make_cluster("bridges2-gpus")
    message = str(info.value)
    assert "'bridges2-gpus'" in message
    assert "did you mean 'bridges2-gpu'?" in message
    for name in ("local", "bridges2-gpu-node", "test-slurm"):
        assert name in message
    assert "make_cluster('bridges2-gpu', jobs=2)" in message


def test_unknown_keyword_is_refused_with_a_suggestion_and_a_corrected_call():
    with pytest.raises(ConfigError) as info:
        make_cluster("bridges2-gpu", walltme="01:00:00")
    message = str(info.value)
    assert "walltme='01:00:00'" in message
    assert "did you mean 'walltime'?" in message
    assert "make_cluster('bridges2-gpu', jobs=2, walltime='02:00:00')" in message


def test_a_bad_value_is_refused_echoing_it_with_an_example():
    with pytest.raises(ConfigError) as info:
        make_cluster("bridges2-gpu", cores="eight")
    message = str(info.value)
    assert "keyword cores must be a positive integer; received 'eight'" in message
    assert "make_cluster('bridges2-gpu', cores=5)" in message


def test_a_bad_walltime_is_refused():
    with pytest.raises(ConfigError, match=r"(?s)received '2h'.*walltime='02:00:00'"):
        make_cluster("bridges2-gpu", walltime="2h")


def test_a_bad_value_from_the_environment_names_the_setting(dask_env):
    dask_env("DASK_DARCH__CLUSTERS__BRIDGES2_GPU__MEMORY", "lots")
    with pytest.raises(ConfigError, match=r"darch\.clusters\.bridges2-gpu\.memory .*received 'lots'"):
        profile_settings("bridges2-gpu")


def test_an_unknown_key_in_the_config_is_refused(dask_env):
    dask_env("DASK_DARCH__CLUSTERS__BRIDGES2_GPU__PARTITION", "GPU")
    with pytest.raises(ConfigError, match=r"unknown YAML/DASK_ env setting 'partition'"):
        profile_settings("bridges2-gpu")


def test_more_processes_than_cores_is_refused():
    with pytest.raises(ConfigError, match=r"processes=8 is more than cores=4"):
        job_script("slurm", processes=8)


def test_a_negative_job_count_is_refused():
    with pytest.raises(ConfigError, match=r"jobs must be an integer >= 0; received -1"):
        make_cluster("test-slurm", jobs=-1)


def test_job_script_of_a_local_profile_is_refused():
    with pytest.raises(ConfigError, match=r"(?s)'local' is a local cluster.*job_script\('bridges2-gpu'\)"):
        job_script("local")


# --- TLS ------------------------------------------------------------------------------------------


def test_tls_off_gives_plain_tcp_and_a_warning(script, caplog):
    with caplog.at_level(logging.WARNING, logger="toolkit.cluster"):
        command = worker_command(script("bridges2-gpu", tls=False))
    assert " tcp://" in command
    assert "--tls-key" not in command
    assert "TLS is off" in caplog.text


def test_tls_key_files_are_private_to_the_user(tmp_path):
    folder = tmp_path / "tls"
    # no jobs: nothing is submitted, and SLURM need not run
    cluster = make_cluster(
        "test-slurm", shared_temp_directory=str(folder), scheduler_options={"dashboard_address": ":0"}
    )
    try:
        assert cluster.scheduler_address.startswith("tls://")
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        files = list(folder.iterdir())
        assert {f.name.split(".")[3] for f in files} == {"ca_file", "cert", "key"}
        assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
        assert all(str(f) in cluster.job_script() for f in files)
    finally:
        cluster.close()


def test_week_old_key_files_are_removed_and_recent_ones_kept(script, tmp_path):
    folder = tmp_path / "tls"
    folder.mkdir(mode=0o700)
    old, recent = folder / ".dask-jobqueue.worker.key.old", folder / ".dask-jobqueue.worker.key.new"
    old.write_text("x")
    recent.write_text("x")
    week_ago = time.time() - 8 * 86400
    os.utime(old, (week_ago, week_ago))
    script("test-slurm", shared_temp_directory=str(folder))
    assert not old.exists()
    assert recent.exists()


def test_an_existing_open_tls_folder_is_tightened(script, tmp_path):
    folder = tmp_path / "tls"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    script("test-slurm", shared_temp_directory=str(folder))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


# --- walltime and lifetime ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 1800), (45, 2700), ("10:30", 630), ("02:00:00", 7200), ("1-0", 86400), ("2-01:30", 178200),
     ("1-00:00:10", 86410)],
)  # fmt: skip
def test_walltime_seconds_reads_slurms_time_formats(text, seconds):
    assert walltime_seconds(text) == seconds


def test_lifetime_leaves_a_margin_and_a_stagger_before_the_walltime():
    life, stagger = lifetime_plan("48:00:00")
    assert (life, stagger) == (48 * 3600 - 600 - 300, 300)
    assert life + stagger < 48 * 3600


def test_lifetime_scales_down_for_short_walltimes(script):
    assert lifetime_plan("00:02:00") == (84, 6)
    assert "--lifetime 510s --lifetime-stagger 30s" in worker_command(script("test-slurm"))


def test_lifetime_false_lets_workers_run_to_the_walltime(script):
    assert "--lifetime" not in worker_command(script("bridges2-gpu", lifetime=False))


def test_a_lifetime_longer_than_the_walltime_is_refused():
    with pytest.raises(ConfigError, match="does not fit in walltime '01:00:00'"):
        job_script("bridges2-gpu", walltime="01:00:00", lifetime="2 hours")


def test_the_job_exports_its_deadline(script):
    assert "export DARCH_JOB_DEADLINE=$(( $(date +%s) + 7200 ))" in script("bridges2-gpu")


# --- a real LocalCluster --------------------------------------------------------------------------


def test_local_profile_is_one_single_threaded_process_per_core_and_runs_a_task():
    with make_cluster("local", dashboard_address=":0") as cluster, Client(cluster) as client:
        assert isinstance(cluster, LocalCluster)
        client.wait_for_workers(dask.system.CPU_COUNT, timeout=60)
        workers = client.scheduler_info()["workers"].values()
        assert len(workers) == dask.system.CPU_COUNT
        assert {w["nthreads"] for w in workers} == {1}
        assert client.submit(lambda: os.environ["TF_NUM_INTRAOP_THREADS"]).result(timeout=60) == "1"
        assert client.submit(lambda: os.getpid()).result(timeout=60) != os.getpid()


def test_local_jobs_sets_the_number_of_worker_processes():
    with make_cluster("local", jobs=1, dashboard_address=":0") as cluster:
        assert len(cluster.workers) == 1


def test_dashboard_link_goes_through_the_jupyterhub_proxy(monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/alice/")
    with (
        dask.config.set({"distributed.dashboard.link": "{scheme}://{host}:{port}/status"}),
        make_cluster("local", n_workers=0, dashboard_address=":0") as cluster,
    ):
        port = cluster.scheduler.http_server.port
        assert cluster.dashboard_link == f"/user/alice/proxy/{port}/status"


def test_worker_setup_pins_each_worker_to_its_own_gpu_and_records_a_deadline():
    env = {"DARCH_WORKERS_PER_JOB": "2", "DARCH_GPUS_PER_WORKER": "1", "CUDA_VISIBLE_DEVICES": "4,5"}
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", env=env,
                     preload=["toolkit.cluster"], lifetime="300s", silence_logs=logging.ERROR) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        client.wait_for_workers(2, timeout=60)
        seen = client.run(lambda dask_worker: (dask_worker.name, os.environ["CUDA_VISIBLE_DEVICES"]))
        assert sorted(seen.values()) == [(0, "4"), (1, "5")]
        deadlines = client.run(worker_deadline)
        for _ in range(200):  # the metric arrives with the next heartbeat
            metrics = {
                a: w["metrics"].get("darch_deadline") for a, w in client.scheduler_info()["workers"].items()
            }
            if None not in metrics.values():
                break
            time.sleep(0.05)
    assert all(d is not None and d > time.time() for d in deadlines.values())
    assert all(abs(metrics[a] - d) < 1 for a, d in deadlines.items())


def test_worker_deadline_is_none_without_a_limit(monkeypatch):
    monkeypatch.delenv("DARCH_WORKER_DEADLINE", raising=False)
    assert worker_deadline() is None
