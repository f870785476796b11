"""Faults an HPC centre does to a search, with real processes: what darch does about each.

* a worker killed with SIGKILL mid-trial: the trial runs again, nothing is lost or counted twice;
* the driver (``darch run``) killed with SIGKILL: ``darch resume`` finishes exactly ``n`` trials
  and re-runs none that had finished;
* a full disk (a real tmpfs filled up): the search stops with one clear error and the journal
  stays readable; after space is freed ``darch resume`` completes it;
* a truncated journal line: tolerated by readers and by resume;
* ``darch results`` while a search writes: always a consistent table;
* every SLURM job cancelled: :class:`NoWorkersError` instead of a hang; with ``adapt`` the search
  waits for the replacement job and finishes (marked ``slurm``);
* security: private folders, an owner-only lock, no credentials in the journal, ``safe_load``
  only, and nothing unpickled.

No timing is asserted; every wait is bounded and fails with a message that says what it waited for.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from distributed import Client

from toolkit.evaluators.synthetic import SyntheticEvaluator
from toolkit.experiment import Experiment
from toolkit.journal import read_events
from toolkit.results import load_results
from toolkit.runner import NoWorkersError
from toolkit.space import SearchSpace
from toolkit.spaces import conv_net

ROOT = Path(__file__).resolve().parents[1]
ENV = {"DASK_DARCH__CLUSTERS__LOCAL__DASHBOARD_ADDRESS": ":0", "TF_CPP_MIN_LOG_LEVEL": "3"}
SLURM_WAIT_S = 120  # jobs start in 2-4 s and a cancelled one is replaced in about 15 s on the test SLURM


# -- helpers --------------------------------------------------------------------------------------
def darch(*args: str, env: dict[str, str] | None = None, timeout: float = 300, **kw: Any):
    """Run the real ``darch`` command in its own process (``kw`` go to ``subprocess.run``)."""
    return subprocess.run(
        [sys.executable, "-m", "toolkit.cli", *args],
        cwd=ROOT,
        env={**os.environ, **ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    """Poll ``predicate`` until it returns something truthy (a guard against hangs, not a timing check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up after {timeout} s waiting for {what}")


def by_trial(events: list[dict[str, Any]], kind: str) -> collections.Counter[int]:
    return collections.Counter(e["trial"] for e in events if e["event"] == kind)


def synthetic_file(
    tmp_path: Path, name: str, log_dir: Path, n_trials: int, sleep: float, epochs: int = 2
) -> Path:
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "space": {"fn": "toolkit.spaces:conv_net"},
                "searcher": {"name": "random", "params": {"seed": 0}},
                "evaluator": {"name": "synthetic", "params": {"epochs": epochs, "sleep": sleep}},
                "budget": {"n_trials": n_trials},
                "log_dir": str(log_dir),
            }
        )
    )
    return cfg


def complete_lines(path: Path) -> tuple[int, int]:
    """``(lines that parse, lines that do not)`` of a journal."""
    import orjson

    good = bad = 0
    for line in (path / "journal.jsonl").read_bytes().split(b"\n"):
        if not line:
            continue
        try:
            orjson.loads(line)
            good += 1
        except orjson.JSONDecodeError:
            bad += 1
    return good, bad


def _exp(log_dir: Path, evaluator: Any = None, name: str = "exp", **kw: Any) -> Experiment:
    return Experiment(name, SearchSpace(conv_net), evaluator or SyntheticEvaluator(), log_dir=log_dir, **kw)


# -- lost workers and a killed driver -------------------------------------------------------------
def test_worker_killed_mid_trial_runs_the_trial_again_and_loses_nothing(fresh_cluster, tmp_path):
    n = 6
    with Client(fresh_cluster) as client:
        worker_pids = set(client.run(os.getpid).values())
        exp = _exp(tmp_path, SyntheticEvaluator(sleep=1.5))
        exp.start(client, n_trials=n, progress=False)
        try:
            first = wait_for(lambda: read_events(exp.path, ["started"]), "a trial to start")[0]
            assert first["pid"] in worker_pids  # never kill anything but a worker
            os.kill(first["pid"], signal.SIGKILL)
            df = exp.wait(timeout=180)
        finally:
            if exp.running:
                exp.stop()
    victim = first["trial"]
    assert df["trial_id"].tolist() == list(range(n))
    assert (df["status"] == "finished").all()
    attempts = dict(zip(df["trial_id"], df["attempts"]))
    assert attempts[victim] == 2
    assert all(a == 1 for t, a in attempts.items() if t != victim)
    assert by_trial(read_events(exp.path), "finished") == {t: 1 for t in range(n)}


