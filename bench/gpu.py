"""GPU throughput: images per second of darch's Keras evaluator against a plain Keras ``fit``.

Runs only where TensorFlow sees a GPU (probed in a subprocess; ``nvidia-smi -L`` is recorded too).
Otherwise it writes ``{"skipped": "no GPU visible", ...}`` and exits 0.

Both sides train the same model on the same data, each in a fresh subprocess:

* **darch** — ``KerasClassifierEvaluator(dataset=..., epochs=E, batch_size=128, device="gpu")`` called
  once, in-process, with a trial folder (so it also writes its checkpoint, as in a search);
* **plain Keras** — the same architecture built by the same builder
  (``toolkit.evaluators.builders.build_model``), ``model.fit(x, y, batch_size=128, epochs=E,
  validation_data=...)`` on the same training / validation split.

The data is MNIST from ``/work/shared/datasets/mnist.npz`` (or ``$DARCH_MNIST``) when present, else
60,000 synthetic 28x28 images. The model is the tutorial's conv net (32 and 64 filters, 3x3, max
pooling, a 128-unit dense layer, dropout 0.25), and both sides run TensorFlow with the same number
of threads (``--threads``, default 1, the evaluator's default). Figures: images per second over all epochs, and over
the epochs after the first (steady state, without tracing); darch / plain is the ratio (goal >= 0.9).

Usage::

    python bench/gpu.py [--quick] [--epochs 5]

Writes ``bench/results/gpu.json`` (``gpu-quick.json`` with ``--quick``); the last printed line is one
JSON object of the figures. It takes under 3 minutes on one GPU, most of it TensorFlow's start-up.
"""

from __future__ import annotations

import argparse
import json
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

from _common import ROOT, report  # noqa: E402
from multifidelity import code_version, tool_versions  # noqa: E402

GOAL_RATIO = 0.9
BATCH_SIZE = 128
ARCH: dict[str, Any] = {
    "type": "conv_net",
    "conv": [
        {"filters": 32, "kernel_size": 3, "batch_norm": False, "pool": "max"},
        {"filters": 64, "kernel_size": 3, "batch_norm": False, "pool": "max"},
    ],
    "dense": [{"units": 128}],
    "dropout": 0.25,
    "learning_rate": 1e-3,
    "optimizer": "adam",
    "num_classes": 10,
}
PROBE = (
    "import os; os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3'); import tensorflow as tf; "
    "g = tf.config.list_physical_devices('GPU'); "
    "print(len(g), tf.__version__, tf.test.is_built_with_cuda(), "
    "[tf.config.experimental.get_device_details(d).get('device_name') for d in g])"
)


def mnist_path() -> str | None:
    for candidate in (
        os.environ.get("DARCH_MNIST"),
        "/work/shared/datasets/mnist.npz",
        str(ROOT / "shared" / "datasets" / "mnist.npz"),
        str(ROOT.parent / "shared" / "datasets" / "mnist.npz"),
    ):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def synthetic_mnist(n_train: int = 60_000, n_test: int = 10_000) -> tuple[Any, Any, Any, Any]:
    """Random 28x28 uint8 images and labels, shaped like MNIST (a dataset loader for the evaluator)."""
    import numpy as np

    rng = np.random.default_rng(0)
    return (
        rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_train, dtype=np.int64),
        rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_test, dtype=np.int64),
    )


def dataset_spec() -> Any:
    """MNIST when present, else synthetic; ``$DARCH_BENCH_SUBSET`` keeps only the first examples."""
    path = mnist_path()
    spec: dict[str, Any] = {"name": "mnist", "path": path} if path else {"name": "bench.gpu:synthetic_mnist"}
    if os.environ.get("DARCH_BENCH_SUBSET"):
        spec["subset"] = int(os.environ["DARCH_BENCH_SUBSET"])
    return spec


