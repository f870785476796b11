"""The Keras evaluator and its builders, with real TensorFlow on real Dask worker processes.

Every TensorFlow computation runs on the ``client`` fixture's workers (spawned
processes, one TF thread each), never in the pytest process, so the test
process stays free of TensorFlow like a notebook kernel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import cloudpickle
import pytest

from toolkit import SearchSpace
from toolkit.errors import ConfigError
from toolkit.evaluators import KerasClassifierEvaluator
from toolkit.evaluators.builders import build_model
from toolkit.evaluators.datasets import dataset_key, load_counts
from toolkit.evaluators.keras import STATE_FILE, DivergedError, TrialOutOfMemoryError
from toolkit.spaces import conv_net

# Helpers below run on the workers, which cannot import this test module: send them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

HISTORY_KEYS = {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "epoch_time_s"}
RESULT_KEYS = {
    "val_accuracy",
    "val_loss",
    "best_epoch",
    "epochs",
    "last_val_accuracy",
    "last_val_loss",
    "min_val_loss",
    "trained_epochs",
    "resumed_from_epoch",
    "stopped_early",
    "history",
    "num_params",
    "train_time_s",
    "inference_time_per_example_s",
    "host",
    "pid",
    "device",
    "backend",
    "seed",
    "num_train",
    "num_val",
    "notes",
    "rss_mb",
    "process_trials",
}

# A small fixed conv net with batch norm, a dense layer and dropout (every seeded layer kind).
ARCH = {
    "type": "conv_net",
    "conv": [
        {"filters": 16, "kernel_size": 3, "batch_norm": True, "pool": "max"},
        {"filters": 16, "kernel_size": 3, "batch_norm": False, "pool": "avg"},
    ],
    "dense": [{"units": 32}],
    "dropout": 0.25,
    "learning_rate": 0.003,
    "optimizer": "adam",
    "num_classes": 10,
}

# A tiny MLP, for tests where the architecture does not matter (it traces and trains fastest).
SMALL = {"type": "mlp", "hidden": [{"units": 16, "activation": "relu"}], "dropout": 0.1, "num_classes": 10}


def _workers(client) -> list[str]:
    workers = sorted(client.scheduler_info()["workers"])
    assert len(workers) >= 2, "the cluster fixture should have two worker processes"
    return workers


def _run(client, evaluator, arch=ARCH, *, worker=None, **kwargs):
    kwargs.setdefault("config", {})
    pin = {"workers": [worker], "allow_other_workers": False} if worker else {}
    return client.submit(evaluator, arch, pure=False, **pin, **kwargs).result()


def _without_times(history: dict) -> dict:
    return {k: v for k, v in history.items() if k != "epoch_time_s"}


# --------------------------------------------------------------------------- no TensorFlow in the search process


def test_importing_evaluators_and_building_the_evaluator_does_not_import_tensorflow():
    code = textwrap.dedent(
        """
        import sys
        import toolkit.evaluators
        from toolkit.evaluators import KerasClassifierEvaluator
        from toolkit.evaluators import builders, datasets, keras as keras_evaluator
        ev = KerasClassifierEvaluator(dataset="digits", epochs=2, max_params=10_000)
        ev.validate()
        repr(ev), ev.get_params(), KerasClassifierEvaluator.from_params(ev.get_params())
        import pickle; pickle.loads(pickle.dumps(ev))
        loaded = sorted(m for m in ("tensorflow", "keras", "jax", "torch") if m in sys.modules)
        print(loaded)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_invalid_settings_are_refused_with_the_valid_values():
    with pytest.raises(ConfigError, match=r"checkpoint must be one of \['end', 'epoch', 'none'\]"):
        KerasClassifierEvaluator(checkpoint="always")({}, config={})
    with pytest.raises(ConfigError, match="validation_fraction must be a number in"):
        KerasClassifierEvaluator(validation_fraction=1.5).validate()
    with pytest.raises(ConfigError, match="did you mean 'val_accuracy'"):
        KerasClassifierEvaluator(monitor="val_acuracy").validate()
    with pytest.raises(ConfigError, match="has no parameter 'epoch'"):
        KerasClassifierEvaluator.from_params({"epoch": 3})


def test_unknown_architecture_type_names_the_registered_types_and_how_to_register():
    with pytest.raises(ConfigError) as info:
        build_model({"type": "resnet", "depth": 18}, (8, 8, 1), seed=0)
    msg = str(info.value)
    assert "'resnet'" in msg and "['conv_net', 'mlp']" in msg
    assert "register_builder('resnet', fn)" in msg and "builders=" in msg


# --------------------------------------------------------------------------- training on workers


