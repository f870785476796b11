"""Figures of a search: progress, size against score, hyperparameter effects, learning curves.

Every function takes the results table (:meth:`toolkit.Experiment.results`, one
row per trial) or the learning curves (:meth:`toolkit.Experiment.curves`, an
``xarray.Dataset``) and returns a :class:`matplotlib.figure.Figure`. Figures
are built with the object-oriented API, never through ``pyplot``'s global
state, so they render under the Agg backend on a cluster node, do not pile up
in ``pyplot``'s figure list, and are shown once in Jupyter (run
``%matplotlib inline`` first) or written with ``fig.savefig("best.png")``.

Only trials whose status is ``finished`` and whose objective is a finite
number are plotted; failed and running ones are counted in the titles. A
hyperparameter that a trial's architecture did not use (``conv2/filters`` when
``conv_blocks`` is 2) is NaN in the table and is left out of that panel. A
table with nothing to plot raises a :class:`ValueError` that says why.

Examples
--------
>>> import pandas as pd
>>> df = pd.DataFrame({"trial_id": [0, 1, 2], "status": ["finished"] * 3,
...                    "val_accuracy": [0.8, 0.9, 0.85], "duration_s": [3.0, 2.0, 4.0],
...                    "num_params": [1000, 20000, 5000], "param_units": [16, 64, 32]})
>>> fig = best_so_far(df)
>>> fig.axes[0].get_ylabel()
'val_accuracy (line: best so far)'
>>> accuracy_vs_params(df).axes[0].get_xscale()
'log'
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "accuracy_vs_params",
    "best_so_far",
    "hyperparameter_effects",
    "learning_curves",
    "parallel_coordinates",
]

logger = logging.getLogger(__name__)

#: Integer hyperparameters with at most this many distinct values are drawn as categories.
MAX_INT_CATEGORIES = 8
_FINISHED = "finished"


# --------------------------------------------------------------------------- helpers


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _axes(ax: Axes | None, width: float = 6.4, height: float = 4.2) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = _figure(width, height)
    return fig, fig.add_subplot()


def _objective(df: pd.DataFrame, objective: str | None, mode: str | None, fn: str) -> tuple[str, str]:
    """The objective column and its direction: the arguments, else ``df.attrs``, else val_accuracy/max."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(
            f"{fn} takes the results table (a pandas DataFrame, e.g. exp.results()); got {type(df).__name__}."
        )
    name = objective or df.attrs.get("objective") or "val_accuracy"
    direction = (mode or df.attrs.get("mode") or "max").lower()
    if direction not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min'; got {mode!r}. For example {fn}(df, mode='min').")
    if name not in df.columns:
        numeric = [c for c in df.columns if pd.api.types.is_float_dtype(df[c]) and not c.startswith("param_")]
        raise ValueError(
            f"{fn}: the results table has no objective column {name!r}; numeric columns are {numeric}. "
            f"Pass the one the search optimised, for example {fn}(df, objective={numeric[0] if numeric else 'val_loss'!r})."
        )
    return name, direction


def _finished(df: pd.DataFrame, objective: str, fn: str) -> pd.DataFrame:
    """The finished trials with a finite objective; a clear error when there are none."""
    values = pd.to_numeric(df[objective], errors="coerce").astype("float64")
    ok = np.isfinite(values.to_numpy())
    if "status" in df.columns:
        ok &= (df["status"].astype("str") == _FINISHED).to_numpy()
    if not ok.any():
        counts = df["status"].astype("str").value_counts().to_dict() if "status" in df.columns else {}
        raise ValueError(
            f"{fn} needs at least one finished trial with a finite {objective!r}; the table has {len(df)} "
            f"row(s)"
            + (f" with statuses {counts}" if counts else "")
            + ". Run the search first (exp.run(...)) "
            "or wait for a trial to finish."
        )
    out = df.loc[ok].copy()
    out[objective] = values[ok]
    return out


def _counts_note(df: pd.DataFrame, shown: int) -> str:
    if "status" not in df.columns:
        return f"{shown} trials"
    counts = df["status"].astype("str").value_counts()
    extra = ", ".join(f"{n} {s}" for s, n in counts.items() if s != _FINISHED and n)
    return f"{shown} finished" + (f"; {extra}" if extra else "")


