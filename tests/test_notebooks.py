"""The notebooks run top to bottom with a real kernel, through tools/run_notebooks.py, as a user would.

Each notebook runs on a LocalCluster with its small default budget and a temporary log_dir; notebook 01 runs a
second time against the test SLURM (``tools/slurm.sh start``) with ``cluster_kind="slurm"``. The notebooks'
own check cells assert what matters (no TensorFlow in the kernel, finished trials, a saved model); here we also
check what they left on disk and that their figures were drawn. The committed notebooks must be stripped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "tools" / "run_notebooks.py"
NOTEBOOKS = ROOT / "notebooks"
ALL = ["01_mnist_multiworker.ipynb", "02_hyperband.ipynb", "03_explore_results.ipynb"]


def _run(tmp_path: Path, notebooks: list[Path], *params: str, timeout: int = 580):
    out = tmp_path / "executed"
    args = [sys.executable, str(RUNNER), "--output-dir", str(out), "--timeout", "540"]
    for p in params:
        args += ["--param", p]
    proc = subprocess.run(
        [*args, *map(str, notebooks)], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    return proc, out


def _outputs(path: Path) -> list[dict]:
    nb = nbformat.read(path, as_version=4)
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def _mimetypes(path: Path) -> list[str]:
    return [m for o in _outputs(path) for m in o.get("data", {})]


def _text(path: Path) -> str:
    return "".join(o.get("text", "") for o in _outputs(path) if o.get("output_type") == "stream")


def _failure(proc) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-8000:]}"


# --------------------------------------------------------------------------- committed state


@pytest.mark.parametrize("name", ALL)
def test_committed_notebook_is_stripped_and_has_a_parameters_cell(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{name} has outputs; strip them"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name} needs exactly one cell tagged 'parameters'"
    assert code.index(tagged[0]) == 0, "the parameters cell comes before any other code"


# --------------------------------------------------------------------------- the runner itself


def _tiny_notebook(path: Path, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 1\nname = 'a'", metadata={"tags": ["parameters"]})
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)
    return path


@pytest.mark.notebook
def test_runner_injects_parameters_and_leaves_the_notebook_alone(tmp_path):
    src = _tiny_notebook(tmp_path / "tiny.ipynb", "assert (x, name) == (5, 'b'), (x, name)\nprint('ok', x)")
    before = src.read_text()
    proc, out = _run(tmp_path, [src], "x=5", "name=b")
    assert proc.returncode == 0, _failure(proc)
    assert src.read_text() == before
    executed = nbformat.read(out / "tiny.ipynb", as_version=4)
    assert executed.cells[1].metadata["tags"] == ["injected-parameters"]
    assert "ok 5" in _text(out / "tiny.ipynb")


@pytest.mark.notebook
def test_runner_exits_nonzero_when_a_cell_raises(tmp_path):
    src = _tiny_notebook(tmp_path / "bad.ipynb", "raise ValueError('boom in cell 2')")
    proc, out = _run(tmp_path, [src])
    assert proc.returncode == 1
    assert "boom in cell 2" in proc.stderr
    assert (out / "bad.ipynb").exists(), "the partly executed copy is kept for debugging"


def test_runner_refuses_a_parameter_no_notebook_defines(tmp_path):
    src = _tiny_notebook(tmp_path / "tiny.ipynb", "pass")
    proc, _ = _run(tmp_path, [src], "n_trails=3")
    assert proc.returncode == 2
    assert "n_trails" in proc.stderr and "['name', 'x']" in proc.stderr


# --------------------------------------------------------------------------- the notebooks


@pytest.mark.notebook
def test_mnist_multiworker_notebook_runs_on_a_local_cluster(tmp_path):
    logs = tmp_path / "logs"
    proc, out = _run(tmp_path, [NOTEBOOKS / ALL[0]], "cluster_kind=local", f"log_dir={logs}")
    assert proc.returncode == 0, _failure(proc)
    executed = out / ALL[0]
    assert _mimetypes(executed).count("image/png") >= 3, "best-so-far, size and effects figures"
    assert "image/svg+xml" in _mimetypes(executed) or "text/html" in _mimetypes(executed)
    assert "using a LocalCluster" in _text(executed)
    assert "Test accuracy:" in _text(executed)
    models = list((logs / "mnist-multiworker" / "trials").glob("*/retrained.keras"))
    assert len(models) == 1 and models[0].stat().st_size > 0
    assert (models[0].parent / "retrained.json").exists()


@pytest.mark.notebook
def test_hyperband_notebook_runs_and_draws_learning_curves(tmp_path):
    logs = tmp_path / "logs"
    proc, out = _run(tmp_path, [NOTEBOOKS / ALL[1]], f"log_dir={logs}")
    assert proc.returncode == 0, _failure(proc)
    assert _mimetypes(out / ALL[1]).count("image/png") >= 3
    from toolkit import load_results

    df = load_results(logs / "hyperband-demo").frame()
    assert df["budget"].max() == 27 and (df["status"] == "finished").all()


@pytest.mark.notebook
def test_explore_results_notebook_makes_a_journal_and_exports_it(tmp_path):
    logs = tmp_path / "logs"
    proc, out = _run(tmp_path, [NOTEBOOKS / ALL[2]], f"log_dir={logs}")
    assert proc.returncode == 0, _failure(proc)
    assert _mimetypes(out / ALL[2]).count("image/png") >= 4
    exports = logs / "explore-demo" / "exports"
    assert (exports / "results.parquet").stat().st_size > 0
    assert (exports / "curves.nc").stat().st_size > 0


@pytest.mark.notebook
def test_explore_results_notebook_reads_a_given_journal(tmp_path):
    """journal_path given: it explores that journal (an MLP Hyperband search) and starts no search."""
    logs = tmp_path / "logs"
    proc, _ = _run(tmp_path, [NOTEBOOKS / ALL[1]], f"log_dir={logs}", "max_budget=3")
    assert proc.returncode == 0, _failure(proc)
    journal = logs / "hyperband-demo"
    proc, out = _run(tmp_path, [NOTEBOOKS / ALL[2]], f"journal_path={journal}", f"log_dir={logs}")
    assert proc.returncode == 0, _failure(proc)
    assert not (logs / "explore-demo").exists(), "a given journal must not start a new search"
    assert (journal / "exports" / "results.parquet").exists()
    assert "param_hidden_layers" in _text(out / ALL[2])


# --------------------------------------------------------------------------- against SLURM


def _slurm_problem() -> str | None:
    if shutil.which("sinfo") is None:
        return "sinfo is not installed; start the test SLURM with tools/slurm.sh start"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 15 s; is slurmctld running? (tools/slurm.sh status)"
    if out.returncode != 0 or not out.stdout.strip():
        return f"the SLURM controller does not answer ({out.stderr.strip() or 'no nodes'}); run tools/slurm.sh start"
    return None


@pytest.mark.notebook
@pytest.mark.slurm
def test_mnist_multiworker_notebook_runs_on_slurm(tmp_path):
    problem = _slurm_problem()
    if problem and os.environ.get("DARCH_REQUIRE_SLURM"):
        pytest.fail(f"DARCH_REQUIRE_SLURM is set but {problem}")
    if problem:
        pytest.skip(problem)
    logs = tmp_path / "logs"
    proc, out = _run(
        tmp_path,
        [NOTEBOOKS / ALL[0]],
        "cluster_kind=slurm",
        "profile=test-slurm",
        "jobs=2",
        'cluster_overrides={"memory": "4GB"}',  # TensorFlow needs more than the profile's 1GB
        f"log_dir={logs}",
    )
    assert proc.returncode == 0, _failure(proc)
    text = _text(out / ALL[0])
    assert "SLURM: profile 'test-slurm'" in text and "#SBATCH" in text
    from toolkit import load_results

    df = load_results(logs / "mnist-multiworker").frame()
    finished = df[df["status"] == "finished"]
    assert finished["slurm_job_id"].notna().all(), "every trial ran inside a SLURM job"
    assert list((logs / "mnist-multiworker" / "trials").glob("*/retrained.keras"))