def probe() -> dict[str, Any]:
    """What this machine shows: ``nvidia-smi -L`` and the GPUs TensorFlow sees (in a subprocess)."""
    info: dict[str, Any] = {"nvidia_smi": None, "tensorflow_gpus": 0}
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
            info["nvidia_smi"] = out.stdout.strip().splitlines() or out.stderr.strip()[:300]
        except (OSError, subprocess.TimeoutExpired) as exc:
            info["nvidia_smi"] = f"failed: {exc}"
    try:
        out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        info["tensorflow"] = "probe timed out after 180 s"
        return info
    if out.returncode != 0:
        info["tensorflow"] = f"import failed: {out.stderr.strip()[-300:]}"
        return info
    n, version, cuda, names = out.stdout.strip().split(" ", 3)
    info.update(tensorflow_gpus=int(n), tensorflow=version, built_with_cuda=cuda == "True", gpu_names=names)
    return info


# -- the two measurements (each in its own subprocess: ``--measure darch|keras``) ---------------------
def measure_darch(epochs: int, threads: int, device: str = "gpu") -> dict[str, Any]:
    from toolkit.evaluators.keras import KerasClassifierEvaluator

    evaluator = KerasClassifierEvaluator(
        dataset=dataset_spec(), epochs=epochs, batch_size=BATCH_SIZE, device=device, seed=0, threads=threads
    )
    trial_dir = tempfile.mkdtemp(prefix="darch-bench-gpu-")
    try:
        evaluator(ARCH, config={}, seed=0, budget=1, trial_dir=None)  # load the data, warm CUDA
        t0 = time.perf_counter()
        result = evaluator(ARCH, config={}, seed=0, trial_dir=trial_dir)
        call_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(trial_dir, ignore_errors=True)
    times = result["history"]["epoch_time_s"]
    return {
        "num_train": result["num_train"],
        "epochs": len(times),
        "epoch_time_s": [round(t, 3) for t in times],
        "train_time_s": round(result["train_time_s"], 3),
        "call_s": round(call_s, 3),
        "val_accuracy": result["val_accuracy"],
        "device": result.get("device"),
        "num_params": result.get("num_params"),
    }


def measure_keras(epochs: int, threads: int) -> dict[str, Any]:
    os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = str(threads)
    import keras
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)  # as the evaluator does

    from toolkit.evaluators.builders import build_model
    from toolkit.evaluators.datasets import load_dataset

    x, y, _xt, _yt = load_dataset(dataset_spec())
    n_val = round(len(x) * 0.2)
    perm = np.random.default_rng(0).permutation(len(x))
    val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    x_train, y_train, x_val, y_val = x[train], y[train], x[val], y[val]

    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            times.append(time.perf_counter() - self.t0)

    warm, _ = build_model(ARCH, x_train.shape[1:], seed=0)  # warm CUDA as darch's side does
    warm.fit(x_train[:1024], y_train[:1024], batch_size=BATCH_SIZE, epochs=1, verbose=0)
    keras.backend.clear_session()
    model, _ = build_model(ARCH, x_train.shape[1:], seed=0)
    t0 = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        batch_size=BATCH_SIZE,
        epochs=epochs,
        validation_data=(x_val, y_val),
        shuffle=True,
        verbose=0,
        callbacks=[Timer()],
    )
    train_s = time.perf_counter() - t0
    return {
        "num_train": len(x_train),
        "epochs": len(times),
        "epoch_time_s": [round(t, 3) for t in times],
        "train_time_s": round(train_s, 3),
        "val_accuracy": max(history.history["val_accuracy"]),
    }


def _rates(run: dict[str, Any]) -> dict[str, Any]:
    n, times = run["num_train"], run["epoch_time_s"]
    steady = statistics.median(times[1:]) if len(times) > 1 else times[0]
    return {
        **run,
        "images_per_s": round(n * len(times) / run["train_time_s"]),
        "images_per_s_steady": round(n / steady),
    }