def _param_columns(df: pd.DataFrame, params: Sequence[str] | None, fn: str) -> list[str]:
    if params is None:
        cols = [c for c in df.columns if c.startswith("param_")]
    else:
        cols = [p if p.startswith("param_") else f"param_{p}" for p in params]
        missing = [c for c in cols if c not in df.columns]
        if missing:
            have = [c.removeprefix("param_") for c in df.columns if c.startswith("param_")]
            raise ValueError(f"{fn}: no hyperparameter(s) {missing} in the table; it has {have}.")
    if not cols:
        raise ValueError(
            f"{fn} needs hyperparameter columns (param_<name>) in the table; it has none "
            f"(columns: {list(df.columns)[:20]}). Pass exp.results(), not a summary of it."
        )
    return cols


def _is_categorical(col: pd.Series) -> bool:
    """Strings and booleans are categories; so are integers that look like a choice among a few values.

    An integer is a choice when it has at most 3 distinct values, or at most
    :data:`MAX_INT_CATEGORIES` that repeat (twice each on average): ``filters``
    in ``[16, 32, 48, 64]``, not ``units`` drawn from 16 to 512.
    """
    if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
        return True
    if pd.api.types.is_integer_dtype(col):
        values = col.dropna()
        n = values.nunique()
        return n <= 3 or (n <= MAX_INT_CATEGORIES and len(values) >= 2 * n)
    return False


def _log_axis(ax: Axes, values: np.ndarray) -> None:
    """A log x axis with plain numbers (at 10^k, and 2 and 5 x 10^k within a short range), no minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    v = values[np.isfinite(values) & (values > 0)]
    decades = np.log10(v.max() / v.min()) if len(v) else 0.0
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 1.5 else (1.0,)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _numeric(col: pd.Series) -> np.ndarray:
    return pd.to_numeric(col, errors="coerce").astype("float64").to_numpy(na_value=np.nan)


def _log_scale(values: np.ndarray) -> bool:
    """Log scale for positive values over more than a factor of 20 that look log-uniformly drawn.

    The table does not say how a hyperparameter was sampled, so compare where the
    median sits: in the middle of the log range (``learning_rate`` drawn
    log-uniformly) or of the linear range (``dropout`` drawn uniformly).
    """
    v = values[np.isfinite(values)]
    if len(v) < 2 or v.min() <= 0 or v.max() / v.min() < 20:
        return False
    lo, hi, med = v.min(), v.max(), np.median(v)
    linear = (med - lo) / (hi - lo)
    log = (np.log(med) - np.log(lo)) / (np.log(hi) - np.log(lo))
    return bool(abs(log - 0.5) < abs(linear - 0.5))


def _active(col: pd.Series) -> np.ndarray:
    """Rows where the hyperparameter was used (not NaN / <NA> / None)."""
    return col.notna().to_numpy()


def _categories(col: pd.Series) -> list[Any]:
    values = col[col.notna()].tolist()
    uniq = list(dict.fromkeys(values))
    try:
        return sorted(uniq)
    except TypeError:
        return sorted(uniq, key=str)


def _budget_colors(df: pd.DataFrame) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Per-row colours by the budget a trial ended at (multi-fidelity runs), and legend entries.

    Budgets, not rung indices, because a Hyperband bracket numbers its rungs from its own first budget.
    ``(None, {})`` for a single-fidelity table.
    """
    key = "budget" if "budget" in df.columns and df["budget"].notna().any() else "rung"
    if key not in df.columns or df[key].isna().all():
        return None, {}
    from matplotlib import colormaps

    values = _numeric(df[key])
    levels = sorted({float(v) for v in values if np.isfinite(v)})
    top = max(len(levels) - 1, 1)
    cmap = colormaps["viridis"]
    shade = {v: cmap(0.1 + 0.8 * i / top) for i, v in enumerate(levels)}
    colors = np.array([shade.get(float(v), (0.6, 0.6, 0.6, 1.0)) for v in values])
    what = "budget" if key == "budget" else "rung"
    legend = {f"ended at {what} {v:g}": c for v, c in shade.items()}
    return colors, legend


