"""Results: a journal as a pandas DataFrame and learning curves as an xarray Dataset.

:func:`load_results` works on any journal folder, with no Experiment object and
while a search is still writing to it.

Examples
--------
>>> import tempfile
>>> from toolkit import Experiment, SearchSpace
>>> r = load_results  # load_results("logs/demo").frame() -> one row per trial
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pandas as pd

from toolkit.journal import Journal, read_events
from toolkit.space import Domain, domain_from_dict
from toolkit.trial import Objective, TrialStatus

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["Results", "load_results", "STATUSES"]

STATUSES = [s.value for s in TrialStatus]
CORE_KEYS = ("best_epoch", "epochs", "num_params", "history")
_KINDS = ("sampled", "started", "finished", "failed", "stopped", "promoted")


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a journal's events become rows and columns.

    Reading 100,000 trials builds millions of dicts and lists, none of them cyclic; the collector's
    full passes over them cost more than the parsing itself (4x at 100k trials).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _param_dtype(domain: Domain | None, values: list[Any]) -> Any:
    kind = getattr(domain, "kind", None)
    if kind == "int":
        return "Int64"
    if kind == "float":
        return "float64"
    if kind == "bool":
        return "boolean"
    opts = list(getattr(domain, "options", [])) or [v for v in values if v is not None]
    if opts and all(isinstance(o, bool) for o in opts):
        return "boolean"
    if opts and all(isinstance(o, int) and not isinstance(o, bool) for o in opts):
        return "Int64"
    if opts and all(isinstance(o, (int, float)) and not isinstance(o, bool) for o in opts):
        return "float64"
    if opts and all(isinstance(o, str) for o in opts):
        return "str"
    return "object"


class Results:
    """The trials of one journal folder, read once.

    Parameters
    ----------
    path
        An experiment folder (``logs/<name>``).
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.journal = Journal.open(path)
        self.path = Path(path)
        self.spec = self.journal.spec()
        self.objective = Objective(self.spec.get("objective", "val_accuracy"), self.spec.get("mode", "max"))
        self.domains = {
            n: domain_from_dict(d)
            for n, d in ((self.spec.get("space") or {}).get("hyperparameters") or {}).items()
        }
        with _gc_paused():
            self._rows = self._fold(read_events(self.journal.file, _KINDS, defer=("started",)))

    # -- folding -------------------------------------------------------------------
    @staticmethod
    def _fold(events: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
        """Per trial: config, status, latest result, start info and rung scores (a light fold)."""
        rows: dict[int, dict[str, Any]] = {}
        for ev in events:
            kind = ev["event"]
            tid = ev.get("trial")
            if kind == "sampled":
                if tid not in rows:
                    rows[tid] = {
                        "config": ev.get("config") or {},
                        "status": "pending",
                        "rung": ev.get("rung"),
                        "budget": ev.get("budget"),
                        "rungs": {},
                        "history": None,
                        "attempts": 0,
                        "t0": ev.get("t"),
                    }
                continue
            row = rows.get(tid)
            if row is None:
                continue
            if kind == "started":
                if row["status"] in ("finished", "failed"):
                    continue  # a late re-run of a recorded trial: keep the start of the recorded run
                if "raw" in ev:  # parsed at the end, only if no finished event carries the start
                    row["start_raw"] = ev["raw"]
                else:
                    row["start"] = ev
                    row.pop("start_raw", None)
                if row["status"] not in ("finished", "failed"):
                    row["status"] = "running"
            elif kind == "finished" or kind == "failed":
                row["status"] = kind
                row["attempts"] = ev.get("attempts", row["attempts"])
                row["duration_s"] = (row.get("duration_s") or 0.0) + (ev.get("duration_s") or 0.0)
                row["t1"] = ev.get("t")
                if ev.get("start"):
                    row["start"] = ev["start"]
                    row.pop("start_raw", None)
                if kind == "finished":
                    res = ev.get("result") or {}
                    row["result"] = res
                    row["value"] = ev.get("value")
                    row["error"] = None
                    if res.get("history"):
                        row["history"] = res["history"]
                else:
                    row["error"] = ev.get("error")
                if ev.get("rung") is not None:
                    row["rung"] = ev["rung"]
                    row["budget"] = ev.get("budget")
                    row["rungs"][ev["rung"]] = ev.get("value") if kind == "finished" else None
            elif kind == "stopped":
                if row["status"] not in ("finished", "failed"):
                    row["status"] = "stopped"
            elif kind == "promoted":
                row["status"] = "pending"
                row["rung"] = ev.get("rung")
                row["budget"] = ev.get("budget")
        for row in rows.values():
            raw = row.pop("start_raw", None)
            if raw is not None:
                row["start"] = orjson.loads(raw)
        return rows

    # -- the table -----------------------------------------------------------------
    @property
    def multi_fidelity(self) -> bool:
        return bool(self.spec.get("scheduler"))

    def frame(self) -> pd.DataFrame:
        """One row per trial.

        Columns: ``trial_id``, ``status``, the objective, ``best_epoch``,
        ``epochs``, ``num_params``, ``duration_s``, ``worker``, ``host``,
        ``slurm_job_id``, ``gpu``, ``attempts``, ``error``, one
        ``param_<name>`` per hyperparameter, ``budget``/``rung`` and
        ``<objective>_rung<k>`` for multi-fidelity runs, then any other scalar
        metric the evaluator reported.
        """
        with _gc_paused():
            return self._frame()

    def _frame(self) -> pd.DataFrame:
        rows = self._rows
        ids = list(rows)
        obj = self.objective.name
        n = len(ids)
        cols: dict[str, Any] = {}
        cols["trial_id"] = np.asarray(ids, dtype="int64")
        cols["status"] = pd.Categorical([r["status"] for r in rows.values()], categories=STATUSES)
        results = [r.get("result") or {} for r in rows.values()]
        starts = [r.get("start") or {} for r in rows.values()]
        cols[obj] = _floats([r.get("value") for r in rows.values()])
        cols["best_epoch"] = _ints([res.get("best_epoch") for res in results])
        cols["epochs"] = _ints([res.get("epochs") for res in results])
        cols["num_params"] = _ints([res.get("num_params") for res in results])
        cols["duration_s"] = _floats([r.get("duration_s") for r in rows.values()])
        for key in ("worker", "host", "slurm_job_id"):
            cols[key] = pd.array([s.get(key) for s in starts], dtype="str")
        cols["gpu"] = pd.array(
            [res.get("device") or s.get("cuda_visible_devices") for res, s in zip(results, starts)],
            dtype="str",
        )
        cols["attempts"] = np.asarray([r.get("attempts") or 0 for r in rows.values()], dtype="int64")
        cols["error"] = pd.array([r.get("error") for r in rows.values()], dtype="str")
        # One pass over every config: the space's names first, then any others in order of appearance.
        params: dict[str, list[Any]] = {name: [None] * n for name in self.domains}
        for i, r in enumerate(rows.values()):
            for k, v in r["config"].items():
                col = params.get(k)
                if col is None:
                    col = params[k] = [None] * n
                col[i] = v
        for name, values in params.items():
            dtype = _param_dtype(self.domains.get(name), values)
            cols[f"param_{name}"] = pd.array(values, dtype=dtype) if dtype != "object" else values
        if self.multi_fidelity:
            cols["budget"] = _floats([r.get("budget") for r in rows.values()])
            cols["rung"] = _ints([r.get("rung") for r in rows.values()])
            top = max((max(r["rungs"], default=-1) for r in rows.values()), default=-1)
            for k in range(top + 1):
                cols[f"{obj}_rung{k}"] = np.asarray(
                    [_num(r["rungs"].get(k)) for r in rows.values()], dtype="float64"
                )
        extra: dict[str, list[Any]] = {}
        skip = set(CORE_KEYS) | {obj, "device", "host", "pid"}
        for i, res in enumerate(results):
            for k, v in res.items():
                if k in skip or k in cols:
                    continue
                if isinstance(v, (int, float)) and not isinstance(v, bool) or v is None:
                    col = extra.get(k)
                    if col is None:  # not setdefault: that would build an n-long list per cell
                        col = extra[k] = [None] * n
                    col[i] = v
        for k, vals in extra.items():
            cols[k] = _floats(vals)
        return pd.DataFrame(cols, index=pd.RangeIndex(n))

    def best(self) -> pd.Series:
        """The best finished trial's row."""
        df = self.frame()
        done = df[df["status"] == "finished"]
        if done.empty:
            raise ValueError(f"{self.path} has no finished trial yet")
        col = done[self.objective.name]
        idx = col.idxmax() if self.objective.mode == "max" else col.idxmin()
        return df.loc[idx]

    # -- the curves ----------------------------------------------------------------
    def curves(self) -> xr.Dataset:
        """Learning curves: dims ``(trial, epoch)``, one variable per metric.

        Coordinates along ``trial``: ``status`` and each ``param_<name>``
        (plus ``rung`` and ``budget`` for multi-fidelity runs). Epochs a trial
        did not train are NaN.
        """
        import xarray as xr

        rows = self._rows
        ids = [t for t, r in rows.items() if r.get("history") and r["history"].get("epoch")]
        max_epoch = max((max(rows[t]["history"]["epoch"]) for t in ids), default=0)
        metrics: list[str] = []
        for t in ids:
            for k in rows[t]["history"]:
                if k != "epoch" and k not in metrics:
                    metrics.append(k)
        data = {m: np.full((len(ids), max_epoch), np.nan) for m in metrics}
        for i, t in enumerate(ids):
            hist = rows[t]["history"]
            idx = np.asarray(hist["epoch"], dtype=int) - 1
            for m in metrics:
                vals = hist.get(m)
                if vals is not None and len(vals) == len(idx):
                    data[m][i, idx] = np.asarray([_num(v) for v in vals], dtype=float)
        frame = self.frame().set_index("trial_id").loc[ids] if ids else None
        coords: dict[str, Any] = {
            "trial": np.asarray(ids, dtype="int64"),
            "epoch": np.arange(1, max_epoch + 1),
        }
        if frame is not None:
            coords["status"] = ("trial", frame["status"].astype(str).to_numpy())
            for col in frame.columns:
                if col.startswith("param_") or col in ("rung", "budget"):
                    coords[col] = (
                        "trial",
                        frame[col].to_numpy(dtype=object if frame[col].dtype == "str" else None),
                    )
        else:
            coords["status"] = ("trial", np.asarray([], dtype=object))
        ds = xr.Dataset({m: (("trial", "epoch"), v) for m, v in data.items()}, coords=coords)
        ds.attrs.update(
            experiment=self.spec.get("name", ""), objective=self.objective.name, mode=self.objective.mode
        )
        return ds

    # -- export --------------------------------------------------------------------
    def to_parquet(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`frame` to Parquet."""
        df = self.frame()
        for col in df.columns:
            if df[col].dtype == object:
                df[col] = df[col].astype("str")
        df.to_parquet(path, index=False)
        return Path(path)

    def to_netcdf(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`curves` to NetCDF.

        NetCDF (HDF5) names cannot hold ``/``, so ``param_conv0/filters`` is
        written as ``param_conv0.filters``; text coordinates are written as strings.
        """
        ds = self.curves()
        for name in list(ds.coords):
            var = ds.coords[name].variable
            if var.dtype == object or str(var.dtype) == "str":
                ds = ds.assign_coords({name: var.astype(str)})
        ds = ds.rename({n: n.replace("/", ".") for n in ds.variables if "/" in n})
        ds.to_netcdf(path)
        return Path(path)


def _floats(values: list[Any]) -> np.ndarray:
    """A float64 column: numbers as they are; ``None``, bools and non-numbers as NaN (see :func:`_num`)."""
    if all(v is None or type(v) is float or type(v) is int for v in values):
        return np.array(values, dtype="float64")  # the common case, at C speed: None becomes NaN
    return np.asarray([_num(v) for v in values], dtype="float64")


def _ints(values: list[Any]) -> pd.api.extensions.ExtensionArray:
    """An Int64 column: ints as they are; ``None``, bools and non-numbers as NA (see :func:`_int`)."""
    if all(v is None or type(v) is int for v in values):
        return pd.array(values, dtype="Int64")
    return pd.array([_int(v) for v in values], dtype="Int64")


def _num(v: Any) -> float:
    if v is None or isinstance(v, bool):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _int(v: Any) -> int | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def load_results(path: str | os.PathLike[str]) -> Results:
    """Read a journal folder into a :class:`Results` (``.frame()``, ``.curves()``, ``.best()``).

    Examples
    --------
    >>> # load_results("logs/mnist-random").frame().sort_values("val_accuracy").tail()
    """
    return Results(path)
