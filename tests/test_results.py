"""The results tables: the exact schema of results() and curves(), and the Parquet / NetCDF exports.

Like dask-ml's ``test_history``, the column names and dtypes are pinned: a change to them is a change
to what users' notebooks read, and must be made on purpose.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from distributed import Client, LocalCluster

from toolkit.evaluators.synthetic import SyntheticEvaluator
from toolkit.experiment import Experiment
from toolkit.journal import Journal
from toolkit.results import STATUSES, load_results
from toolkit.schedulers import ASHA
from toolkit.space import HP

N = 10
EPOCHS = 3


def tiny(hp: HP) -> dict[str, Any]:
    """A small fixed space with one hyperparameter of each kind."""
    return {
        "layers": hp.int("layers", 1, 3),
        "units": hp.choice("units", [16, 32, 64]),
        "activation": hp.choice("activation", ["relu", "tanh"]),
        "dropout": hp.float("dropout", 0.0, 0.5),
        "lr": hp.float("lr", 1e-4, 1e-1, log=True),
        "batch_norm": hp.bool("batch_norm"),
    }


PARAMS = [
    ("param_layers", "Int64"),
    ("param_units", "Int64"),
    ("param_activation", "str"),
    ("param_dropout", "float64"),
    ("param_lr", "float64"),
    ("param_batch_norm", "boolean"),
]
CORE = [
    ("trial_id", "int64"),
    ("status", "category"),
    ("val_accuracy", "float64"),
    ("best_epoch", "Int64"),
    ("epochs", "Int64"),
    ("num_params", "Int64"),
    ("duration_s", "float64"),
    ("worker", "str"),
    ("host", "str"),
    ("slurm_job_id", "str"),
    ("gpu", "str"),
    ("attempts", "int64"),
    ("error", "str"),
]
EXTRA = [("val_loss", "float64"), ("train_time_s", "float64"), ("process_trials", "float64")]


def _schema(df: pd.DataFrame) -> list[tuple[str, str]]:
    return [(name, str(dtype)) for name, dtype in df.dtypes.items()]


@pytest.fixture(scope="module")
def journal(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished search over ``tiny``, some of whose trials failed (units=64)."""
    log_dir = tmp_path_factory.mktemp("results")
    exp = Experiment("tiny", tiny, SyntheticEvaluator(epochs=EPOCHS, fail_on={"units": 64}), log_dir=log_dir)
    with Client(cluster) as client:
        exp.run(client, n_trials=N, progress=False)
    return exp.path


# -- results() ------------------------------------------------------------------------------------
def test_results_schema_is_pinned(journal: Path) -> None:
    df = load_results(journal).frame()
    assert _schema(df) == CORE + PARAMS + EXTRA
    assert (
        list(df["status"].cat.categories)
        == STATUSES
        == ["pending", "running", "finished", "failed", "stopped"]
    )
    assert isinstance(df.index, pd.RangeIndex) and len(df) == N


def test_results_rows_hold_the_values_of_finished_and_failed_trials(journal: Path) -> None:
    df = load_results(journal).frame()
    failed = df["status"] == "failed"
    assert failed.any() and (~failed).any()
    assert (df.loc[failed, "param_units"] == 64).all()
    assert df.loc[failed, "error"].str.startswith("ValueError: synthetic failure: units=64").all()
    assert df.loc[failed, ["val_accuracy", "best_epoch", "epochs"]].isna().all().all()
    done = df[~failed]
    assert done["error"].isna().all()
    assert (done["epochs"] == EPOCHS).all() and (done["best_epoch"] == EPOCHS).all()
    assert done["val_accuracy"].between(0, 1).all()
    assert done["num_params"].gt(0).all()
    assert (df["attempts"] == 1).all()
    assert df["worker"].str.startswith("tcp://").all()
    assert df["host"].notna().all() and df["slurm_job_id"].isna().all()
    assert df["param_activation"].isin(["relu", "tanh"]).all()
    assert df["param_batch_norm"].isin([True, False]).all()