@pytest.mark.tf
def test_ten_sampled_conv_nets_build_and_train_one_epoch_on_digits(client):
    space = SearchSpace(conv_net, num_classes=10)
    configs = [space.sample(i) for i in range(10)]
    evaluator = KerasClassifierEvaluator(dataset="digits", batch_size=128)
    futures = [
        client.submit(evaluator, space.replay(cfg), config=cfg, budget=1, seed=i, pure=False)
        for i, cfg in enumerate(configs)
    ]
    results = client.gather(futures)
    for cfg, result in zip(configs, results):
        assert set(result) == RESULT_KEYS, sorted(set(result) ^ RESULT_KEYS)  # no test_accuracy, full_history
        assert set(result["history"]) == HISTORY_KEYS
        assert result["history"]["epoch"] == [1] and result["epochs"] == result["trained_epochs"] == 1
        assert 0.0 <= result["val_accuracy"] <= 1.0 and result["best_epoch"] == 1, cfg
        assert result["num_params"] > 0 and result["device"] == "CPU"
        json.dumps(result, allow_nan=False)  # the journal stores it as strict JSON
    assert max(r["val_accuracy"] for r in results) > 0.5  # a real model learned something


@pytest.mark.tf
def test_same_config_and_seed_give_identical_history_on_two_worker_processes(client):
    first, second = _workers(client)[:2]
    evaluator = KerasClassifierEvaluator(epochs=2, batch_size=64)
    # Disturb the first worker's global state (Keras, numpy, Python RNGs) with another trial.
    _run(client, evaluator, {**ARCH, "dropout": 0.4}, worker=first, seed=99)
    a = _run(client, evaluator, worker=first, seed=7)
    b = _run(client, evaluator, worker=second, seed=7)
    other_seed = _run(client, evaluator, worker=second, seed=8)
    assert a["pid"] != b["pid"]
    assert _without_times(a["history"]) == _without_times(b["history"])
    assert a["val_accuracy"] == b["val_accuracy"] and a["num_params"] == b["num_params"]
    assert _without_times(other_seed["history"]) != _without_times(a["history"])


@pytest.mark.tf
def test_resume_to_a_larger_budget_continues_the_history_and_trains_only_missing_epochs(client, tmp_path):
    trial_dir = str(tmp_path / "trial")
    evaluator = KerasClassifierEvaluator(batch_size=64, test=True)
    short = _run(client, evaluator, trial_dir=trial_dir, budget=2, seed=3)
    assert short["history"]["epoch"] == [1, 2] and short["resumed_from_epoch"] == 0
    with open(os.path.join(trial_dir, STATE_FILE)) as fh:
        assert json.load(fh)["epoch"] == 2

    longer = _run(client, evaluator, trial_dir=trial_dir, budget=4, seed=3, resume=True)
    assert longer["history"]["epoch"] == [3, 4]
    assert longer["trained_epochs"] == 2 and len(longer["history"]["epoch_time_s"]) == 2
    assert longer["resumed_from_epoch"] == 2 and longer["epochs"] == 4
    assert longer["full_history"]["epoch"] == [1, 2, 3, 4]
    assert longer["full_history"]["loss"][:2] == short["history"]["loss"]
    # It continued from the trained weights: epoch 3 starts far below a fresh model's first epoch.
    assert longer["history"]["loss"][0] < short["history"]["loss"][0]
    assert 0.0 <= longer["test_accuracy"] <= 1.0
    assert [f for f in os.listdir(trial_dir) if f.endswith(".keras")] == ["checkpoint-e0004.keras"]

    again = _run(client, evaluator, trial_dir=trial_dir, budget=4, seed=3, resume=True)
    assert again["trained_epochs"] == 0 and again["history"]["epoch"] == []
    assert again["val_accuracy"] == longer["val_accuracy"] and again["best_epoch"] == longer["best_epoch"]
    assert again["test_accuracy"] == longer["test_accuracy"]


@pytest.mark.tf
def test_checkpoint_every_epoch_leaves_one_resumable_checkpoint(client, tmp_path):
    trial_dir = tmp_path / "trial"
    evaluator = KerasClassifierEvaluator(checkpoint="epoch")
    _run(client, evaluator, SMALL, trial_dir=str(trial_dir), budget=3, seed=0)
    assert sorted(f for f in os.listdir(trial_dir) if not f.startswith("best-")) == [
        "checkpoint-e0003.keras",
        STATE_FILE,
    ]
    resumed = _run(client, evaluator, SMALL, trial_dir=str(trial_dir), budget=4, seed=0, resume=True)
    assert resumed["history"]["epoch"] == [4] and resumed["full_history"]["epoch"] == [1, 2, 3, 4]


