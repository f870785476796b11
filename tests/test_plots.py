"""Figures from real searches (SyntheticEvaluator on the shared LocalCluster), and architecture drawings.

Every figure is rendered to PNG with Agg and checked for content (file size, non-white pixels) and for
labelled axes; what a figure must show (monotone best-so-far, one line per trial, rung budgets) is checked
on the artists themselves.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from toolkit import Experiment, SearchSpace, plots
from toolkit.draw import ArchitectureDrawing, architecture_layers, draw_architecture
from toolkit.evaluators import SyntheticEvaluator
from toolkit.schedulers import get_scheduler
from toolkit.spaces import conv_net, mlp

ASHA_BUDGETS = [1.0, 3.0, 9.0]


@pytest.fixture(scope="module")
def searches(cluster, tmp_path_factory):
    """Two real searches: random conv nets (sgd configs fail on purpose) and ASHA over MLPs."""
    from distributed import Client

    log_dir = tmp_path_factory.mktemp("plots")
    with Client(cluster) as client:
        plain = Experiment(
            "plain",
            SearchSpace(conv_net),
            SyntheticEvaluator(epochs=4, noise=0.01, fail_on={"optimizer": "sgd"}),
            log_dir=log_dir,
            seed=3,
        )
        plain.run(client, n_trials=16, progress=False)
        asha = Experiment(
            "asha",
            SearchSpace(mlp),
            SyntheticEvaluator(),
            scheduler=get_scheduler("asha", max_budget=9, eta=3),
            log_dir=log_dir,
            seed=1,
        )
        asha.run(client, n_trials=18, progress=False)
    return {"plain": plain, "asha": asha}


@pytest.fixture(scope="module")
def plain_df(searches):
    df = searches["plain"].results()
    assert (df["status"] == "finished").any() and (df["status"] == "failed").any(), df["status"]
    return df


@pytest.fixture(scope="module")
def asha_df(searches):
    return searches["asha"].results()


def _render(fig, path) -> np.ndarray:
    """Save with Agg; check the file is a real picture; return its pixels."""
    fig.savefig(path, dpi=60)
    assert path.stat().st_size > 5_000, f"{path} is only {path.stat().st_size} bytes"
    pixels = imread(path)[..., :3]
    drawn = (pixels < 0.95).any(axis=-1).mean()
    assert drawn > 0.02, f"{path} is almost blank ({drawn:.1%} of pixels drawn)"
    return pixels


def _plot_axes(fig):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def _assert_labelled(fig) -> None:
    axes = _plot_axes(fig)
    assert axes
    for ax in axes:
        assert ax.get_xlabel().strip(), f"an axes has no x label: {ax}"
        assert ax.get_ylabel().strip(), f"an axes has no y label: {ax}"
    title = fig.get_suptitle() or axes[0].get_title()
    assert title.strip()


# --------------------------------------------------------------------------- figures of the table


def test_best_so_far_renders_a_labelled_figure(plain_df, tmp_path):
    fig = plots.best_so_far(plain_df)
    _render(fig, tmp_path / "best.png")
    _assert_labelled(fig)


def test_best_so_far_line_is_monotone_and_ends_at_the_best_trial(plain_df):
    ax = plots.best_so_far(plain_df).axes[0]
    (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("best so far")]
    y = np.asarray(line.get_ydata(), dtype=float)
    y = y[np.isfinite(y)]
    assert np.all(np.diff(y) >= 0)
    finished = plain_df[plain_df["status"] == "finished"]
    assert y[-1] == pytest.approx(finished["val_accuracy"].max())


def test_best_so_far_marks_failed_trials_and_counts_them_in_the_title(plain_df):
    ax = plots.best_so_far(plain_df).axes[0]
    n_failed = int((plain_df["status"] == "failed").sum())
    assert f"{n_failed} failed" in ax.get_title()
    assert "failed trial" in ax.get_legend_handles_labels()[1]


def test_best_so_far_for_a_minimised_objective_goes_down(plain_df):
    ax = plots.best_so_far(plain_df, objective="val_loss", mode="min").axes[0]
    (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("best so far")]
    y = np.asarray(line.get_ydata(), dtype=float)
    assert np.all(np.diff(y[np.isfinite(y)]) <= 0)


def test_best_so_far_against_trial_count(plain_df):
    ax = plots.best_so_far(plain_df, x="trial").axes[0]
    assert ax.get_xlabel() == "trials run (in order)"


def test_accuracy_vs_params_uses_a_log_x_axis_and_circles_the_best(plain_df, tmp_path):
    fig = plots.accuracy_vs_params(plain_df)
    _render(fig, tmp_path / "size.png")
    _assert_labelled(fig)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    best = plain_df.loc[plain_df["val_accuracy"].idxmax(), "trial_id"]
    assert f"best: trial {best}" in ax.get_legend_handles_labels()[1]


def test_hyperparameter_effects_has_one_labelled_panel_per_hyperparameter(plain_df, tmp_path):
    fig = plots.hyperparameter_effects(plain_df)
    _render(fig, tmp_path / "effects.png")
    _assert_labelled(fig)
    params = [c for c in plain_df.columns if c.startswith("param_")]
    assert len(fig.axes) == len(params)
    assert {ax.get_xlabel().removesuffix(" (log)") for ax in fig.axes} == {
        p.removeprefix("param_") for p in params
    }


def test_hyperparameter_effects_says_how_many_trials_used_a_conditional_one(plain_df):
    finished = plain_df[plain_df["status"] == "finished"]
    used = int(finished["param_conv1/filters"].notna().sum())
    assert 0 < used < len(finished), "the search should mix 1- and 2+-block architectures"
    fig = plots.hyperparameter_effects(plain_df, params=["conv1/filters"])
    assert f"used by {used} of {len(finished)}" in fig.axes[0].get_title()


def test_hyperparameter_effects_draws_categories_as_boxes_and_numbers_as_scatter(plain_df):
    fig = plots.hyperparameter_effects(plain_df, params=["optimizer", "learning_rate"])
    categorical, numeric = fig.axes
    assert [t.get_text() for t in categorical.get_xticklabels()] == sorted(
        plain_df.loc[plain_df["status"] == "finished", "param_optimizer"].unique()
    )
    assert numeric.get_xscale() == "log"  # learning_rate is drawn log-uniformly


def test_parallel_coordinates_draws_one_line_per_finished_trial(plain_df, tmp_path):
    fig = plots.parallel_coordinates(plain_df)
    _render(fig, tmp_path / "parallel.png")
    _assert_labelled(fig)
    ax = _plot_axes(fig)[0]
    n_finished = int((plain_df["status"] == "finished").sum())
    trial_lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 2]
    assert len(trial_lines) == n_finished
    assert any(t.get_text() == "n/a" for t in ax.texts), "conditional hyperparameters need an n/a mark"


def test_parallel_coordinates_top_keeps_only_the_best(plain_df):
    ax = _plot_axes(plots.parallel_coordinates(plain_df, top=3))[0]
    assert len([ln for ln in ax.get_lines() if len(ln.get_xdata()) > 2]) == 3


def test_multi_fidelity_points_are_coloured_by_budget(asha_df, tmp_path):
    fig = plots.accuracy_vs_params(asha_df)
    _render(fig, tmp_path / "asha_size.png")
    labels = {t.get_text() for t in fig.axes[0].get_legend().get_texts()}
    assert {f"ended at budget {b:g}" for b in ASHA_BUDGETS} | {"Pareto front"} <= labels


# --------------------------------------------------------------------------- learning curves


def test_learning_curves_draw_one_line_per_trial_and_mark_rung_budgets(searches, tmp_path):
    ds = searches["asha"].curves()
    fig = plots.learning_curves(ds, metric="val_accuracy")
    _render(fig, tmp_path / "curves.png")
    _assert_labelled(fig)
    ax = fig.axes[0]
    vertical = [ln for ln in ax.get_lines() if len(set(ln.get_xdata())) == 1 and ln.get_linestyle() == "--"]
    assert sorted(float(ln.get_xdata()[0]) for ln in vertical) == ASHA_BUDGETS
    curves = [ln for ln in ax.get_lines() if ln not in vertical]
    assert len(curves) == ds.sizes["trial"]


def test_learning_curves_take_the_budgets_from_the_caller(searches):
    ds = searches["plain"].curves()
    ax = plots.learning_curves(ds, metric="val_loss", budgets=[2]).axes[0]
    assert ax.get_ylabel() == "val_loss"
    assert [ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_linestyle() == "--"] == [2]


def test_learning_curves_of_a_single_fidelity_search_mark_no_rungs(searches):
    ax = plots.learning_curves(searches["plain"].curves()).axes[0]
    assert not [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]


# --------------------------------------------------------------------------- clear errors


@pytest.mark.parametrize(
    "plot",
    [plots.best_so_far, plots.accuracy_vs_params, plots.hyperparameter_effects, plots.parallel_coordinates],
)
def test_an_empty_table_is_refused_with_a_clear_error(plain_df, plot):
    with pytest.raises(ValueError, match="at least one finished trial"):
        plot(plain_df.iloc[0:0])


def test_a_table_with_only_failed_trials_is_refused(plain_df):
    with pytest.raises(ValueError, match="statuses"):
        plots.best_so_far(plain_df[plain_df["status"] == "failed"])


def test_an_unknown_objective_is_refused_with_the_columns_to_choose_from(plain_df):
    with pytest.raises(ValueError, match="no objective column 'accuracy'.*val_accuracy"):
        plots.accuracy_vs_params(plain_df, objective="accuracy")


def test_hyperparameter_effects_needs_param_columns(plain_df):
    with pytest.raises(ValueError, match="param_<name>"):
        plots.hyperparameter_effects(plain_df[["trial_id", "status", "val_accuracy"]])


def test_an_unknown_hyperparameter_is_refused(plain_df):
    with pytest.raises(ValueError, match="no hyperparameter"):
        plots.parallel_coordinates(plain_df, params=["width"])


def test_learning_curves_refuse_an_unknown_metric_and_an_empty_dataset(searches):
    ds = searches["plain"].curves()
    with pytest.raises(ValueError, match="no metric 'accuracy'.*val_accuracy"):
        plots.learning_curves(ds, metric="accuracy")
    with pytest.raises(ValueError, match="no trial has reported"):
        plots.learning_curves(ds.isel(trial=[]))


def test_the_table_plots_refuse_a_dataset(searches):
    with pytest.raises(TypeError, match="DataFrame"):
        plots.best_so_far(searches["plain"].curves())


def test_nan_objective_rows_are_left_out(plain_df):
    df = plain_df.copy()
    first = df.index[df["status"] == "finished"][0]
    df.loc[first, "val_accuracy"] = np.nan
    ax = plots.accuracy_vs_params(df).axes[0]
    n_points = len(ax.collections[0].get_offsets())
    assert n_points == int(((df["status"] == "finished") & df["val_accuracy"].notna()).sum())


def test_frames_without_status_or_trial_id_still_plot():
    df = pd.DataFrame(
        {"val_accuracy": [0.5, 0.7, 0.6], "num_params": [10, 1000, 100], "param_x": [1.0, 2.0, 3.0]}
    )
    for plot in (
        plots.best_so_far,
        plots.accuracy_vs_params,
        plots.hyperparameter_effects,
        plots.parallel_coordinates,
    ):
        _assert_labelled(plot(df))


# --------------------------------------------------------------------------- architecture drawings


def _archs():
    out = {}
    for fn in (conv_net, mlp):
        space = SearchSpace(fn)
        # A sample with the deepest architecture, so every kind of block is drawn.
        configs = [space.sample(s) for s in range(40)]
        out[fn.__name__] = space.replay(
            max(
                configs,
                key=lambda c: c.get("conv_blocks", 0) + c.get("dense_layers", 0) + c.get("hidden_layers", 0),
            )
        )
    return out


@pytest.mark.parametrize("kind", ["conv_net", "mlp"])
def test_draw_architecture_is_svg_with_dot_and_text_without(kind):
    arch = _archs()[kind]
    drawing = draw_architecture(arch)
    assert isinstance(drawing, (str, ArchitectureDrawing))
    _, blocks = architecture_layers(arch)
    if shutil.which("dot"):
        assert drawing.format == "svg" and drawing.lstrip().startswith(("<?xml", "<svg"))
        assert "</svg>" in drawing and drawing._repr_svg_() == str(drawing)
        for block in blocks:  # every block's name is in the picture (XML-escaped)
            assert block.name.split(":")[0] in drawing
    else:
        assert drawing.format == "text" and "dot" in drawing.reason


@pytest.mark.parametrize("kind", ["conv_net", "mlp"])
def test_draw_architecture_text_fallback_lists_every_layer(kind):
    arch = _archs()[kind]
    drawing = draw_architecture(arch, renderer="text")
    assert drawing.format == "text" and drawing._repr_svg_() is None
    assert drawing._repr_html_().startswith("<pre")
    text = str(drawing)
    n_hidden = len(arch.get("conv", [])) + len(arch.get("dense", [])) + len(arch.get("hidden", []))
    assert text.count("Dense") + text.count("Conv2D") == n_hidden + 1  # + the output layer
    for i, conv in enumerate(arch.get("conv", [])):
        assert f"conv{i}: Conv2D {conv['filters']}, {conv['kernel_size']}×{conv['kernel_size']}" in text
    assert f"output: Dense {arch['num_classes']}" in text
    assert text.splitlines()[0].startswith(kind)


def test_draw_architecture_reads_any_description_with_layers():
    arch = {"type": "mine", "layers": [{"type": "Dense", "units": 8, "activation": "relu"}, "softmax"]}
    text = str(draw_architecture(arch, renderer="text"))
    assert "Dense" in text and "units=8" in text and "softmax" in text


def test_draw_architecture_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="cannot draw architecture type 'transformer'"):
        draw_architecture({"type": "transformer", "heads": 8})
    with pytest.raises(ValueError, match="renderer must be one of"):
        draw_architecture(_archs()["mlp"], renderer="png")


@pytest.mark.skipif(shutil.which("dot") is not None, reason="graphviz's dot is installed here")
def test_draw_architecture_svg_without_dot_says_what_to_install():
    with pytest.raises(RuntimeError, match="install"):
        draw_architecture(_archs()["mlp"], renderer="svg")