def test_best_is_the_finished_row_with_the_highest_objective(journal: Path) -> None:
    r = load_results(journal)
    df = r.frame()
    best = r.best()
    assert best["status"] == "finished"
    assert best["val_accuracy"] == df.loc[df["status"] == "finished", "val_accuracy"].max()


def test_multi_fidelity_results_add_budget_rung_and_per_rung_objective_columns(
    client: Client, tmp_path: Path
) -> None:
    exp = Experiment(
        "asha", tiny, SyntheticEvaluator(epochs=EPOCHS), scheduler=ASHA(max_budget=3, eta=3), log_dir=tmp_path
    )
    df = exp.run(client, n_trials=6, progress=False)
    rungs = [
        ("budget", "float64"),
        ("rung", "Int64"),
        ("val_accuracy_rung0", "float64"),
        ("val_accuracy_rung1", "float64"),
    ]
    assert _schema(df) == CORE + PARAMS + rungs + EXTRA
    promoted = df[df["rung"] == 1]
    assert len(promoted) >= 1
    assert (promoted["val_accuracy"] == promoted["val_accuracy_rung1"]).all()
    assert df.loc[df["rung"] == 0, "val_accuracy_rung1"].isna().all()
    curves = exp.curves()
    assert curves["budget"].dims == ("trial",) and curves["rung"].dims == ("trial",)