@pytest.mark.tf
def test_no_checkpoint_is_written_with_checkpoint_none(client, tmp_path):
    trial_dir = tmp_path / "trial"
    trial_dir.mkdir()
    _run(
        client, KerasClassifierEvaluator(checkpoint="none"), SMALL, trial_dir=str(trial_dir), budget=1, seed=0
    )
    assert os.listdir(trial_dir) == []


@pytest.mark.tf
def test_resume_without_a_checkpoint_trains_from_scratch(client, tmp_path):
    evaluator = KerasClassifierEvaluator()
    result = _run(client, evaluator, SMALL, trial_dir=str(tmp_path / "empty"), budget=1, seed=0, resume=True)
    assert result["history"]["epoch"] == [1] and result["resumed_from_epoch"] == 0


@pytest.mark.tf
def test_resume_of_another_architecture_is_refused(client, tmp_path):
    trial_dir = str(tmp_path / "trial")
    evaluator = KerasClassifierEvaluator()
    _run(client, evaluator, trial_dir=trial_dir, budget=1, seed=0)
    with pytest.raises(ConfigError, match="written for another architecture"):
        _run(client, evaluator, {**ARCH, "dropout": 0.1}, trial_dir=trial_dir, budget=2, seed=0, resume=True)


@pytest.mark.tf
def test_early_stopping_ends_training_and_reports_the_best_epoch(client):
    arch = {**ARCH, "learning_rate": 0.03, "optimizer": "sgd"}
    result = _run(client, KerasClassifierEvaluator(epochs=40, patience=1, monitor="val_loss"), arch, seed=1)
    assert result["stopped_early"] and result["epochs"] < 40
    assert result["epochs"] == result["best_epoch"] + 1
    assert result["val_loss"] == min(result["history"]["val_loss"]) == result["min_val_loss"]


@pytest.mark.tf
def test_nan_loss_from_a_huge_learning_rate_fails_the_trial_as_diverged(client, tmp_path):
    arch = {**ARCH, "optimizer": "sgd", "learning_rate": 1e20}
    with pytest.raises(DivergedError, match="diverged"):
        _run(client, KerasClassifierEvaluator(epochs=3), arch, trial_dir=str(tmp_path / "t"), seed=0)
    assert not os.path.exists(tmp_path / "t" / STATE_FILE)  # nothing to resume from a diverged trial


def _nan_builder(arch, input_shape, seeds):
    import keras

    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Rescaling(float("nan"))(x)
    outputs = keras.layers.Dense(10, activation="softmax", kernel_initializer=seeds.initializer())(x)
    return keras.Model(inputs, outputs)


@pytest.mark.tf
def test_custom_builder_passed_to_the_evaluator_is_used_on_the_worker_and_nan_is_diverged(client):
    evaluator = KerasClassifierEvaluator(epochs=1, builders={"nan_net": _nan_builder})
    with pytest.raises(DivergedError, match=r"the model diverged: the loss became nan at epoch 1"):
        _run(client, evaluator, {"type": "nan_net", "num_classes": 10}, seed=0)


@pytest.mark.tf
def test_model_over_max_params_is_refused_before_training(client, tmp_path):
    arch = {**ARCH, "dense": [{"units": 256}]}
    trial_dir = tmp_path / "big"
    with pytest.raises(ConfigError) as info:
        _run(client, KerasClassifierEvaluator(max_params=5_000), arch, trial_dir=str(trial_dir), seed=0)
    msg = str(info.value)
    assert "over max_params=5,000" in msg and "refused before training" in msg
    assert not trial_dir.exists() or not os.listdir(trial_dir)


def _huge_builder(arch, input_shape, seeds):
    import numpy as np

    np.ones((2**50,), np.float32)  # 4 PiB: the allocation fails at once with MemoryError
    raise AssertionError("unreachable")


@pytest.mark.tf
def test_out_of_memory_while_building_fails_the_trial_with_the_message(client):
    evaluator = KerasClassifierEvaluator(epochs=1, builders={"huge": _huge_builder})
    with pytest.raises(
        TrialOutOfMemoryError, match=r"ran out of memory on CPU .*Unable to allocate 4.00 PiB"
    ):
        _run(client, evaluator, {"type": "huge", "num_classes": 10}, seed=0)


@pytest.mark.slow
@pytest.mark.tf
def test_tensorflow_out_of_memory_fails_the_trial_with_the_message(client):
    # TensorFlow's allocator retries for about 10 s before it gives up, hence slow.
    arch = {"type": "mlp", "hidden": [{"units": 10**12, "activation": "relu"}], "num_classes": 10}
    with pytest.raises(TrialOutOfMemoryError, match="ran out of memory on CPU.*OOM when allocating"):
        _run(client, KerasClassifierEvaluator(epochs=1), arch, seed=0)


