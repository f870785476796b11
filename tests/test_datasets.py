"""Dataset specs, loading, caching and the error messages for bad files (no TensorFlow needed)."""

from __future__ import annotations

import doctest
import textwrap

import numpy as np
import pytest

from toolkit.errors import ConfigError
from toolkit.evaluators import datasets
from toolkit.evaluators.datasets import EXPECTED_KEYS, dataset_key, load_counts, load_dataset, normalize_spec


def _write_npz(path, n_train=20, n_test=10, shape=(28, 28), **override):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, size=(n_train, *shape), dtype=np.uint8),
        "y_train": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, size=(n_test, *shape), dtype=np.uint8),
        "y_test": rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez_compressed(path, **arrays)
    return arrays


def test_module_doctests_pass():
    result = doctest.testmod(datasets)
    assert result.failed == 0 and result.attempted > 0


def test_digits_are_float_images_in_unit_range_with_int_labels():
    x_train, y_train, x_test, y_test = load_dataset("digits")
    assert x_train.shape[1:] == (8, 8, 1) and x_test.shape[1:] == (8, 8, 1)
    assert len(x_train) + len(x_test) == 1797
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32
    assert x_train.min() >= 0.0 and x_train.max() == pytest.approx(1.0)
    assert set(np.unique(y_test)) == set(range(10))


def test_default_spec_is_digits():
    assert normalize_spec(None) == {"name": "digits"}
    assert load_dataset(None)[0] is load_dataset("digits")[0]


def test_subset_keeps_the_first_n_train_and_test_examples():
    full = load_dataset("digits")
    x_train, y_train, x_test, y_test = load_dataset({"name": "digits", "subset": 50})
    assert len(x_train) == len(y_train) == len(x_test) == len(y_test) == 50
    np.testing.assert_array_equal(x_train, full[0][:50])


def test_second_load_of_a_spec_hits_the_cache_and_is_not_counted(tmp_path):
    path = tmp_path / "cache.npz"
    _write_npz(path)
    key = dataset_key(f"mnist:{path}")
    first = load_dataset(f"mnist:{path}")
    second = load_dataset({"name": "mnist", "path": str(path)})
    assert first[0] is second[0]
    assert load_counts()[key] == 1


def test_cached_arrays_are_read_only():
    x_train = load_dataset("digits")[0]
    with pytest.raises(ValueError):
        x_train[0, 0, 0, 0] = 5.0


def test_mnist_file_is_scaled_to_unit_range_and_gets_a_channel_axis(tmp_path):
    path = tmp_path / "mnist.npz"
    raw = _write_npz(path)
    x_train, y_train, x_test, y_test = load_dataset({"name": "mnist", "path": str(path)})
    assert x_train.shape == (20, 28, 28, 1) and x_test.shape == (10, 28, 28, 1)
    np.testing.assert_allclose(x_train[..., 0], raw["x_train"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y_train, raw["y_train"].astype(np.int32))


def test_path_expands_environment_variables(tmp_path, monkeypatch):
    path = tmp_path / "envmnist.npz"
    _write_npz(path)
    monkeypatch.setenv("DARCH_TEST_DATA", str(tmp_path))
    assert load_dataset("mnist:$DARCH_TEST_DATA/envmnist.npz")[0].shape == (20, 28, 28, 1)


def test_missing_mnist_file_names_path_keys_and_where_to_get_it(tmp_path):
    path = tmp_path / "nowhere" / "mnist.npz"
    with pytest.raises(ConfigError) as info:
        load_dataset(f"mnist:{path}")
    msg = str(info.value)
    assert str(path) in msg and "does not exist" in msg
    assert all(k in msg for k in EXPECTED_KEYS)
    assert "mnist.npz" in msg and "tf-keras-datasets" in msg


def test_corrupt_mnist_file_is_reported_as_unreadable(tmp_path):
    path = tmp_path / "corrupt.npz"
    good = tmp_path / "good.npz"
    _write_npz(good)
    path.write_bytes(good.read_bytes()[:200])  # a truncated zip
    with pytest.raises(ConfigError) as info:
        load_dataset({"name": "mnist", "path": str(path)})
    msg = str(info.value)
    assert str(path) in msg and "corrupt" in msg
    assert all(k in msg for k in EXPECTED_KEYS) and "tf-keras-datasets" in msg


def test_garbage_bytes_file_is_reported_as_unreadable(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"this is not a zip file at all" * 10)
    with pytest.raises(ConfigError, match="could not be read as .npz"):
        load_dataset(f"mnist:{path}")


def test_mnist_file_with_wrong_keys_lists_found_and_missing_keys(tmp_path):
    path = tmp_path / "wrongkeys.npz"
    np.savez(path, images=np.zeros((3, 28, 28), np.uint8), labels=np.zeros(3, np.uint8))
    with pytest.raises(ConfigError) as info:
        load_dataset(f"mnist:{path}")
    msg = str(info.value)
    assert str(path) in msg and "'images'" in msg and "'labels'" in msg
    assert "lacks ['x_train', 'y_train', 'x_test', 'y_test']" in msg
    assert "tf-keras-datasets" in msg


def test_mnist_without_a_path_says_how_to_pass_one():
    with pytest.raises(ConfigError, match="needs the path"):
        load_dataset("mnist")


def test_mismatched_lengths_are_refused(tmp_path):
    path = tmp_path / "mismatch.npz"
    _write_npz(path, y_train=np.zeros(5, np.uint8))
    with pytest.raises(ConfigError, match="x_train has 20 examples but y_train has 5"):
        load_dataset(f"npz:{path}")


def test_user_loader_by_import_path_is_called_with_its_kwargs(tmp_path, monkeypatch):
    (tmp_path / "my_cifar_like.py").write_text(
        textwrap.dedent(
            """
            import numpy as np

            def load(n=12):
                rng = np.random.default_rng(1)
                x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
                y = np.arange(n) % 10
                return {"x_train": x, "y_train": y, "x_test": x[:4], "y_test": y[:4]}
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    x_train, y_train, x_test, y_test = load_dataset({"name": "my_cifar_like:load", "kwargs": {"n": 30}})
    assert x_train.shape == (30, 32, 32, 3) and x_train.dtype == np.float32 and x_train.max() <= 1.0
    assert y_train.dtype == np.int32 and x_test.shape == (4, 32, 32, 3)


def test_user_loader_that_cannot_be_imported_says_so():
    with pytest.raises(ConfigError, match="cannot import the dataset loader module 'no_such_pkg_xyz.data'"):
        load_dataset("no_such_pkg_xyz.data:load")


def test_unknown_dataset_name_lists_the_valid_forms():
    with pytest.raises(ConfigError) as info:
        load_dataset("cifar10")
    assert "'cifar10'" in str(info.value) and "digits" in str(info.value) and "mnist:" in str(info.value)


def test_unknown_spec_key_lists_the_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['sub'\]"):
        normalize_spec({"name": "digits", "sub": 10})


def test_real_mnist_has_the_documented_shapes(mnist_path):
    x_train, y_train, x_test, y_test = load_dataset({"name": "mnist", "path": str(mnist_path)})
    assert x_train.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
    assert x_train.dtype == np.float32 and float(x_train.max()) == pytest.approx(1.0)
    assert np.bincount(y_train).tolist()[:2] == [5923, 6742]
