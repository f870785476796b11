"""Search quality at an equal budget of epochs: darch's searchers and ASHA against Keras Tuner.

The task is the digits conv-net space (``toolkit.spaces.conv_net``, scikit-learn's 8x8 digits, 20 %
of the training set held out for validation by a seeded shuffle) and every method gets the same
budget of ``B = trials x epochs`` training epochs, for each seed:

* darch, on a LocalCluster of 2 single-threaded worker processes, with
  ``KerasClassifierEvaluator(dataset="digits", epochs=E)``:
  ``random`` (``RandomSearcher``), ``evolution`` (``EvolutionSearcher``), ``tpe`` (``OptunaSearcher``,
  Optuna's TPE), each ``trials`` trials of ``E`` epochs; and ``asha`` (random sampling with
  ``ASHA(min_budget=1, max_budget=E, eta)``, its finished jobs counted in time order until their
  epochs reach ``B``). At budgets this small the defaults of evolution (a population of 20) and TPE
  (10 random start-up trials) would make both plain random search, so they are scaled to the budget
  (population ``max(3, trials // 3)``, tournament 2; ``n_startup_trials = max(3, trials // 3)``);
* Keras Tuner 1.4.8, run as it runs by default (one process, TensorFlow's default threads, its own
  trial folders), on a hypermodel that mirrors ``conv_net`` layer for layer, on the same training and
  validation examples, batch size 64: ``RandomSearch(max_trials=trials)`` with ``epochs=E``, and
  ``Hyperband(max_epochs=E, factor=eta)``, stopped when its epochs reach ``B``.

Recorded per method and seed: the best ``val_accuracy`` reached within the budget (best epoch of any
trial, as both systems rank trials) and the wall time of the search on a warm process or cluster
(TensorFlow imported, the data loaded); then medians over seeds. Keras Tuner runs in a subprocess
after the Dask cluster is closed, so the two never share the CPUs.

Usage::

    python bench/quality.py [--quick] [--seeds 3] [--trials 10] [--epochs 4] [--eta 2]

Writes ``bench/results/quality.json`` (``quality-quick.json`` with ``--quick``); the last printed
line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import report  # noqa: E402
from multifidelity import (  # noqa: E402
    asha_configs_for,
    code_version,
    run_search,
    tool_versions,
    warm_keras,
    within_budget,
)

logger = logging.getLogger("bench.quality")

DARCH_METHODS = ("random", "evolution", "tpe", "asha")
KT_METHODS = ("kt_random", "kt_hyperband")
LABELS = {
    "random": "darch random",
    "evolution": "darch evolution",
    "tpe": "darch Optuna-TPE",
    "asha": "darch ASHA",
    "kt_random": "Keras Tuner RandomSearch",
    "kt_hyperband": "Keras Tuner Hyperband",
}
VALIDATION_FRACTION = 0.2
SPLIT_SEED = 0
BATCH_SIZE = 64


# -- darch ------------------------------------------------------------------------------------------
def darch_method(
    client: Any, method: str, seed: int, trials: int, epochs: int, eta: int, log_dir: Path
) -> dict[str, Any]:
    from toolkit.evaluators.keras import KerasClassifierEvaluator
    from toolkit.schedulers import ASHA
    from toolkit.searchers import EvolutionSearcher, OptunaSearcher, RandomSearcher

    budget = trials * epochs
    evaluator = KerasClassifierEvaluator(
        dataset="digits",
        epochs=epochs,
        batch_size=BATCH_SIZE,
        validation_fraction=VALIDATION_FRACTION,
        split_seed=SPLIT_SEED,
    )
    small = max(3, trials // 3)
    scheduler = None
    n = trials
    if method == "random":
        searcher: Any = RandomSearcher(seed=seed)
    elif method == "evolution":
        searcher = EvolutionSearcher(population_size=small, sample_size=2, seed=seed)
    elif method == "tpe":
        searcher = OptunaSearcher(seed=seed, n_startup_trials=small)
    elif method == "asha":
        searcher = RandomSearcher(seed=seed)
        scheduler = ASHA(min_budget=1, max_budget=epochs, eta=eta)
        n = asha_configs_for(budget, epochs, eta)
    else:
        raise ValueError(f"unknown method {method!r}; valid: {DARCH_METHODS}")
    run = run_search(
        client, f"{method}-s{seed}", evaluator, n, log_dir, seed=seed, scheduler=scheduler, searcher=searcher
    )
    jobs = run.pop("jobs_timeline")
    run.pop("t_start")
    at = within_budget(jobs, budget)
    run.update(best_at_budget=at["best"], epochs_at_budget=at["epochs"], searcher=repr(searcher))
    if scheduler is not None:
        run["scheduler"] = repr(scheduler)
    return run


# -- Keras Tuner (runs in a subprocess: ``--kt-worker``) -----------------------------------------------
def digits_split() -> tuple[Any, Any, Any, Any]:
    """The same training and validation examples as ``KerasClassifierEvaluator(dataset="digits")``."""
    import numpy as np

    from toolkit.evaluators.datasets import load_dataset

    x, y, _x_test, _y_test = load_dataset("digits")
    n = len(x)
    n_val = round(n * VALIDATION_FRACTION)
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return x[train], y[train], x[val], y[val]


def build_hypermodel(hp: Any) -> Any:
    """``toolkit.spaces.conv_net`` written as a Keras Tuner hypermodel, for 8x8x1 digits.

    Conv blocks (``same`` padding, optional batch norm, ReLU, optional 2x2 max/avg pooling, skipped when
    the feature map would shrink below 2x2), flatten, dropout, dense layers each followed by dropout, a
    softmax; the optimizer and log-uniform learning rate are searched too.
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=(8, 8, 1))
    x = inputs
    size = 8
    for i in range(hp.Int("conv_blocks", 1, 3)):
        batch_norm = hp.Boolean(f"conv{i}/batch_norm")
        x = layers.Conv2D(
            hp.Choice(f"conv{i}/filters", [16, 32, 48, 64]),
            hp.Choice(f"conv{i}/kernel_size", [3, 5]),
            padding="same",
            use_bias=not batch_norm,
        )(x)
        if batch_norm:
            x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        pool = hp.Choice(f"conv{i}/pool", ["max", "avg", "none"])
        if pool != "none" and size // 2 >= 2:
            x = (layers.MaxPooling2D if pool == "max" else layers.AveragePooling2D)(2)(x)
            size //= 2
    x = layers.Flatten()(x)
    rate = hp.Float("dropout", 0.0, 0.5)
    if rate > 0:
        x = layers.Dropout(rate)(x)
    for i in range(hp.Int("dense_layers", 0, 2)):
        x = layers.Dense(hp.Choice(f"dense{i}/units", [32, 64, 128, 256]), activation="relu")(x)
        if rate > 0:
            x = layers.Dropout(rate)(x)
    outputs = layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    optimizers = {
        "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    learning_rate = hp.Float("learning_rate", 1e-4, 3e-2, sampling="log")
    model.compile(
        optimizer=optimizers[hp.Choice("optimizer", ["adam", "sgd", "rmsprop"])](learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def kt_run(method: str, seed: int, trials: int, epochs: int, eta: int, data: Any, directory: Path) -> dict:
    """One Keras Tuner search, stopped when its trained epochs reach ``trials x epochs``."""
    import keras
    import keras_tuner as kt

    budget = trials * epochs
    seen: list[float] = []

    class Budget(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            if len(seen) >= budget:
                raise kt.errors.FatalError(f"the budget of {budget} epochs is spent")

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            seen.append(float((logs or {}).get("val_accuracy", math.nan)))

    keras.utils.set_random_seed(seed)
    common = {
        "objective": "val_accuracy",
        "seed": seed,
        "directory": str(directory),
        "project_name": f"{method}-s{seed}",
        "overwrite": True,
    }
    t0 = time.perf_counter()
    if method == "kt_random":
        tuner = kt.RandomSearch(build_hypermodel, max_trials=trials, **common)
    else:
        tuner = kt.Hyperband(
            build_hypermodel, max_epochs=epochs, factor=eta, hyperband_iterations=100, **common
        )
    x_train, y_train, x_val, y_val = data
    stopped = False
    try:
        tuner.search(
            x_train,
            y_train,
            epochs=epochs,
            batch_size=BATCH_SIZE,
            validation_data=(x_val, y_val),
            callbacks=[Budget()],
            verbose=0,
        )
    except kt.errors.FatalError:
        stopped = True
    wall = time.perf_counter() - t0
    scores = [v for v in seen[:budget] if not math.isnan(v)]
    trials_run = len(tuner.oracle.trials)
    return {
        "wall_s": round(wall, 3),
        "epochs": min(len(seen), budget),
        "trials": trials_run,
        "best_at_budget": round(max(scores), 5) if scores else None,
        "stopped_at_budget": stopped,
    }


def kt_worker(args: argparse.Namespace) -> None:
    """The ``--kt-worker`` entry point: every Keras Tuner run, one JSON line on stdout."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    t0 = time.perf_counter()
    import keras
    import keras_tuner as kt
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    data = digits_split()
    startup = time.perf_counter() - t0
    out: dict[str, Any] = {
        "startup_s": round(startup, 2),
        "keras_tuner": kt.__version__,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "tf_threads": {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        },
        "runs": {},
    }
    directory = Path(tempfile.mkdtemp(prefix="darch-bench-kt-"))
    try:
        for seed in range(args.seeds):
            for method in KT_METHODS:
                run = kt_run(method, seed, args.trials, args.epochs, args.eta, data, directory)
                out["runs"][f"{method}/{seed}"] = run
                print(f"{method} seed {seed}: {run}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps(out), flush=True)


def keras_tuner_runs(args: argparse.Namespace, seeds: int, trials: int) -> dict[str, Any]:
    try:
        import keras_tuner  # noqa: F401
    except ImportError as exc:
        return {"skipped": f"keras-tuner not installed ({exc}); pip install keras-tuner==1.4.8"}
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--kt-worker",
        f"--seeds={seeds}",
        f"--trials={trials}",
        f"--epochs={args.epochs}",
        f"--eta={args.eta}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"skipped": f"the Keras Tuner subprocess failed (rc={proc.returncode}): {proc.stderr[-1500:]}"}
    return json.loads(lines[-1])


# -- main -------------------------------------------------------------------------------------------
def _summary(per_seed: dict[str, dict[int, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    out = {}
    for method, runs in per_seed.items():
        bests = [r.get("best_at_budget") for r in runs.values()]
        walls = [r.get("wall_s") for r in runs.values() if r.get("wall_s") is not None]
        finite = [b for b in bests if b is not None]
        out[method] = {
            "label": LABELS[method],
            "best_val_accuracy_median": round(statistics.median(finite), 5) if finite else None,
            "best_val_accuracy_by_seed": bests,
            "wall_s_median": round(statistics.median(walls), 2) if walls else None,
            "wall_s_by_seed": walls,
        }
    return out


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 trials (~2 min)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds (default 3; quick 1)")
    parser.add_argument("--trials", type=int, default=None, help="full-budget trials per search (default 10)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of a full-budget trial (default 4)")
    parser.add_argument("--eta", type=int, default=2, help="ASHA eta and Hyperband factor (default 2)")
    parser.add_argument("--methods", default=",".join(DARCH_METHODS + KT_METHODS), help="comma-separated")
    parser.add_argument("--kt-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    seeds = args.seeds or (1 if args.quick else 3)
    trials = args.trials or (3 if args.quick else 10)
    if args.kt_worker:
        args.seeds, args.trials = seeds, trials
        kt_worker(args)
        return None
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("distributed", "toolkit"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in DARCH_METHODS + KT_METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; valid: {list(DARCH_METHODS + KT_METHODS)}")

    from distributed import Client

    from toolkit.cluster import make_cluster

    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    per_seed: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in methods}
    tmp = Path(tempfile.mkdtemp(prefix="darch-bench-quality-"))
    warm_s = None
    try:
        darch_methods = [m for m in methods if m in DARCH_METHODS]
        if darch_methods:
            cluster = make_cluster("local", n_workers=2, dashboard_address=None, silence_logs=logging.ERROR)
            client = Client(cluster)
            try:
                client.wait_for_workers(2, timeout=120)
                warm_s = warm_keras(client)
                for seed in range(seeds):
                    for method in darch_methods:
                        run = darch_method(client, method, seed, trials, args.epochs, args.eta, tmp)
                        per_seed[method][seed] = run
                        logger.info(
                            "%s seed %d: best %.4f within %d epochs, %.1f s (%d configs, %d jobs, %d failed)",
                            method,
                            seed,
                            run["best_at_budget"] or float("nan"),
                            run["epochs_at_budget"],
                            run["wall_s"],
                            run["configs"],
                            run["jobs"],
                            run["failed"],
                        )
            finally:
                client.close()
                cluster.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    kt_methods = [m for m in methods if m in KT_METHODS]
    kt_info: dict[str, Any] = {}
    if kt_methods:
        kt_info = keras_tuner_runs(args, seeds, trials)
        for key, run in (kt_info.pop("runs", None) or {}).items():
            method, seed = key.split("/")
            if method in per_seed:
                per_seed[method][int(seed)] = run
        if "skipped" in kt_info:
            logger.info("Keras Tuner: %s", kt_info["skipped"])
            for method in kt_methods:
                per_seed.pop(method, None)

    summary = _summary(per_seed)
    budget = trials * args.epochs
    kt_best = {LABELS[m]: summary[m]["best_val_accuracy_median"] for m in KT_METHODS if m in summary}
    figures = []
    for method in DARCH_METHODS:
        if method not in summary:
            continue
        figures.append(
            {
                "key": f"best_val_accuracy_{method}",
                "label": f"{LABELS[method]}: best of a search at {budget} epochs (median of {seeds} seeds)",
                "darch": summary[method]["best_val_accuracy_median"],
                "unit": "val_accuracy",
                "higher_is_better": True,
                "anchors": kt_best,
                "goal": None,
                "met": None,
            }
        )
    for method, anchor in (("random", "kt_random"), ("asha", "kt_hyperband")):
        if method in summary and anchor in summary:
            figures.append(
                {
                    "key": f"wall_s_{method}",
                    "label": f"{LABELS[method]}: wall time of one search (median; 2 workers vs 1 process)",
                    "darch": summary[method]["wall_s_median"],
                    "unit": "s",
                    "higher_is_better": False,
                    "anchors": {LABELS[anchor]: summary[anchor]["wall_s_median"]},
                    "goal": None,
                    "met": None,
                }
            )
    result: dict[str, Any] = {
        "what": "best val_accuracy within an equal budget of epochs on the digits conv-net space; "
        "darch on 2 workers vs Keras Tuner in-process; medians over seeds",
        "quick": args.quick,
        "settings": {
            "seeds": seeds,
            "trials": trials,
            "epochs": args.epochs,
            "budget_epochs": budget,
            "eta": args.eta,
            "asha_configs": asha_configs_for(budget, args.epochs, args.eta),
            "batch_size": BATCH_SIZE,
            "validation_fraction": VALIDATION_FRACTION,
            "workers": 2,
            "keras_warm_up_s": warm_s,
        },
        "methods": summary,
        "runs": {m: {str(s): r for s, r in runs.items()} for m, runs in per_seed.items()},
        "keras_tuner": kt_info,
        "figures": figures,
        "tool_versions": tool_versions(),
        "code": code_version(),
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "duration_s": round(time.perf_counter() - started, 1),
    }
    return report("quality-quick" if args.quick else "quality", result)


if __name__ == "__main__":
    main()