def _subprocess(kind: str, epochs: int, threads: int, cpu: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), f"--measure={kind}", f"--epochs={epochs}"]
    cmd += [f"--threads={threads}"]
    cmd += ["--cpu"] if cpu else []
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"--measure={kind} failed (rc={proc.returncode}): {proc.stderr[-1500:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs instead of 5")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of each run (default 5; quick 3)")
    parser.add_argument("--measure", choices=["darch", "keras"], help=argparse.SUPPRESS)
    parser.add_argument("--cpu", action="store_true", help="measure even without a GPU (to test the script)")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads on both sides (default 1)")
    args = parser.parse_args(argv)
    epochs = args.epochs or (3 if args.quick else 5)
    if args.measure:
        device = "auto" if args.cpu else "gpu"
        if args.measure == "darch":
            run = measure_darch(epochs, args.threads, device)
        else:
            run = measure_keras(epochs, args.threads)
        print(json.dumps(run), flush=True)
        return None
    name = "gpu-cpu-test" if args.cpu else "gpu-quick" if args.quick else "gpu"
    started = time.perf_counter()
    info = probe()
    if not info.get("tensorflow_gpus") and not args.cpu:
        why = "no GPU visible"
        if info.get("nvidia_smi") and isinstance(info["nvidia_smi"], list):
            why += (
                f" to TensorFlow (nvidia-smi lists {len(info['nvidia_smi'])}; is tensorflow-cpu installed?)"
            )
        return report(
            name, {"skipped": why, "probe": info, "quick": args.quick, "duration_s": _since(started)}
        )
    try:
        darch = _rates(_subprocess("darch", epochs, args.threads, args.cpu))
        plain = _rates(_subprocess("keras", epochs, args.threads, args.cpu))
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        return report(
            name, {"skipped": f"measurement failed: {exc}", "probe": info, "duration_s": _since(started)}
        )
    ratio = darch["images_per_s_steady"] / plain["images_per_s_steady"]
    result = {
        "what": f"images/s training the tutorial conv net on {'MNIST' if mnist_path() else 'synthetic 28x28'} "
        f"(batch {BATCH_SIZE}, {epochs} epochs): KerasClassifierEvaluator vs plain model.fit, same model",
        "quick": args.quick,
        "device": darch.get("device"),
        "tf_threads": args.threads,
        "dataset": dataset_spec(),
        "images_per_s_darch": darch["images_per_s"],
        "images_per_s_keras": plain["images_per_s"],
        "images_per_s_steady_darch": darch["images_per_s_steady"],
        "images_per_s_steady_keras": plain["images_per_s_steady"],
        "ratio_darch_vs_keras_steady": round(ratio, 3),
        "goal_ratio_darch_vs_keras_steady": GOAL_RATIO,
        "meets_goal": ratio >= GOAL_RATIO,
        "darch": darch,
        "keras": plain,
        "probe": info,
        "tool_versions": tool_versions(),
        "code": code_version(),
        "figures": [
            {
                "key": "images_per_s_steady",
                "label": "GPU training throughput after the first epoch",
                "darch": darch["images_per_s_steady"],
                "unit": "images/s",
                "higher_is_better": True,
                "anchors": {"plain Keras fit": plain["images_per_s_steady"]},
                "goal": f">= {GOAL_RATIO} x plain Keras",
                "met": ratio >= GOAL_RATIO,
            },
            {
                "key": "images_per_s",
                "label": "GPU training throughput, all epochs (first epoch's tracing included)",
                "darch": darch["images_per_s"],
                "unit": "images/s",
                "higher_is_better": True,
                "anchors": {"plain Keras fit": plain["images_per_s"]},
                "goal": None,
                "met": None,
            },
        ],
        "duration_s": _since(started),
    }
    return report(name, result)


def _since(t0: float) -> float:
    return round(time.perf_counter() - t0, 1)


if __name__ == "__main__":
    main()