def test_corrupt_middle_journal_line_is_skipped_by_results_with_a_warning(
    journal: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy = tmp_path / "tiny"
    copy.mkdir()
    (copy / "experiment.json").write_bytes((journal / "experiment.json").read_bytes())
    lines = (journal / "journal.jsonl").read_bytes().split(b"\n")
    finished = [i for i, line in enumerate(lines) if line.startswith(b'{"event":"finished"')]
    victim = finished[0]
    lines[victim] = lines[victim][:30] + b"\x00garbage"
    (copy / "journal.jsonl").write_bytes(b"\n".join(lines))
    with caplog.at_level(logging.WARNING, logger="toolkit.journal"):
        df = load_results(copy).frame()
    assert len(df) == N
    assert [r for r in caplog.records if "corrupt line" in r.getMessage()]
    assert (df["status"] != "finished").sum() == (
        load_results(journal).frame()["status"] != "finished"
    ).sum() + 1


def test_results_make_odd_and_missing_metric_values_missing_not_errors(tmp_path: Path) -> None:
    """Metrics a trial did not report, or reported as bools or text, become NA/NaN in numeric columns."""
    exp = Experiment("odd", tiny, SyntheticEvaluator(), log_dir=tmp_path)
    exp._n_trials = 4
    journal = Journal.create(exp.path, exp.spec())
    base = {"layers": 1, "units": 16, "activation": "relu", "dropout": 0.1, "lr": 0.01, "batch_norm": False}
    results = [
        {"val_accuracy": 0.9, "epochs": 2, "num_params": 10, "lr_final": 0.01},
        {"val_accuracy": 0.8, "epochs": True, "num_params": "many", "lr_final": "n/a", "note": "text"},
        {"val_accuracy": 0.7, "other": 3},
    ]
    events: list[dict[str, Any]] = []
    for tid in range(4):
        config = {**base, "custom": "x"} if tid == 2 else base
        events.append({"event": "sampled", "t": 1.0, "trial": tid, "config": config, "seed": tid})
    for tid, res in enumerate(results):
        events.append(
            {
                "event": "finished",
                "t": 2.0,
                "trial": tid,
                "attempts": 1,
                "value": res["val_accuracy"],
                "result": res,
            }
        )
    events.append({"event": "failed", "t": 2.0, "trial": 3, "attempts": 1, "error": "ValueError: x"})
    journal.append(events)
    journal.close()

    df = load_results(exp.path).frame()
    assert df["status"].tolist() == ["finished", "finished", "finished", "failed"]
    assert df["epochs"].tolist()[0] == 2 and df["epochs"].isna().tolist() == [False, True, True, True]
    assert df["num_params"].isna().tolist() == [False, True, True, True]
    assert str(df["epochs"].dtype) == "Int64" and str(df["num_params"].dtype) == "Int64"
    np.testing.assert_array_equal(df["lr_final"].to_numpy(), [0.01, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(df["other"].to_numpy(), [np.nan, np.nan, 3.0, np.nan])
    assert "note" not in df.columns  # text is not a metric column
    assert df.columns.get_loc("param_custom") == df.columns.get_loc("param_batch_norm") + 1
    assert df["param_custom"].isna().tolist() == [True, True, False, True]


# -- curves() -------------------------------------------------------------------------------------
def test_curves_dims_coords_and_variables_are_pinned(journal: Path) -> None:
    ds = load_results(journal).curves()
    df = load_results(journal).frame()
    trained = df.loc[df["status"] == "finished", "trial_id"].tolist()
    assert ds["val_accuracy"].dims == ("trial", "epoch")
    assert dict(ds.sizes) == {"trial": len(trained), "epoch": EPOCHS}
    assert sorted(ds.data_vars) == ["val_accuracy", "val_loss"]
    coords = {name: (c.dims, str(c.dtype)) for name, c in ds.coords.items()}
    assert coords == {
        "trial": (("trial",), "int64"),
        "epoch": (("epoch",), "int64"),
        "status": (("trial",), "object"),
        "param_layers": (("trial",), "int64"),
        "param_units": (("trial",), "int64"),
        "param_activation": (("trial",), "object"),
        "param_dropout": (("trial",), "float64"),
        "param_lr": (("trial",), "float64"),
        "param_batch_norm": (("trial",), "bool"),
    }
    assert ds["trial"].values.tolist() == trained
    assert ds["epoch"].values.tolist() == list(range(1, EPOCHS + 1))
    assert set(ds["status"].values) == {"finished"}
    assert ds.attrs == {"experiment": "tiny", "objective": "val_accuracy", "mode": "max"}


def test_curves_last_epoch_matches_the_results_objective(journal: Path) -> None:
    r = load_results(journal)
    ds, df = r.curves(), r.frame().set_index("trial_id")
    last = ds["val_accuracy"].sel(epoch=EPOCHS).to_series()
    np.testing.assert_allclose(last.to_numpy(), df.loc[last.index, "val_accuracy"].to_numpy())
    np.testing.assert_array_equal(ds["param_units"].values, df.loc[last.index, "param_units"].to_numpy())


# -- exports --------------------------------------------------------------------------------------
def test_parquet_export_round_trips_through_pandas(journal: Path, tmp_path: Path) -> None:
    r = load_results(journal)
    df = r.frame()
    path = r.to_parquet(tmp_path / "results.parquet")
    back = pd.read_parquet(path)
    assert list(back.columns) == list(df.columns)
    assert back["trial_id"].tolist() == df["trial_id"].tolist()
    assert back["status"].astype(str).tolist() == df["status"].astype(str).tolist()
    np.testing.assert_array_equal(back["val_accuracy"].to_numpy(), df["val_accuracy"].to_numpy())
    for col in ("param_units", "param_batch_norm", "param_activation", "error", "best_epoch"):
        pd.testing.assert_series_equal(back[col], df[col], check_dtype=False, check_categorical=False)


def test_netcdf_export_round_trips_through_xarray(journal: Path, tmp_path: Path) -> None:
    r = load_results(journal)
    ds = r.curves()
    path = r.to_netcdf(tmp_path / "curves.nc")
    with xr.open_dataset(path) as back:
        assert back["val_accuracy"].dims == ("trial", "epoch")
        assert set(back.coords) == set(ds.coords)
        assert back["trial"].values.tolist() == ds["trial"].values.tolist()
        np.testing.assert_array_equal(back["val_accuracy"].values, ds["val_accuracy"].values)
        assert back["param_activation"].values.astype(str).tolist() == ds["param_activation"].values.tolist()
        assert back["status"].values.astype(str).tolist() == ds["status"].values.tolist()
        assert back.attrs["objective"] == "val_accuracy"