@pytest.mark.tf
def test_test_accuracy_is_reported_only_when_asked(client):
    without = _run(client, KerasClassifierEvaluator(epochs=1), SMALL, seed=0)
    with_test = _run(client, KerasClassifierEvaluator(epochs=1, test=True), SMALL, seed=0)
    assert "test_accuracy" not in without
    assert 0.0 <= with_test["test_accuracy"] <= 1.0 and with_test["test_loss"] > 0


@pytest.mark.tf
def test_dataset_is_loaded_once_per_worker_across_trials(client):
    spec = {"name": "digits", "subset": 1000}  # a spec of its own, so other tests do not count
    key = dataset_key(spec)
    evaluator = KerasClassifierEvaluator(dataset=spec, batch_size=128)
    futures = [client.submit(evaluator, SMALL, config={}, budget=1, seed=i, pure=False) for i in range(6)]
    pids = {r["pid"] for r in client.gather(futures)}
    counts = client.run(load_counts)
    per_worker = [c.get(key, 0) for c in counts.values()]
    assert max(per_worker) == 1, counts
    assert sum(per_worker) == len(pids)  # every worker that ran a trial read it exactly once


@pytest.mark.tf
def test_result_reports_worker_process_and_its_trial_count(client):
    worker = _workers(client)[0]
    evaluator = KerasClassifierEvaluator(epochs=1)
    a = _run(client, evaluator, SMALL, worker=worker, seed=0)
    b = _run(client, evaluator, SMALL, worker=worker, seed=1)
    assert b["process_trials"] == a["process_trials"] + 1
    assert a["pid"] == client.run(os.getpid, workers=[worker])[worker]
    assert b["rss_mb"] > 100 and b["inference_time_per_example_s"] > 0 and b["train_time_s"] > 0


def _build_on_worker(input_shape):
    from toolkit.evaluators.builders import build_model

    arch = {**ARCH, "conv": [{"filters": 8, "kernel_size": 3, "batch_norm": False, "pool": "max"}] * 3}
    mlp = {"type": "mlp", "hidden": [{"units": 16, "activation": "tanh"}], "batch_norm": True, "dropout": 0.1}
    out = {}
    for name, a in (("conv_net", arch), ("mlp", mlp)):
        model, notes = build_model(a, input_shape, seed=0)
        import numpy as np

        probs = model.predict(np.zeros((2, *input_shape), np.float32), verbose=0)
        out[name] = {"notes": notes, "output": list(probs.shape), "params": model.count_params()}
    return out


@pytest.mark.tf
@pytest.mark.parametrize(
    ("shape", "skipped"),
    [((8, 8, 1), [2]), ((28, 28, 1), []), ((32, 32, 3), []), ((4, 4, 1), [1, 2]), ((6, 40, 2), [1, 2])],
)
def test_builders_adapt_to_the_input_shape_and_record_skipped_pooling(client, shape, skipped):
    out = client.submit(_build_on_worker, shape, pure=False).result()
    assert out["conv_net"]["notes"] == ({"skipped_pooling": skipped} if skipped else {})
    assert out["conv_net"]["output"] == [2, 10] and out["mlp"]["output"] == [2, 10]
    assert out["mlp"]["notes"] == {}


# --------------------------------------------------------------------------- real MNIST


@pytest.mark.slow
@pytest.mark.tf
def test_tutorial_conv_net_reaches_98_percent_test_accuracy_on_mnist_in_3_epochs(mnist_path):
    from distributed import Client, LocalCluster

    tutorial = {  # the Keras/DeepArchitect tutorial's MNIST conv net, as a config of the conv_net space
        "conv_blocks": 2,
        "conv0/filters": 32,
        "conv0/kernel_size": 3,
        "conv0/batch_norm": False,
        "conv0/pool": "max",
        "conv1/filters": 64,
        "conv1/kernel_size": 3,
        "conv1/batch_norm": False,
        "conv1/pool": "max",
        "dense_layers": 0,
        "dropout": 0.5,
        "learning_rate": 0.001,
        "optimizer": "adam",
    }
    arch = SearchSpace(conv_net, num_classes=10).replay(tutorial)
    evaluator = KerasClassifierEvaluator(
        dataset={"name": "mnist", "path": str(mnist_path)},
        batch_size=128,
        validation_fraction=0.1,
        test=True,
        threads=2,
    )
    env = {"TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "2"}
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0", env=env
        ) as cluster,
        Client(cluster) as client,
    ):
        result = client.submit(evaluator, arch, config=tutorial, budget=3, seed=0, pure=False).result()
    assert result["epochs"] == 3 and result["num_train"] == 54000
    assert result["test_accuracy"] >= 0.98, result["history"]
