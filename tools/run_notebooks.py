#!/usr/bin/env python
"""Execute darch's notebooks top to bottom with a real Jupyter kernel, optionally with new parameters.

    python tools/run_notebooks.py                                  # every notebooks/*.ipynb
    python tools/run_notebooks.py --param n_trials=4 --param cluster_kind='"local"' notebooks/01_*.ipynb
    python tools/run_notebooks.py --output-dir /tmp/executed --param log_dir=/tmp/logs

Each notebook runs with nbclient in the kernel ``python3`` of *this* Python (jupyter_client starts a
kernelspec whose command is ``python`` with ``sys.executable``), with the notebook's own folder as the working
directory, as Jupyter does. ``--param name=value`` values are Python literals (``4``, ``None``, ``'"slurm"'``,
``{"memory": "3GB"}``); anything that is not a literal is taken as a string (``cluster_kind=local``). As with
papermill, they are written into a new cell, tagged ``injected-parameters``, right after the cell tagged
``parameters``; a notebook gets only the names its parameters cell defines, and a name that no selected
notebook defines is an error (a typo would otherwise be ignored).

Executed copies go to ``--output-dir`` (default: a new temporary folder, printed at the end); the committed
notebooks are never written. Exit status: 0 when every notebook ran, 1 when a cell raised or timed out (the
partly executed copy is still written), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import ast
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
INJECTED_TAG = "injected-parameters"

logger = logging.getLogger("run_notebooks")


class UsageError(Exception):
    """A bad command line: exit code 2."""


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["n=4", "kind=local"]`` -> ``{"n": 4, "kind": "local"}`` (Python literals, else strings).

    Examples
    --------
    >>> parse_params(["n_trials=4", "cluster_kind=local", "subset=None", 'profile="test-slurm"'])
    {'n_trials': 4, 'cluster_kind': 'local', 'subset': None, 'profile': 'test-slurm'}
    """
    params: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise UsageError(f"--param takes NAME=VALUE with NAME a Python identifier; got {item!r}")
        try:
            params[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            params[name] = text
    return params


def parameter_names(nb: Any) -> set[str]:
    """The names the cell tagged ``parameters`` assigns."""
    cell = _parameters_cell(nb)
    if cell is None:
        return set()
    names = set()
    for node in ast.parse(cell.source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for t in targets:
            if isinstance(t, ast.Name):
                names.add(t.id)
    return names


def _parameters_cell(nb: Any) -> Any:
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return cell
    return None


def inject(nb: Any, params: dict[str, Any]) -> Any:
    """Insert an ``injected-parameters`` cell after the ``parameters`` cell (or first, when it has none)."""
    import nbformat

    if not params:
        return nb
    lines = ["# Parameters injected by tools/run_notebooks.py"]
    lines += [f"{name} = {value!r}" for name, value in params.items()]
    new = nbformat.v4.new_code_cell("\n".join(lines), metadata={"tags": [INJECTED_TAG]})
    cell = _parameters_cell(nb)
    at = nb.cells.index(cell) + 1 if cell is not None else 0
    nb.cells.insert(at, new)
    return nb


def run_notebook(
    path: Path,
    params: dict[str, Any],
    output_dir: Path,
    timeout: int = 900,
    kernel_name: str = "python3",
) -> tuple[Path, str | None]:
    """Execute one notebook; return the executed copy's path and the error (``None`` on success)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(path, as_version=4)
    own = parameter_names(nb)
    mine = {k: v for k, v in params.items() if k in own}
    inject(nb, mine)
    out = output_dir / path.name
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=kernel_name,
        resources={"metadata": {"path": str(path.parent.resolve())}},
        allow_errors=False,
        record_timing=True,
    )
    error = None
    try:
        client.execute()
    except CellExecutionError as exc:
        error = _short(str(exc))
    except (CellTimeoutError, DeadKernelError, TimeoutError, RuntimeError) as exc:
        error = f"{type(exc).__name__}: {_short(str(exc))}"
    finally:
        nbformat.write(nb, out)
    return out, error


def _short(text: str, limit: int = 6000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="run_notebooks.py",
        description="Execute darch notebooks with nbclient, injecting parameters after the 'parameters' cell.",
        epilog="Example: python tools/run_notebooks.py --param cluster_kind=local --param n_trials=4",
    )
    parser.add_argument(
        "notebooks", nargs="*", type=Path, help="notebooks to run (default notebooks/*.ipynb)"
    )
    parser.add_argument(
        "--param", "-p", action="append", default=[], metavar="NAME=VALUE", help="override a parameter"
    )
    parser.add_argument(
        "--output-dir", "-o", type=Path, help="where executed copies go (default: a temp folder)"
    )
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell (default 900)")
    parser.add_argument(
        "--kernel", default="python3", help="Jupyter kernel name (default python3: this Python)"
    )
    parser.add_argument("--keep-going", action="store_true", help="run the other notebooks after a failure")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="run_notebooks: %(message)s")

    try:
        params = parse_params(args.param)
        paths = [p.resolve() for p in (args.notebooks or sorted(NOTEBOOKS.glob("*.ipynb")))]
        if not paths:
            raise UsageError(f"no notebooks given and none in {NOTEBOOKS}")
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise UsageError(f"no such notebook(s): {missing}")
        import nbformat

        defined: set[str] = set()
        for p in paths:
            defined |= parameter_names(nbformat.read(p, as_version=4))
        unknown = sorted(set(params) - defined)
        if unknown:
            raise UsageError(
                f"parameter(s) {unknown} are not set in the 'parameters' cell of any of "
                f"{[p.name for p in paths]}; those cells define {sorted(defined)}"
            )
        output_dir = (args.output_dir or Path(tempfile.mkdtemp(prefix="darch-notebooks-"))).resolve()
        output_dir.mkdir(parents=True, exist_ok=True)
        if any(output_dir == p.parent for p in paths):
            raise UsageError(
                f"--output-dir {output_dir} holds the notebooks themselves; executed copies must go elsewhere"
            )
    except UsageError as exc:
        print(f"run_notebooks.py: error: {exc}", file=sys.stderr)
        return 2

    failures = []
    for path in paths:
        t0 = time.perf_counter()
        logger.info("running %s", path.name)
        out, error = run_notebook(path, params, output_dir, args.timeout, args.kernel)
        took = time.perf_counter() - t0
        if error is None:
            logger.info("%s ran in %.0f s -> %s", path.name, took, out)
            continue
        failures.append(path.name)
        print(
            f"run_notebooks.py: {path.name} FAILED after {took:.0f} s (executed copy: {out})\n{error}",
            file=sys.stderr,
        )
        if not args.keep_going:
            break
    logger.info("executed notebooks are in %s", output_dir)
    if failures:
        print(f"run_notebooks.py: failed: {failures}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
