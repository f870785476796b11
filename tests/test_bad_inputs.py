"""Bad inputs through the real ``darch`` command: each is refused with one clear message.

Every case runs ``python -m toolkit.cli`` in a real process and checks that it

* exits with code 2 and prints ``darch: error: ...`` once, with no traceback;
* says what is wrong, echoes what it received and how to fix it (asserted on key phrases);
* leaves an existing journal byte-for-byte untouched (its files are hashed before and after), and
  starts no search when the mistake is in the experiment file.

An evaluator that returns something other than a dict, or a NaN objective, is different: it fails
its trials (with the error in the results table), not the search, which exits 0.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from distributed import Client

from toolkit.errors import ConfigError, JournalError
from toolkit.evaluators import KerasClassifierEvaluator
from toolkit.evaluators.synthetic import SyntheticEvaluator
from toolkit.experiment import Experiment
from toolkit.journal import read_events
from toolkit.space import SearchSpace
from toolkit.spaces import conv_net, mlp

ROOT = Path(__file__).resolve().parents[1]
NAME = "exp"

# Quiet, private subprocesses: no dashboard port clash, short connect timeout for dead addresses.
ENV = {
    "DASK_DARCH__CLUSTERS__LOCAL__DASHBOARD_ADDRESS": ":0",
    "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "3s",
    "TF_CPP_MIN_LOG_LEVEL": "3",
}


# -- helpers --------------------------------------------------------------------------------------
def darch(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run the real ``darch`` command in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "toolkit.cli", *args],
        cwd=ROOT,
        env={**os.environ, **ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def refused(proc: subprocess.CompletedProcess, *phrases: str) -> str:
    """Assert a clean refusal (exit 2, one ``darch: error:``, no traceback) that says ``phrases``."""
    where = f"\n--- stdout:\n{proc.stdout}\n--- stderr:\n{proc.stderr}"
    assert proc.returncode == 2, f"exit code {proc.returncode}, expected 2{where}"
    assert "Traceback" not in proc.stderr, f"a traceback reached the user{where}"
    assert proc.stderr.count("darch: error: ") == 1, f"expected one 'darch: error:'{where}"
    message = proc.stderr[proc.stderr.index("darch: error: ") :]
    for phrase in phrases:
        assert phrase in message, f"the message lacks {phrase!r}{where}"
    return message


def snapshot(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` (empty if it does not exist)."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def journal(tmp_path_factory, cluster) -> Path:
    """A finished search of 3 synthetic trials: the journal the bad inputs must not touch."""
    log_dir = tmp_path_factory.mktemp("logs")
    with Client(cluster) as client:
        exp = Experiment(NAME, SearchSpace(conv_net), SyntheticEvaluator(epochs=2), log_dir=log_dir)
        exp.run(client, n_trials=3, progress=False)
    return exp.path


@pytest.fixture
def good(journal) -> dict[str, Any]:
    """A valid experiment file's contents that describes the search in ``journal``."""
    return {
        "name": NAME,
        "space": {"fn": "toolkit.spaces:conv_net"},
        "searcher": {"name": "random"},
        "evaluator": {"name": "synthetic", "params": {"epochs": 2}},
        "budget": {"n_trials": 3},
        "log_dir": str(journal.parent),
    }


@pytest.fixture
def untouched(journal):
    """Hashes the journal before the test and asserts it is unchanged after."""
    before = snapshot(journal)
    assert before, "the fixture journal is empty"
    yield journal
    assert snapshot(journal) == before, "a refused command changed the journal"


def run_refused(tmp_path: Path, data: Any, *phrases: str, extra: tuple[str, ...] = ()) -> str:
    cfg = write_yaml(tmp_path / "experiment.yaml", data)
    return refused(darch("run", str(cfg), "--no-progress", *extra), *phrases)