@pytest.mark.slow
def test_driver_killed_then_resume_finishes_exactly_n_and_reruns_no_finished_trial(tmp_path):
    n = 30
    cfg = synthetic_file(tmp_path, "killed", tmp_path / "logs", n_trials=n, sleep=0.3)
    path = tmp_path / "logs" / "killed"
    driver = subprocess.Popen(
        [sys.executable, "-m", "toolkit.cli", "run", str(cfg), "--jobs", "2", "--no-progress"],
        cwd=ROOT,
        env={**os.environ, **ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its LocalCluster's workers share its process group
    )
    try:
        wait_for(lambda: len(read_events(path, ["finished"])) >= 8, "8 trials to finish", timeout=120)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the orphaned workers, as SLURM would end them
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    before = read_events(path)
    done_before = set(by_trial(before, "finished"))
    assert 8 <= len(done_before) < n, "the driver finished before it was killed; lengthen the search"
    assert (path / "lock").exists()  # SIGKILL left the lock behind; resume must break it

    proc = darch("resume", str(path), "--jobs", "2", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    events = read_events(path)
    assert by_trial(events, "finished") == {t: 1 for t in range(n)}  # exactly n, none twice
    resumed_at = max(i for i, e in enumerate(events) if e["event"] == "run")
    rerun = {e["trial"] for e in events[resumed_at:] if e["event"] == "started"} & done_before
    assert not rerun, f"finished trials ran again after resume: {sorted(rerun)}"
    df = load_results(path).frame()
    assert df["trial_id"].tolist() == list(range(n)) and (df["status"] == "finished").all()


# -- a full disk ----------------------------------------------------------------------------------
@pytest.fixture
def tiny_disk(tmp_path) -> Iterator[Path]:
    """A real 128 KiB tmpfs (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill it needs root")
    mount = tmp_path / "tiny"
    mount.mkdir()
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=128k,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.slow
def test_full_disk_stops_the_search_with_one_clear_error_and_a_readable_journal(tmp_path, tiny_disk):
    n = 200  # far more than 128 KiB holds
    cfg = synthetic_file(tmp_path, "full", tiny_disk, n_trials=n, sleep=0.0)
    proc = darch("run", str(cfg), "--jobs", "2", "--no-progress")
    where = f"\n--- stderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode == 2, f"exit code {proc.returncode}{where}"
    assert "Traceback" not in proc.stderr, where
    assert "darch: error: could not write to the journal" in proc.stderr, where
    assert "No space left on device" in proc.stderr and "darch resume" in proc.stderr, where
    path = tiny_disk / "full"
    good, bad = complete_lines(path)
    assert good > 0 and bad <= 1, f"{bad} unreadable journal lines"  # at most the cut-off last one
    df = load_results(path).frame()
    assert 0 < len(df) < n
    assert not list(path.glob(".*.tmp")), "a failed write left a temporary file"

    # Free space, then resume: the search completes with every trial exactly once.
    subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_disk)], check=True)
    again = darch("resume", str(path), "--jobs", "2", "--no-progress")
    assert again.returncode == 0, again.stderr[-3000:]
    events = read_events(path)
    terminal = by_trial(events, "finished") + by_trial(events, "failed")
    assert set(terminal) == set(range(n))
    assert max(by_trial(events, "finished").values()) == 1
    df = load_results(path).frame()
    assert len(df) == n and df["status"].isin(["finished", "failed"]).all()
    # The only failed trials are those whose own checkpoint did not fit on the full disk.
    assert df.loc[df["status"] == "failed", "error"].str.contains("No space left on device").all()


def test_full_disk_before_the_first_trial_is_one_clear_error(tmp_path, tiny_disk):
    with contextlib.suppress(OSError), open(tiny_disk / "filler", "wb") as fh:
        while True:  # until the disk is full
            fh.write(b"\0" * 4096)
            fh.flush()
    cfg = synthetic_file(tmp_path, "nospace", tiny_disk, n_trials=4, sleep=0.0)
    proc = darch("run", str(cfg), "--jobs", "1", "--no-progress")
    where = f"\n--- stderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, where
    assert "darch: error: could not write to the experiment folder" in proc.stderr, where
    assert "No trial was started" in proc.stderr, where
    leftovers = (
        [p.name for p in (tiny_disk / "nospace").glob(".*")] if (tiny_disk / "nospace").exists() else []
    )
    assert not leftovers, f"temporary files left behind: {leftovers}"


# -- a damaged journal ----------------------------------------------------------------------------
def test_truncated_journal_line_is_tolerated_and_resume_continues(client, tmp_path):
    exp = _exp(tmp_path)
    exp.run(client, n_trials=5, progress=False)
    journal = exp.path / "journal.jsonl"
    data = journal.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1  # start of the last line
    assert data[last:].startswith(b'{"event":"finished"'), data[last:][:60]
    cut_trial = read_events(exp.path)[-1]["trial"]
    journal.write_bytes(data[: last + (len(data) - last) // 2])  # a crash half-way through that line

    df = load_results(exp.path).frame()  # readers skip the half line
    assert len(df) == 5
    assert df.set_index("trial_id").loc[cut_trial, "status"] != "finished"

    Experiment.resume(exp.path, client, n_trials=8, progress=False)
    events = read_events(exp.path)
    assert by_trial(events, "finished") == {t: 1 for t in range(8)}  # the cut trial ran again, once
    good, bad = complete_lines(exp.path)
    assert bad == 1 and good == len(events)  # only the half line is unreadable, and it stays behind


# -- reading while a search writes ----------------------------------------------------------------
def _check_table(text: str) -> int:
    """Check one ``darch results`` table; return its number of finished trials."""
    lines = text.strip("\n").splitlines()
    counts = dict((k, int(v)) for v, k in re.findall(r"(\d+) (\w+)", lines[0]))
    finished = counts.get("finished", 0)
    if finished == 0:
        assert lines[1].startswith("no finished trial yet"), text
        return 0
    rows = lines[2 : lines.index("") if "" in lines else None]
    rows = [r for r in rows if not r.startswith("journal:")]
    assert len(rows) == finished, f"{finished} finished in the counts but {len(rows)} rows:\n{text}"
    ids = [int(r.split()[0]) for r in rows]
    assert len(set(ids)) == len(ids), f"a trial appears twice:\n{text}"
    return finished


def test_results_read_while_a_search_writes_are_always_consistent(client, tmp_path):
    exp = _exp(tmp_path, SyntheticEvaluator(epochs=3, sleep=0.3))
    exp.start(client, n_trials=40, progress=False)
    seen: list[int] = []
    try:
        wait_for(lambda: exp.path.joinpath("journal.jsonl").exists(), "the journal")
        while exp.running:
            table = darch("results", str(exp.path))
            assert table.returncode == 0, table.stderr
            finished = _check_table(table.stdout)
            csv = darch("results", str(exp.path), "--format", "csv")
            assert csv.returncode == 0, csv.stderr
            df = pd.read_csv(io.StringIO(csv.stdout))
            assert df["trial_id"].is_unique and df["trial_id"].tolist() == list(range(len(df)))
            assert df["status"].isin(["pending", "running", "finished", "failed", "stopped"]).all()
            done = df["status"] == "finished"
            assert df.loc[done, "val_accuracy"].notna().all() and df.loc[~done, "val_accuracy"].isna().all()
            assert done.sum() >= finished  # the csv was read after the table
            seen.append(finished)
        exp.wait(timeout=120)
    finally:
        if exp.running:
            exp.stop()
    assert len(seen) >= 2, f"only {len(seen)} reads happened while the search ran; lengthen it"
    assert seen == sorted(seen), f"the finished count went backwards: {seen}"
    assert _check_table(darch("results", str(exp.path)).stdout) == 40


# -- SLURM: every job cancelled --------------------------------------------------------------------
def _slurm_problem() -> str | None:
    if shutil.which("sinfo") is None:
        return "SLURM is not installed here; start the test SLURM with tools/slurm.sh start"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 30 s; is slurmctld running? (tools/slurm.sh status)"
    if out.returncode != 0 or not out.stdout.strip():
        return f"the SLURM controller does not answer ({out.stderr.strip() or 'no nodes'}); run tools/slurm.sh start"
    return None


@pytest.fixture(scope="module")
def slurm():
    problem = _slurm_problem()
    if problem and os.environ.get("DARCH_REQUIRE_SLURM"):
        pytest.fail(f"DARCH_REQUIRE_SLURM is set but {problem}")
    if problem:
        pytest.skip(problem)


def _slurm_cluster(folder: Path, **overrides: Any):
    from toolkit.cluster import make_cluster

    return make_cluster(
        "test-slurm",
        shared_temp_directory=str(folder / "tls"),
        log_directory=str(folder / "jobs"),
        scheduler_options={"dashboard_address": ":0"},
        job_name=f"darch-faults-{os.getpid()}",
        **overrides,
    )


def _job_logs(folder: Path) -> str:
    parts = [
        f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted((folder / "jobs").glob("*")) if p.is_file()
    ]
    queue = subprocess.run(["squeue"], capture_output=True, text=True).stdout
    return "\n".join([f"squeue:\n{queue}", *parts])


def _cancel_first_trials_job(exp: Experiment) -> str:
    start = wait_for(
        lambda: read_events(exp.path, ["started"]), "a trial to start on a SLURM worker", SLURM_WAIT_S
    )[0]
    job = start.get("slurm_job_id")
    assert job, f"the trial ran outside SLURM: {start}"
    subprocess.run(["scancel", job], check=True)
    return job


@pytest.mark.slurm
def test_every_slurm_job_cancelled_stops_the_search_with_no_workers_error(slurm, tmp_path):
    cluster = _slurm_cluster(tmp_path, jobs=1, replace_jobs=False)  # scale(jobs=1): no replacement
    with cluster, Client(cluster) as client:
        client.wait_for_workers(1, timeout=SLURM_WAIT_S)
        exp = _exp(tmp_path / "logs", SyntheticEvaluator(sleep=1.0), worker_timeout=5)
        exp.start(client, n_trials=20, progress=False)
        try:
            job = _cancel_first_trials_job(exp)
            with pytest.raises(NoWorkersError) as info:
                exp.wait(timeout=SLURM_WAIT_S)  # bounded: a hang fails with TimeoutError
        finally:
            if exp.running:
                exp.stop()
    message = str(info.value)
    assert "the cluster has had no workers for" in message and "worker_timeout=5" in message, message
    assert f"darch resume {exp.path}" in message
    assert job not in subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True).stdout
    df = load_results(exp.path).frame()  # the journal is intact and readable
    assert df["status"].isin(["finished", "stopped", "pending", "running"]).all()
    assert not (exp.path / "lock").exists()


@pytest.fixture(scope="module")
def slurm_tls_run(slurm, tmp_path_factory):
    """A search on test-slurm with TLS and ``adapt(1, 1)`` whose only job is cancelled mid-search."""
    import dask.config

    folder = tmp_path_factory.mktemp("slurm-adapt")
    token = "darch-fake-token-3f9c2b7e"
    os.environ["DARCH_ACCOUNT"] = token  # sbatch exports it to the jobs; it must not reach the journal
    try:
        with dask.config.set({"distributed.deploy.lost-worker-timeout": "3s"}):
            cluster = _slurm_cluster(folder, jobs=1)  # replace_jobs: adapt(minimum_jobs=1, maximum_jobs=1)
            with cluster, Client(cluster) as client:
                client.wait_for_workers(1, timeout=SLURM_WAIT_S)
                pem = [cluster.security.tls_client_key, cluster.security.tls_client_cert]
                exp = _exp(folder / "logs", SyntheticEvaluator(sleep=1.0), worker_timeout=SLURM_WAIT_S)
                exp.start(client, n_trials=6, progress=False)
                try:
                    job = _cancel_first_trials_job(exp)
                    df = exp.wait(timeout=2 * SLURM_WAIT_S)
                except BaseException as exc:
                    raise AssertionError(
                        f"the search did not finish after the cancel\n{_job_logs(folder)}"
                    ) from exc
                finally:
                    if exp.running:
                        exp.stop()
    finally:
        os.environ.pop("DARCH_ACCOUNT", None)
    return {"exp": exp, "df": df, "job": job, "pem": pem, "token": token}


@pytest.mark.slurm
def test_cancelled_slurm_job_is_replaced_and_the_search_finishes(slurm_tls_run):
    exp, df, job = slurm_tls_run["exp"], slurm_tls_run["df"], slurm_tls_run["job"]
    assert df["trial_id"].tolist() == list(range(6)) and (df["status"] == "finished").all()
    assert by_trial(read_events(exp.path), "finished") == {t: 1 for t in range(6)}
    jobs = {e.get("slurm_job_id") for e in read_events(exp.path, ["started"])}
    assert job in jobs and len(jobs) >= 2, f"no trial ran on a replacement job: {jobs}"
    assert df["attempts"].max() == 2  # the trial on the cancelled job ran again, once


@pytest.mark.slurm
def test_journal_of_a_slurm_tls_run_holds_no_key_material_or_token(slurm_tls_run):
    exp = slurm_tls_run["exp"]
    pem_lines = [
        line
        for pem in slurm_tls_run["pem"]
        for line in (pem if "BEGIN" in pem else Path(pem).read_text()).splitlines()
        if len(line) > 20 and "-----" not in line
    ]
    assert pem_lines, "found no key material to look for"
    text = _all_text(exp.path)
    for needle in ("BEGIN", "PRIVATE KEY", slurm_tls_run["token"], *pem_lines):
        assert needle not in text, f"{needle[:30]!r} is in the journal folder"


def _all_text(folder: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(folder.rglob("*")) if p.is_file())


# -- security -------------------------------------------------------------------------------------
def test_journal_folders_are_private_and_the_lock_is_owner_only(client, tmp_path):
    exp = _exp(tmp_path, SyntheticEvaluator(sleep=0.5))
    exp.start(client, n_trials=6, progress=False)
    try:
        lock = wait_for(lambda: (exp.path / "lock").exists() and exp.path / "lock", "the lock")
        modes = {
            "lock": stat.S_IMODE(lock.stat().st_mode),
            "journal.jsonl": stat.S_IMODE((exp.path / "journal.jsonl").stat().st_mode),
        }
        trial = wait_for(lambda: next(exp.path.joinpath("trials").glob("0*"), None), "a trial folder")
    finally:
        exp.wait(timeout=120)
    folders = {p: stat.S_IMODE(p.stat().st_mode) for p in (exp.path, exp.path / "trials", trial)}
    assert all(m == 0o700 for m in folders.values()), {str(p): oct(m) for p, m in folders.items()}
    assert all(m & 0o077 == 0 for m in modes.values()), {k: oct(m) for k, m in modes.items()}


def test_journal_holds_no_credentials_from_the_environment(tmp_path):
    token = "darch-fake-token-8d1e4a90"
    cfg = synthetic_file(tmp_path, "creds", tmp_path / "logs", n_trials=3, sleep=0.0)
    proc = darch(
        "run",
        str(cfg),
        "--jobs",
        "1",
        "--no-progress",
        env={"DARCH_ACCOUNT": token, "DARCH_API_TOKEN": token},
    )
    assert proc.returncode == 0, proc.stderr
    text = _all_text(tmp_path / "logs" / "creds")
    assert '"event":"finished"' in text  # the search ran and was journaled
    for needle in (token, "BEGIN", "PRIVATE KEY"):
        assert needle not in text


def test_python_tag_in_an_experiment_file_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(
        f"name: !!python/object/apply:os.system ['touch {marker}']\n"
        "space: {fn: toolkit.spaces:conv_net}\nevaluator: synthetic\nbudget: {n_trials: 1}\n"
        f"log_dir: {tmp_path}\n"
    )
    proc = darch("run", str(cfg), "--no-progress")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "refused at line 1" in proc.stderr and "yaml.safe_load" in proc.stderr, proc.stderr
    assert "python/object/apply:os.system" in proc.stderr
    assert not marker.exists(), "the YAML tag was executed"


def test_toolkit_never_unpickles_and_never_loads_yaml_unsafely():
    forbidden = re.compile(
        r"\b(c?pickle\.loads?|cloudpickle\.loads?|dill\.loads?|marshal\.loads?|yaml\.load\(|yaml\.unsafe_load"
        r"|yaml\.full_load|yaml\.Loader|UnsafeLoader|allow_pickle\s*=\s*True|shelve\.open)"
    )
    hits = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sorted((ROOT / "toolkit").rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if forbidden.search(line)
    ]
    assert not hits, "unsafe deserialisation in toolkit/:\n" + "\n".join(hits)
    assert "yaml.safe_load" in (ROOT / "toolkit" / "config.py").read_text()