def _budget_legend(ax: Axes, legend: dict[str, Any]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker="o", color=c, label=label) for label, c in legend.items()]
    # Keep what else the axes labelled (best-so-far line, failures, Pareto front), not the plain dots.
    other = [h for h, lab in zip(*ax.get_legend_handles_labels()) if lab != "finished trial"]
    ax.legend(handles=other + handles, fontsize="small", loc="best")


def _label(name: str) -> str:
    return name.removeprefix("param_")


# --------------------------------------------------------------------------- best so far


def best_so_far(
    df: pd.DataFrame,
    objective: str | None = None,
    mode: str | None = None,
    x: str = "auto",
    ax: Axes | None = None,
) -> Figure:
    """Best objective so far against time: how the search converged.

    Parameters
    ----------
    df
        The results table (``exp.results()``).
    objective, mode
        The objective column and ``"max"`` or ``"min"``; default ``df.attrs``,
        else ``"val_accuracy"`` / ``"max"``.
    x
        ``"wall"``: seconds since the first trial started, from a
        ``finished_at`` (and ``started_at``) column of Unix times;
        ``"compute"``: cumulative trial time (the sum of ``duration_s`` in
        trial order, i.e. worker-seconds spent); ``"trial"``: the number of
        trials run; ``"auto"``: ``"wall"`` when the table has ``finished_at``,
        else ``"compute"`` when it has ``duration_s``, else ``"trial"``.
    ax
        Draw into this Axes instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        Each finished trial as a dot (coloured by the budget it ended at in multi-fidelity runs),
        failed ones as red crosses along the bottom, and the best-so-far as a
        step line.

    Raises
    ------
    ValueError
        When no trial has finished, or ``x`` names a column the table lacks.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"trial_id": [0, 1], "status": ["finished", "failed"],
    ...                    "val_accuracy": [0.9, float("nan")], "duration_s": [2.0, 1.0]})
    >>> best_so_far(df, x="trial").axes[0].get_xlabel()
    'trials run (in order)'
    """
    fn = "best_so_far"
    obj, direction = _objective(df, objective, mode, fn)
    _finished(df, obj, fn)  # raises when there is nothing to plot
    if x == "auto":
        x = "wall" if "finished_at" in df.columns else "compute" if "duration_s" in df.columns else "trial"
    order_col = {"wall": "finished_at", "compute": "trial_id", "trial": "trial_id"}.get(x)
    if order_col is None:
        raise ValueError(f"{fn}: x must be 'auto', 'wall', 'compute' or 'trial'; got {x!r}.")
    need = {"wall": ["finished_at"], "compute": ["duration_s"], "trial": []}[x]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"{fn}(x={x!r}) needs the column(s) {missing}; the table lacks them. Use x='trial'.")
    if order_col not in df.columns:  # no trial ids: the table's own order
        order_col = None

    ended = df[df["status"].astype("str").isin([_FINISHED, "failed"])] if "status" in df.columns else df
    if order_col is not None:
        ended = ended.sort_values(order_col, kind="stable")
    if x == "wall":
        ended = ended[np.isfinite(_numeric(ended["finished_at"]))]
        t_end = _numeric(ended["finished_at"])
        t0 = np.nanmin(_numeric(df["started_at"])) if "started_at" in df.columns else np.nan
        if not np.isfinite(t0):
            t0 = (
                np.nanmin(t_end - np.nan_to_num(_numeric(ended["duration_s"])))
                if "duration_s" in ended
                else t_end.min()
            )
        xs = t_end - t0
        xlabel = "wall-clock time since the first trial started (s)"
    elif x == "compute":
        xs = np.cumsum(np.nan_to_num(_numeric(ended["duration_s"])))
        xlabel = "cumulative trial time (worker-seconds)"
    else:
        xs = np.arange(1, len(ended) + 1, dtype=float)
        xlabel = "trials run (in order)"

    values = _numeric(ended[obj])
    done = (
        (ended["status"].astype("str") == _FINISHED).to_numpy()
        if "status" in ended
        else np.ones(len(ended), bool)
    )
    done = done & np.isfinite(values)
    score = np.where(done, values if direction == "max" else -values, -np.inf)
    best = np.maximum.accumulate(score)
    best = np.where(np.isfinite(best), best if direction == "max" else -best, np.nan)

    fig, ax = _axes(ax)
    colors, legend = _budget_colors(ended)
    ax.scatter(
        xs[done],
        values[done],
        s=18,
        alpha=0.6,
        c=None if colors is None else colors[done],
        color="tab:blue" if colors is None else None,
        label="finished trial",
        zorder=2,
    )
    ax.step(xs, best, where="post", color="black", lw=1.8, label=f"best so far ({direction})", zorder=3)
    failed = ~done & (ended["status"].astype("str") == "failed").to_numpy() if "status" in ended else ~done
    if failed.any():
        low = np.nanmin(values[done])
        ax.scatter(
            xs[failed], np.full(failed.sum(), low), marker="x", color="tab:red", s=22, label="failed trial"
        )
    if legend:
        _budget_legend(ax, legend)
    else:
        ax.legend(fontsize="small", loc="lower right" if direction == "max" else "upper right")
    final = best[np.isfinite(best)][-1]
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{obj} (line: best so far)")
    ax.set_title(f"Search progress: best {obj} = {final:.4g} ({_counts_note(df, int(done.sum()))})")
    ax.grid(alpha=0.3)
    return fig