# -- the experiment file --------------------------------------------------------------------------
def test_malformed_yaml_names_the_line_and_how_to_fix_it(tmp_path, untouched):
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("name: exp\nspace: [toolkit.spaces:conv_net\nevaluator: synthetic\n")
    message = refused(darch("run", str(cfg)), str(cfg), "malformed YAML at line", "Check the indentation")
    assert "column" in message


def test_unknown_key_is_refused_with_a_did_you_mean(tmp_path, good, untouched):
    good["bugdet"] = good.pop("budget")
    run_refused(tmp_path, good, "unknown key 'bugdet'", "(did you mean 'budget'?)", "valid keys are")


def test_unknown_budget_key_is_refused_with_a_did_you_mean(tmp_path, good, untouched):
    good["budget"] = {"n_trial": 3}
    run_refused(tmp_path, good, "unknown key 'budget.n_trial'", "(did you mean 'n_trials'?)")


def test_wrong_type_for_n_trials_echoes_the_value_and_an_example(tmp_path, good, untouched):
    good["budget"]["n_trials"] = "ten"
    run_refused(
        tmp_path, good, "budget.n_trials must be a positive integer", "got 'ten'", "budget.n_trials: 16"
    )


def test_space_in_a_module_that_does_not_import_is_refused(tmp_path, good, untouched):
    good["space"]["fn"] = "toolkit.nosuch:conv_net"
    run_refused(
        tmp_path, good, "space.fn", "'toolkit.nosuch:conv_net' does not resolve", "module 'toolkit.nosuch'"
    )


def test_space_attribute_that_does_not_exist_is_refused_with_a_did_you_mean(tmp_path, good, untouched):
    good["space"]["fn"] = "toolkit.spaces:conv_nett"
    run_refused(tmp_path, good, "has no attribute 'conv_nett'", "(did you mean 'conv_net'?)")


def test_space_kwargs_the_space_function_does_not_take_are_refused(tmp_path, good, untouched):
    good["space"]["kwargs"] = {"num_clases": 10}
    run_refused(
        tmp_path,
        good,
        "space.kwargs {'num_clases': 10} do not fit the space function 'toolkit.spaces:conv_net'",
        "(did you mean 'num_classes'?)",
        "['num_classes']",
    )


def test_unknown_searcher_is_refused_with_the_valid_names(tmp_path, good, untouched):
    good["searcher"] = {"name": "randon"}
    run_refused(
        tmp_path, good, "unknown searcher 'randon'", "(did you mean 'random'?)", "'evolution', 'grid'"
    )


def test_unknown_scheduler_is_refused_with_the_valid_names(tmp_path, good, untouched):
    good["scheduler"] = {"name": "ashaa", "params": {"min_budget": 1, "max_budget": 9}}
    run_refused(tmp_path, good, "unknown scheduler 'ashaa'", "(did you mean 'asha'?)", "'hyperband'")


def test_unknown_evaluator_parameter_is_refused_with_the_valid_ones(tmp_path, good, untouched):
    good["evaluator"]["params"] = {"epoch": 2}
    run_refused(
        tmp_path, good, "SyntheticEvaluator has no parameter 'epoch'", "(did you mean 'epochs'?)", "'sleep'"
    )


def test_invalid_evaluator_value_is_refused_before_any_trial_runs(tmp_path, good, journal):
    good["name"] = "keras-bad"
    good["evaluator"] = {"name": "keras", "params": {"epochs": 0}}
    run_refused(
        tmp_path,
        good,
        "evaluator 'keras'",
        "epochs must be an int >= 1; got 0",
        "KerasClassifierEvaluator(epochs=5)",
    )
    assert not (journal.parent / "keras-bad").exists(), "a journal was created for a refused evaluator"


def test_zero_trials_in_the_file_is_refused(tmp_path, good, untouched):
    good["budget"]["n_trials"] = 0
    run_refused(tmp_path, good, "budget.n_trials must be a positive integer; got 0")


