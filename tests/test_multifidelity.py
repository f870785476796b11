"""Multi-fidelity search end to end on a real LocalCluster: rungs in the journal, continued curves."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit import Experiment, SearchSpace
from toolkit.evaluators import SyntheticEvaluator
from toolkit.journal import read_events
from toolkit.schedulers import ASHA, Hyperband
from toolkit.spaces import conv_net


def _promoted(path):
    return {e["trial"]: e for e in read_events(path, ["promoted"])}


def test_asha_records_rungs_and_promotions_in_the_journal(client, tmp_path):
    exp = Experiment(
        "asha", SearchSpace(conv_net), SyntheticEvaluator(), scheduler=ASHA(max_budget=9), log_dir=tmp_path
    )
    df = exp.run(client, n_trials=18, progress=False)
    assert len(df) == 18 and df["trial_id"].is_unique
    promoted = _promoted(exp.path)
    assert promoted, "ASHA promoted nothing"
    top = df[df["rung"] == df["rung"].max()]
    assert (top["budget"] == 9.0).all()
    assert {"val_accuracy_rung0", "val_accuracy_rung1", "val_accuracy_rung2"} <= set(df.columns)
    # A trial's score at a higher rung exists only if it was promoted there.
    for tid in df.loc[df["val_accuracy_rung1"].notna(), "trial_id"]:
        assert tid in promoted


def test_promoted_synthetic_trial_trains_only_missing_epochs(client, tmp_path):
    exp = Experiment(
        "cont", SearchSpace(conv_net), SyntheticEvaluator(), scheduler=ASHA(max_budget=9), log_dir=tmp_path
    )
    exp.run(client, n_trials=12, progress=False)
    finished = read_events(exp.path, ["finished"])
    by_trial: dict[int, list[dict]] = {}
    for e in finished:
        by_trial.setdefault(e["trial"], []).append(e)
    promoted = [t for t, evs in by_trial.items() if len(evs) > 1]
    assert promoted, "no trial ran at two rungs"
    ds = exp.curves()
    for tid in promoted:
        budgets = [e["budget"] for e in by_trial[tid]]
        curve = ds["val_accuracy"].sel(trial=tid).values
        assert np.isfinite(curve[: int(max(budgets))]).all()
        assert ds["val_accuracy"].sel(trial=tid).notnull().sum() == int(max(budgets))


def test_hyperband_plan_completes_with_every_bracket(client, tmp_path):
    sched = Hyperband(max_budget=9)
    exp = Experiment("hb", SearchSpace(conv_net), SyntheticEvaluator(), scheduler=sched, log_dir=tmp_path)
    df = exp.run(client, n_trials=100, progress=False)
    # R=9, eta=3: brackets start 9, 5 and 3 configs.
    assert len(df) == 9 + 5 + 3
    assert (df["status"] == "finished").all()


@pytest.mark.tf
def test_keras_promotion_continues_from_checkpoint_on_digits(client, tmp_path):
    pytest.importorskip("keras")
    from toolkit.evaluators.keras import KerasClassifierEvaluator

    evaluator = KerasClassifierEvaluator(dataset="digits", epochs=3, batch_size=128)
    exp = Experiment(
        "keras-asha",
        SearchSpace(conv_net),
        evaluator,
        scheduler=ASHA(min_budget=1, max_budget=3, eta=3),
        log_dir=tmp_path,
        seed=1,
    )
    df = exp.run(client, n_trials=4, progress=False)
    assert (df["status"] == "finished").all(), df["error"].tolist()
    finished = read_events(exp.path, ["finished"])
    resumed = [e for e in finished if e.get("rung", 0) > 0]
    assert resumed, "no trial was promoted"
    for e in resumed:
        # The promoted run trained epochs 2..3 only, continuing from the rung-0 checkpoint.
        assert e["result"]["resumed_from_epoch"] == 1
        assert e["result"]["trained_epochs"] == 2
        assert e["result"]["history"]["epoch"] == [1, 2, 3]
    tid = resumed[0]["trial"]
    assert (exp.journal.trial_dir(tid)).is_dir()
    curve = exp.curves()["val_accuracy"].sel(trial=tid).values
    assert np.isfinite(curve).all() and len(curve) == 3