# --------------------------------------------------------------------------- accuracy vs size


def accuracy_vs_params(
    df: pd.DataFrame,
    objective: str | None = None,
    mode: str | None = None,
    params_column: str = "num_params",
    ax: Axes | None = None,
) -> Figure:
    """Objective against model size (log scale), with the Pareto front of small and good models.

    Parameters
    ----------
    df
        The results table.
    objective, mode
        As in :func:`best_so_far`.
    params_column
        The size column; ``num_params`` (trainable and other parameters, from the evaluator).
    ax
        Draw into this Axes instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        When no finished trial reports a positive size.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"status": ["finished"] * 3, "val_accuracy": [0.7, 0.9, 0.8],
    ...                    "num_params": [100, 10_000, 1_000]})
    >>> fig = accuracy_vs_params(df)
    >>> fig.axes[0].get_xlabel()
    'num_params (log scale)'
    """
    fn = "accuracy_vs_params"
    obj, direction = _objective(df, objective, mode, fn)
    if params_column not in df.columns:
        raise ValueError(
            f"{fn}: the table has no {params_column!r} column; the evaluator did not report sizes."
        )
    done = _finished(df, obj, fn)
    size = _numeric(done[params_column])
    ok = np.isfinite(size) & (size > 0)
    if not ok.any():
        raise ValueError(
            f"{fn}: none of the {len(done)} finished trials reports a positive {params_column!r}; "
            "an evaluator reports it as result['num_params']."
        )
    done, size = done.loc[ok], size[ok]
    values = done[obj].to_numpy(dtype=float)
    fig, ax = _axes(ax)
    colors, legend = _budget_colors(done)
    ax.scatter(
        size, values, s=24, alpha=0.75, c=colors, color="tab:blue" if colors is None else None, zorder=2
    )
    # Pareto front: no other model is both smaller and better.
    order = np.lexsort((-values if direction == "max" else values, size))
    front_x, front_y, best = [], [], -np.inf
    for i in order:
        s = values[i] if direction == "max" else -values[i]
        if s > best:
            best = s
            front_x.append(size[i])
            front_y.append(values[i])
    ax.step(front_x, front_y, where="post", color="black", lw=1.2, alpha=0.8, label="Pareto front", zorder=3)
    i_best = int(np.argmax(values) if direction == "max" else np.argmin(values))
    tid = done["trial_id"].iloc[i_best] if "trial_id" in done.columns else done.index[i_best]
    ax.scatter(
        [size[i_best]],
        [values[i_best]],
        s=160,
        facecolors="none",
        edgecolors="tab:red",
        lw=2,
        label=f"best: trial {tid}",
        zorder=4,
    )
    ax.set_xscale("log")
    ax.set_xlabel(f"{params_column} (log scale)")
    ax.set_ylabel(obj)
    ax.set_title(f"{obj} against model size ({_counts_note(df, len(done))})")
    ax.grid(alpha=0.3, which="both")
    if legend:
        _budget_legend(ax, legend)
    else:
        ax.legend(fontsize="small", loc="best")
    return fig


# --------------------------------------------------------------------------- hyperparameter effects