def test_zero_trials_on_the_command_line_is_refused(tmp_path, good, untouched):
    run_refused(
        tmp_path, good, "--trials must be a positive integer; got 0", "--trials 16", extra=("--trials", "0")
    )


def test_missing_experiment_file_is_refused():
    refused(darch("run", "conf/experiments/nosuch.yaml"), "'conf/experiments/nosuch.yaml' does not exist")


def test_binary_experiment_file_is_refused(tmp_path):
    blob = tmp_path / "model.npz"
    np.savez(blob, x=np.arange(100))
    refused(darch("run", str(blob)), "cannot be read as text", "Give a YAML file")


def test_log_dir_that_is_not_a_folder_is_refused(tmp_path, good):
    (tmp_path / "a-file").write_text("not a folder\n")
    good["log_dir"] = str(tmp_path / "a-file" / "logs")
    run_refused(
        tmp_path, good, "cannot create the experiment folder", "a-file is a file, not a folder", "--log-dir"
    )


# -- the Keras evaluator's dataset ----------------------------------------------------------------
def _mnist_experiment(good: dict[str, Any], path: Path) -> dict[str, Any]:
    good["name"] = "mnist"
    good["evaluator"] = {
        "name": "keras",
        "params": {"epochs": 1, "dataset": {"name": "mnist", "path": str(path)}},
    }
    return good


def test_missing_dataset_file_is_refused_in_the_driver_before_any_trial(tmp_path, good, journal):
    missing = tmp_path / "datasets" / "mnist.npz"
    run_refused(
        tmp_path,
        _mnist_experiment(good, missing),
        f"dataset file {missing} does not exist",
        "x_train, y_train, x_test, y_test",
        "copy it to the shared filesystem",
    )
    assert not (journal.parent / "mnist").exists(), "trials ran for a missing dataset"


def test_corrupt_dataset_file_is_refused_in_the_driver_before_any_trial(tmp_path, good, journal, mnist_path):
    corrupt = tmp_path / "mnist.npz"
    corrupt.write_bytes(mnist_path.read_bytes()[:100_000])  # a download cut short
    run_refused(
        tmp_path,
        _mnist_experiment(good, corrupt),
        f"dataset file {corrupt} could not be read as .npz",
        "corrupt or truncated",
    )
    assert not (journal.parent / "mnist").exists()


def test_dataset_file_with_the_wrong_arrays_names_the_missing_ones(tmp_path, good, journal):
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, images=np.zeros((4, 28, 28)), labels=np.zeros(4))
    run_refused(
        tmp_path,
        _mnist_experiment(good, wrong),
        "has the keys ['images', 'labels'] but lacks ['x_train', 'y_train', 'x_test', 'y_test']",
    )
    assert not (journal.parent / "mnist").exists()


def test_real_mnist_file_passes_the_driver_check(mnist_path):
    KerasClassifierEvaluator(dataset={"name": "mnist", "path": str(mnist_path)}).check()


# -- resuming -------------------------------------------------------------------------------------
def test_resume_of_a_folder_that_is_not_a_journal_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    before = snapshot(tmp_path)
    refused(
        darch("resume", str(tmp_path)),
        "is not a darch journal: it has no experiment.json",
        "['notes.txt']",
        "logs/<name>",
    )
    assert snapshot(tmp_path) == before


def test_resume_with_a_damaged_experiment_json_is_refused(tmp_path, journal):
    copy = tmp_path / NAME
    shutil.copytree(journal, copy)
    (copy / "experiment.json").write_text('{"name": "exp", "space": ')
    before = snapshot(copy)
    refused(darch("resume", str(copy)), "experiment.json is not valid JSON", "restore it")
    assert snapshot(copy) == before


def test_resume_with_another_space_in_python_is_refused(untouched):
    with pytest.raises(JournalError, match="holds a search over a different space") as info:
        Experiment.resume(untouched, space=SearchSpace(mlp), progress=False)
    assert "Use the space it was run with" in str(info.value)


def test_resume_after_the_space_kwargs_were_edited_is_refused(tmp_path, journal):
    copy = tmp_path / NAME
    shutil.copytree(journal, copy)
    spec = json.loads((copy / "experiment.json").read_text())
    spec["space"]["kwargs"] = {"num_classes": 5}
    (copy / "experiment.json").write_text(json.dumps(spec))
    before = snapshot(copy)
    refused(
        darch("resume", str(copy)),
        "holds a search over a different space (fingerprint",
        "its configs would not replay",
    )
    assert snapshot(copy) == before


def test_run_of_another_space_on_an_existing_folder_is_refused(tmp_path, good, untouched):
    good["space"]["kwargs"] = {"num_classes": 5}
    run_refused(tmp_path, good, "holds a search over a different space", "or another experiment name")


def test_second_live_search_on_the_same_folder_is_refused(tmp_path, good, journal, client):
    copy = tmp_path / "live" / NAME
    shutil.copytree(journal, copy)
    good["log_dir"] = str(copy.parent)
    cfg = write_yaml(tmp_path / "experiment.yaml", good)
    live = Experiment.load(copy, evaluator=SyntheticEvaluator(epochs=2, sleep=0.5))
    live.start(client, n_trials=40, progress=False)
    spec_before = snapshot(copy)["experiment.json"]  # as the live search wrote it
    try:
        for args in (("run", str(cfg)), ("resume", str(copy))):
            message = refused(
                darch(*args, "--no-progress"), "another live search is writing to", "Only one search"
            )
            assert f"pid {os.getpid()} on host" in message
            assert live.running, "the live search ended before the second one was tried; lengthen it"
    finally:
        live.stop()
    intruders = [e for e in read_events(copy, ["run"]) if e["pid"] != os.getpid()]
    assert not intruders, f"a refused command started a search in the folder: {intruders}"
    assert snapshot(copy)["experiment.json"] == spec_before


# -- results --------------------------------------------------------------------------------------
def test_results_of_an_empty_folder_is_refused(tmp_path):
    refused(darch("results", str(tmp_path)), "is not a darch journal", "it holds []")


def test_results_of_a_path_that_does_not_exist_is_refused(tmp_path):
    refused(darch("results", str(tmp_path / "nosuch")), "is not a folder", "logs/<name>")


def test_results_with_top_zero_is_refused(untouched):
    refused(
        darch("results", str(untouched), "--top", "0"), "--top must be a positive integer; got 0", "--top 16"
    )


# -- clusters -------------------------------------------------------------------------------------
def test_job_script_of_an_unknown_cluster_profile_is_refused():
    refused(
        darch("cluster", "nosuch", "--print-job-script"),
        "Unknown cluster profile 'nosuch'",
        "Valid profiles:",
        "bridges2-gpu",
        "conf/clusters/",
    )


def test_run_on_an_unknown_cluster_profile_is_refused(tmp_path, good, untouched):
    run_refused(
        tmp_path,
        good,
        "Unknown cluster profile 'test-slrum'",
        "(did you mean 'test-slurm'?)",
        extra=("--cluster", "test-slrum"),
    )


def test_run_against_an_unreachable_scheduler_address_is_refused(tmp_path, good, untouched):
    run_refused(
        tmp_path,
        good,
        "could not reach a Dask scheduler at 'tcp://127.0.0.1:1' within 3 s",
        "Check that the scheduler is running",
        extra=("--cluster", "tcp://127.0.0.1:1"),
    )


def test_unreachable_scheduler_address_in_python_is_a_clear_error(tmp_path):
    import dask

    exp = Experiment("addr", SearchSpace(conv_net), SyntheticEvaluator(), log_dir=tmp_path)
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}), pytest.raises(ConfigError) as info:
        exp.run("tcp://127.0.0.1:1", n_trials=2, progress=False)
    assert "could not reach a Dask scheduler at 'tcp://127.0.0.1:1' within 2 s" in str(info.value)
    assert not exp.path.exists(), "a journal was created although no scheduler answered"