def hyperparameter_effects(
    df: pd.DataFrame,
    objective: str | None = None,
    mode: str | None = None,
    params: Sequence[str] | None = None,
    ncols: int = 4,
    panel_size: tuple[float, float] = (3.0, 2.5),
) -> Figure:
    """One small panel per hyperparameter: the objective against its values.

    Categorical hyperparameters (strings, booleans, integers with at most
    :data:`MAX_INT_CATEGORIES` values) get a box per value with the trials as
    jittered dots; numeric ones a scatter (log x when the values span more
    than a factor of 20). A panel shows only the trials whose architecture
    used the hyperparameter; its title says how many did.

    Parameters
    ----------
    df
        The results table.
    objective, mode
        As in :func:`best_so_far`.
    params
        Hyperparameter names (with or without ``param_``); default every ``param_`` column.
    ncols
        Panels per row.
    panel_size
        Width and height of one panel, in inches.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        When no trial finished, or the table has no ``param_`` columns.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"status": ["finished"] * 4, "val_accuracy": [0.7, 0.9, 0.8, 0.85],
    ...                    "param_optimizer": ["adam", "sgd", "adam", "sgd"],
    ...                    "param_learning_rate": [1e-4, 1e-3, 1e-2, 3e-2]})
    >>> fig = hyperparameter_effects(df)
    >>> [ax.get_xlabel() for ax in fig.axes]
    ['optimizer', 'learning_rate (log)']
    """
    fn = "hyperparameter_effects"
    obj, direction = _objective(df, objective, mode, fn)
    cols = _param_columns(df, params, fn)
    done = _finished(df, obj, fn)
    if not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive integer; got {ncols!r}.")
    ncols = min(ncols, len(cols))
    nrows = math.ceil(len(cols) / ncols)
    fig = _figure(panel_size[0] * ncols, panel_size[1] * nrows + 0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    colors, legend = _budget_colors(done)
    values = done[obj].to_numpy(dtype=float)
    rng = np.random.default_rng(0)
    for ax, col in zip(axes.flat, cols):
        active = _active(done[col])
        n_active = int(active.sum())
        ax.set_ylabel(obj)
        ax.grid(alpha=0.3)
        if not n_active:
            ax.set_xlabel(_label(col))
            ax.set_title(f"{_label(col)}\n(used by none of {len(done)})", fontsize="small")
            ax.text(
                0.5, 0.5, "not used by any\nfinished trial", ha="center", va="center", transform=ax.transAxes
            )
            continue
        y = values[active]
        c = colors[active] if colors is not None else "tab:blue"
        if _is_categorical(done[col]):
            cats = _categories(done[col])
            codes = np.array([cats.index(v) for v in done[col][active].tolist()])
            groups = [y[codes == k] for k in range(len(cats))]
            ax.boxplot(
                groups,
                positions=range(len(cats)),
                widths=0.55,
                showfliers=False,
                medianprops={"color": "black"},
                boxprops={"color": "0.4"},
                whiskerprops={"color": "0.4"},
                capprops={"color": "0.4"},
            )
            ax.scatter(codes + rng.uniform(-0.18, 0.18, len(codes)), y, s=12, alpha=0.7, c=c, zorder=3)
            ax.set_xticks(range(len(cats)), [str(v) for v in cats], rotation=30 if len(cats) > 4 else 0)
            ax.set_xlabel(_label(col))
        else:
            xv = _numeric(done[col])[active]
            ax.scatter(xv, y, s=12, alpha=0.7, c=c, zorder=3)
            log = _log_scale(xv)
            if log:
                _log_axis(ax, xv)
            ax.set_xlabel(_label(col) + (" (log)" if log else ""))
        note = "" if n_active == len(done) else f"\n(used by {n_active} of {len(done)})"
        ax.set_title(_label(col) + note, fontsize="small")
    for ax in list(axes.flat)[len(cols) :]:
        ax.remove()
    fig.suptitle(f"Hyperparameter effects on {obj} ({direction}; {_counts_note(df, len(done))})")
    if legend:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], ls="", marker="o", color=c, label=label) for label, c in legend.items()]
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize="small")
    return fig


# --------------------------------------------------------------------------- learning curves