@pytest.mark.slurm
def test_sbatch_refusing_the_job_shows_slurms_own_message(tmp_path, good, untouched):
    problem = _slurm_problem()
    if problem:
        pytest.skip(problem)
    job_name = f"darch-refused-{os.getpid()}"
    env = {  # the documented layering: a DASK_ variable beats the packaged profile
        "DASK_DARCH__CLUSTERS__TEST_SLURM__QUEUE": "nosuch-partition",
        "DASK_DARCH__CLUSTERS__TEST_SLURM__SHARED_TEMP_DIRECTORY": str(tmp_path / "tls"),
        "DASK_DARCH__CLUSTERS__TEST_SLURM__LOG_DIRECTORY": str(tmp_path / "jobs"),
        "DASK_DARCH__CLUSTERS__TEST_SLURM__JOB_NAME": job_name,
    }
    cfg = write_yaml(tmp_path / "experiment.yaml", good)
    proc = darch("run", str(cfg), "--no-progress", "--cluster", "test-slurm", "--jobs", "1", env=env)
    message = refused(proc, "SLURM refused the job script", "invalid partition", "Nothing was submitted")
    assert "--print-job-script" in message
    assert not _jobs_named(job_name), "a job was queued although sbatch refused the script"


def _slurm_problem() -> str | None:
    if shutil.which("sinfo") is None:
        return "SLURM is not installed here; start the test SLURM with tools/slurm.sh start"
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0 or not out.stdout.strip():
        return f"the SLURM controller does not answer ({out.stderr.strip() or 'no nodes'}); run tools/slurm.sh start"
    return None


def _jobs_named(name: str) -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%A", "-n", name], capture_output=True, text=True)
    return set(out.stdout.split())


# -- evaluators that misbehave: the trial fails, not the search ------------------------------------
EVALUATORS = textwrap.dedent(
    """
    import math


    class ReturnsList:
        def __call__(self, arch, *, config, **kw):
            return [0.9, 0.1]


    class ReturnsNaN:
        def __call__(self, arch, *, config, **kw):
            return {"val_accuracy": math.nan, "epochs": 1}
    """
)


def _misbehaving_run(
    tmp_path: Path, good: dict[str, Any], cls: str
) -> tuple[subprocess.CompletedProcess, pd.DataFrame]:
    (tmp_path / "darch_probe_evaluators.py").write_text(EVALUATORS)
    good.update(name="misbehaves", log_dir=str(tmp_path / "logs"))
    good["evaluator"] = {"name": f"darch_probe_evaluators:{cls}"}
    good["budget"] = {"n_trials": 2}
    cfg = write_yaml(tmp_path / "experiment.yaml", good)
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    proc = darch("run", str(cfg), "--no-progress", "--jobs", "1", env=env)
    csv = darch("results", str(tmp_path / "logs" / "misbehaves"), "--format", "csv")
    assert csv.returncode == 0, csv.stderr
    from io import StringIO

    return proc, pd.read_csv(StringIO(csv.stdout))


def test_evaluator_returning_a_non_dict_fails_its_trials_not_the_search(tmp_path, good):
    proc, df = _misbehaving_run(tmp_path, good, "ReturnsList")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "2 failed" in proc.stdout
    assert (
        "no finished trial yet; the first failure (trial 0): TrialError: the evaluator returned list"
        in proc.stdout
    )
    assert (df["status"] == "failed").all() and len(df) == 2
    assert df["error"].str.contains("not a dict. Return a dict such as {'val_accuracy': 0.97").all()


def test_nan_objective_fails_its_trials_not_the_search(tmp_path, good):
    proc, df = _misbehaving_run(tmp_path, good, "ReturnsNaN")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert (df["status"] == "failed").all() and len(df) == 2
    assert (
        df["error"].str.startswith("TrialError: objective 'val_accuracy' is nan, not a finite number").all()
    )