def learning_curves(
    ds: xr.Dataset,
    metric: str = "val_accuracy",
    rungs: bool = True,
    budgets: Sequence[float] | None = None,
    max_legend: int = 10,
    ax: Axes | None = None,
) -> Figure:
    """Per-epoch curves of every trial (xarray plotting), with multi-fidelity rung budgets marked.

    Parameters
    ----------
    ds
        The learning curves (``exp.curves()``): dims ``(trial, epoch)``.
    metric
        The variable to plot, e.g. ``"val_accuracy"``, ``"val_loss"``, ``"accuracy"``.
    rungs
        Mark each rung's budget (in epochs) with a dashed vertical line. The
        budgets come from ``budgets`` or, by default, from the ``budget``
        coordinate of a multi-fidelity search; nothing is marked without either.
    budgets
        The scheduler's ladder, e.g. ``exp.scheduler.budgets()``.
    max_legend
        Show a legend of trial ids only up to this many trials.
    ax
        Draw into this Axes instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        For a dataset with no trials, or without ``metric``.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"val_accuracy": (("trial", "epoch"), [[0.5, 0.7, np.nan], [0.4, 0.6, 0.8]])},
    ...                 coords={"trial": [0, 1], "epoch": [1, 2, 3], "budget": ("trial", [2.0, 3.0])})
    >>> fig = learning_curves(ds)
    >>> fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()
    ('epoch', 'val_accuracy')
    """
    import xarray as xr

    fn = "learning_curves"
    if not isinstance(ds, xr.Dataset):
        raise TypeError(
            f"{fn} takes the learning curves (an xarray Dataset, exp.curves()); got {type(ds).__name__}."
        )
    if metric not in ds.data_vars:
        raise ValueError(
            f"{fn}: no metric {metric!r} in the curves; they have {sorted(ds.data_vars)}. "
            f"For example {fn}(ds, metric={next(iter(sorted(ds.data_vars)), 'val_loss')!r})."
        )
    da = ds[metric]
    if da.sizes.get("trial", 0) == 0 or da.sizes.get("epoch", 0) == 0 or not np.isfinite(da.values).any():
        raise ValueError(
            f"{fn}: the curves hold no {metric!r} values ({dict(da.sizes)}); no trial has reported a "
            "per-epoch history yet. Run the search first, with an evaluator that returns result['history']."
        )
    fig, ax = _axes(ax, 7.0, 4.4)
    n = da.sizes["trial"]
    # Drop the non-index coordinates: xarray would try to put them in the legend/labels.
    plain = da.reset_coords(drop=True)
    plain.plot.line(
        x="epoch",
        hue="trial",
        ax=ax,
        add_legend=n <= max_legend,
        marker="." if da.sizes["epoch"] <= 30 else None,
        alpha=0.8,
        lw=1.2,
    )
    marks: list[float] = []
    if rungs:
        if budgets is not None:
            marks = sorted({float(b) for b in budgets})
        elif "budget" in ds.coords:
            vals = np.asarray(ds.coords["budget"].values, dtype=float)
            marks = sorted({float(b) for b in vals[np.isfinite(vals)]})
    for b in marks:
        ax.axvline(b, color="0.35", ls="--", lw=1, zorder=0)
        ax.annotate(
            f"budget {b:g}",
            (b, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -2),
            textcoords="offset points",
            ha="left",
            va="top",
            fontsize="x-small",
            color="0.3",
            rotation=90,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    title = f"Learning curves: {metric} of {n} trial{'s' if n != 1 else ''}"
    if marks:
        title += " (dashed: rung budgets)"
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig


# --------------------------------------------------------------------------- parallel coordinates


def parallel_coordinates(
    df: pd.DataFrame,
    objective: str | None = None,
    mode: str | None = None,
    params: Sequence[str] | None = None,
    top: int | None = None,
    cmap: str = "viridis",
) -> Figure:
    """One vertical axis per hyperparameter plus the objective; one line per finished trial.

    Each axis is scaled to its own range (numeric: min to max, log when the
    values span more than a factor of 20; categorical: evenly spaced values).
    A hyperparameter a trial did not use sits on the ``n/a`` mark below its
    axis. Lines are coloured by the objective, best on top.

    Parameters
    ----------
    df
        The results table.
    objective, mode
        As in :func:`best_so_far`.
    params
        Hyperparameter names (with or without ``param_``); default every one that varies.
    top
        Draw only the ``top`` best trials (all are used for the axis ranges).
    cmap
        A matplotlib colormap name.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        When no trial finished, or the table has no ``param_`` columns.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"status": ["finished"] * 3, "val_accuracy": [0.7, 0.9, 0.8],
    ...                    "param_optimizer": ["adam", "sgd", "adam"], "param_units": [16, 256, None]})
    >>> fig = parallel_coordinates(df)
    >>> fig.axes[0].get_ylabel()
    'position on each axis (scaled)'
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fn = "parallel_coordinates"
    obj, direction = _objective(df, objective, mode, fn)
    cols = _param_columns(df, params, fn)
    done = _finished(df, obj, fn)
    if params is None:
        varying = [c for c in cols if done[c].dropna().astype("str").nunique() > 1]
        cols = varying or cols
    na_pos = -0.12
    scaled: list[np.ndarray] = []
    ticks: list[tuple[list[float], list[str]]] = []
    for col in cols:
        s = done[col]
        active = _active(s)
        pos = np.full(len(s), na_pos)
        if _is_categorical(s):
            cats = _categories(s)
            k = max(len(cats) - 1, 1)
            codes = {v: i / k if len(cats) > 1 else 0.5 for i, v in enumerate(cats)}
            pos[active] = [codes[v] for v in s[active].tolist()]
            ticks.append(([codes[v] for v in cats], [str(v) for v in cats]))
        else:
            v = _numeric(s)
            log = _log_scale(v)
            w = np.log10(v) if log else v
            lo, hi = np.nanmin(w[active]), np.nanmax(w[active])
            span = hi - lo if hi > lo else 1.0
            pos[active] = (w[active] - lo) / span if hi > lo else 0.5
            fmt = (lambda z: f"{10**z:.3g}") if log else (lambda z: f"{z:.3g}")
            ticks.append(([0.0, 1.0] if hi > lo else [0.5], [fmt(lo), fmt(hi)] if hi > lo else [fmt(lo)]))
        if not active.all():
            ticks[-1][0].append(na_pos)
            ticks[-1][1].append("n/a")
        scaled.append(pos)
    y = done[obj].to_numpy(dtype=float)
    lo, hi = float(np.min(y)), float(np.max(y))
    scaled.append((y - lo) / (hi - lo) if hi > lo else np.full(len(y), 0.5))
    ticks.append(([0.0, 1.0] if hi > lo else [0.5], [f"{lo:.4g}", f"{hi:.4g}"] if hi > lo else [f"{lo:.4g}"]))
    names = [_label(c) for c in cols] + [obj]
    data = np.vstack(scaled).T  # (trials, axes)

    order = np.argsort(y if direction == "max" else -y)  # worst first, so the best is drawn on top
    if top is not None:
        order = order[-int(top) :]
    norm = Normalize(lo, hi)
    colormap = colormaps[cmap] if direction == "max" else colormaps[cmap].reversed()
    fig = _figure(max(6.0, 1.25 * len(names) + 1.5), 4.8)
    ax = fig.add_subplot()
    xs = np.arange(len(names))
    for i in order:
        ax.plot(xs, data[i], color=colormap(norm(y[i])), alpha=0.75, lw=1.3)
    for x, (tpos, tlab) in zip(xs, ticks):
        ax.axvline(x, color="0.2", lw=0.8)
        for p, lab in zip(tpos, tlab):
            ax.text(
                x + 0.04,
                p,
                lab,
                fontsize="x-small",
                va="center",
                ha="left",
                color="0.15",
                bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7},
            )
    ax.set_xticks(xs, names, rotation=30, ha="right")
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(names) - 0.5)
    ax.set_ylim(na_pos - 0.08, 1.08)
    ax.set_xlabel("hyperparameter (and the objective, right)")
    ax.set_ylabel("position on each axis (scaled)")
    shown = len(order)
    ax.set_title(
        f"Parallel coordinates of {shown} finished trial{'s' if shown != 1 else ''}, coloured by {obj}"
    )
    fig.colorbar(ScalarMappable(norm=norm, cmap=colormap), ax=ax, label=obj, pad=0.01)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    return fig
