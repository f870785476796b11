"""The search core: define-by-run spaces, configs, replay, fingerprints and their errors."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from toolkit.errors import ConfigError, SpaceError
from toolkit.space import HP, Bool, Choice, Float, Int, SearchSpace
from toolkit.spaces import conv_net
from toolkit.testing.searchers import conditional_space

ROOT = Path(__file__).resolve().parents[1]
MNIST = SearchSpace(conv_net, num_classes=10)


def _python(code: str, **env: str) -> str:
    """Run ``code`` in a fresh interpreter at the repository root and return its stdout."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


# --------------------------------------------------------------------------- no TensorFlow in the search process


def test_the_search_process_never_imports_tensorflow() -> None:
    code = """
import sys
import toolkit, toolkit.spaces, toolkit.searchers
from toolkit import SearchSpace
from toolkit.searchers import EvolutionSearcher, GridSearcher, OptunaSearcher, RandomSearcher
space = SearchSpace(toolkit.spaces.conv_net, num_classes=10)
for s in (RandomSearcher(seed=0), EvolutionSearcher(seed=0), OptunaSearcher(seed=0),
          GridSearcher(values={"dropout": [0.1], "learning_rate": [1e-3]})):
    s.setup(space)
    space.replay(s.ask())
print(sorted(m for m in sys.modules if m == "tensorflow" or m.startswith(("tensorflow.", "keras"))))
"""
    assert _python(code) == "[]"


# --------------------------------------------------------------------------- configs


def test_a_thousand_mnist_configs_survive_a_json_round_trip_unchanged() -> None:
    rng = random.Random(0)
    for _ in range(1000):
        config = MNIST.sample(rng)
        back = json.loads(json.dumps(config))
        assert back == config
        assert list(back) == list(config)
        for name, value in config.items():
            assert type(value) in (int, float, str, bool), (name, type(value))
            assert type(back[name]) is type(value), (name, value, back[name])


def test_mnist_config_types_are_plain_python() -> None:
    config = MNIST.sample(1)
    assert type(config["conv_blocks"]) is int and type(config["conv0/filters"]) is int
    assert type(config["dropout"]) is float and type(config["conv0/batch_norm"]) is bool


def test_replay_reproduces_the_sampled_architecture() -> None:
    rng = random.Random(1)
    for _ in range(200):
        config, arch = MNIST.sample_with_arch(rng)
        journaled = json.loads(json.dumps(config))
        assert MNIST.replay(journaled) == arch
        assert len(arch["conv"]) == config["conv_blocks"] and len(arch["dense"]) == config["dense_layers"]


def test_sampling_is_deterministic_for_a_seed_and_takes_a_numpy_generator() -> None:
    assert MNIST.sample(5) == MNIST.sample(5) == MNIST.sample(random.Random(5))
    assert MNIST.sample(np.random.default_rng(3)) == MNIST.sample(np.random.default_rng(3))
    assert MNIST.sample(1) != MNIST.sample(2)


def test_a_bad_rng_is_refused_with_an_example() -> None:
    with pytest.raises(TypeError, match=r"rng must be None, an int seed.*got 'seed'.*space.sample\(rng=0\)"):
        MNIST.sample("seed")


def test_a_shared_hyperparameter_has_one_value() -> None:
    def shared(hp: HP) -> dict[str, Any]:
        return {"a": hp.int("width", 1, 100), "b": hp.int("width", 1, 100)}

    config, arch = SearchSpace(shared).sample_with_arch(0)
    assert list(config) == ["width"] and arch["a"] == arch["b"] == config["width"]


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_is_identical_in_processes_with_different_hash_seeds() -> None:
    code = (
        "from toolkit.space import SearchSpace; from toolkit.spaces import conv_net; "
        "from toolkit.testing.searchers import conditional_space; "
        "print(SearchSpace(conv_net, num_classes=10).fingerprint, conditional_space().fingerprint)"
    )
    one = _python(code, PYTHONHASHSEED="1")
    two = _python(code, PYTHONHASHSEED="4242")
    assert one == two == f"{MNIST.fingerprint} {conditional_space().fingerprint}"
    assert len(MNIST.fingerprint) == 16 and int(MNIST.fingerprint, 16) >= 0


def _variant(**o: Any) -> SearchSpace:
    """A space with every kind of domain, one of which ``o`` changes."""

    def fn(hp: HP, width: int = 8) -> dict[str, Any]:
        return {
            "opt": hp.choice(o.get("opt_name", "opt"), o.get("opt", ["adam", "sgd"])),
            "n": hp.int("n", 1, o.get("n_high", 4), step=o.get("n_step", 1)),
            "lr": hp.float("lr", o.get("lr_low", 1e-4), 1e-1, log=o.get("lr_log", True)),
            "bn": hp.choice("bn", [False, True]) if o.get("bn_choice") else hp.bool("bn"),
            "extra": hp.optional("extra", lambda h: h.choice("k", o.get("k", [3, 5]))),
            "width": width,
        }

    return SearchSpace(fn, **o.get("kwargs", {}))


@pytest.mark.parametrize(
    "change",
    [
        {"opt": ["adam", "sgd", "rmsprop"]},
        {"opt": ["sgd", "adam"]},
        {"opt_name": "optimizer"},
        {"n_high": 5},
        {"n_step": 3},
        {"lr_low": 1e-5},
        {"lr_log": False},
        {"bn_choice": True},
        {"k": [3, 7]},
        {"kwargs": {"width": 16}},
    ],
    ids=lambda c: next(iter(c)),
)
def test_fingerprint_changes_when_any_domain_changes(change: dict[str, Any]) -> None:
    assert _variant().fingerprint == _variant().fingerprint
    assert _variant(**change).fingerprint != _variant().fingerprint


# --------------------------------------------------------------------------- domain errors


def _first_sample(fn: Any) -> Any:
    return SearchSpace(fn).sample(0)


@pytest.mark.parametrize(
    ("declare", "error", "message"),
    [
        (lambda hp: hp.choice("x", []), SpaceError, r"choice options must not be empty; got \[\]"),
        (lambda hp: hp.choice("x", "adam"), SpaceError, r"must be a list of values; got 'adam'"),
        (lambda hp: hp.choice("x", [1, 1]), SpaceError, r"must be distinct; 1 appears twice in \[1, 1\]"),
        (lambda hp: hp.int("x", 5, 1), SpaceError, r"int low must be <= high; got low=5, high=1\. Swap them"),
        (lambda hp: hp.float("x", 1.0, 0.5), SpaceError, r"float low must be <= high; got low=1.0, high=0.5"),
        (lambda hp: hp.int("x", 0, 8, log=True), SpaceError, r"log scale needs low > 0; got low=0, high=8"),
        (lambda hp: hp.float("x", 0.0, 1.0, log=True), SpaceError, r"log scale needs low > 0; got low=0.0"),
        (lambda hp: hp.int("x", 1, 8, step=0), SpaceError, r"int step must be >= 1; got step=0"),
        (lambda hp: hp.int("x", 1.5, 8), SpaceError, r"int low must be an int; got 1.5\. Use hp.float"),
        (
            lambda hp: hp.float("x", 0.0, float("inf")),
            SpaceError,
            r"float high must be a finite number; got inf",
        ),
        (lambda hp: hp.int("", 1, 2), SpaceError, r"names must be non-empty strings; got ''"),
    ],
    ids=[
        "empty-options",
        "options-not-a-list",
        "duplicate-options",
        "int-low-above-high",
        "float-low-above-high",
        "int-log-low-zero",
        "float-log-low-zero",
        "int-step-zero",
        "int-float-bound",
        "float-infinite",
        "empty-name",
    ],
)
def test_a_malformed_domain_is_refused_with_its_message(declare: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        _first_sample(declare)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ([object()], r"choice options must be JSON scalars .*got <object object at .*> of type object"),
        ([1, [2, 3]], r"got \[2, 3\] of type list in \[1, \[2, 3\]\]\. Use a string key instead"),
        ([0.5, float("nan")], r"got nan of type float"),
    ],
    ids=["object", "list", "nan"],
)
def test_choice_options_that_are_not_json_scalars_are_refused(options: list[Any], message: str) -> None:
    with pytest.raises(SpaceError, match=message):
        _first_sample(lambda hp: hp.choice("x", options))


def test_one_name_with_two_domains_in_one_run_is_refused() -> None:
    def clash(hp: HP) -> list[int]:
        return [hp.int("units", 1, 8), hp.int("units", 1, 16)]

    with pytest.raises(
        SpaceError,
        match=r"'units' is declared with two different domains: Int\(low=1, high=8, step=1, log=False\) "
        r"and Int\(low=1, high=16, step=1, log=False\)\. Give each a name of its own",
    ):
        _first_sample(clash)


def test_one_name_with_two_domains_in_different_branches_is_refused_by_describe() -> None:
    def clash(hp: HP) -> Any:
        if hp.bool("wide"):
            return hp.int("units", 1, 512)
        return hp.int("units", 1, 64)

    with pytest.raises(
        SpaceError, match=r"'units' is declared with two different domains in different branches"
    ):
        SearchSpace(clash).describe()


def test_space_kwargs_must_be_json_able() -> None:
    with pytest.raises(SpaceError, match=r"keyword arguments must be JSON-able .*got \{'shape': \{1, 2\}\}"):
        SearchSpace(conv_net, shape={1, 2})


def test_a_space_needs_a_function() -> None:
    with pytest.raises(SpaceError, match=r"needs a function fn\(hp, \*\*kwargs\); got 3"):
        SearchSpace(3)  # type: ignore[arg-type]


def test_an_architecture_that_is_not_json_able_is_refused() -> None:
    with pytest.raises(
        SpaceError, match=r"returned an architecture that is not JSON-able.*Return dicts, lists"
    ):
        SearchSpace(lambda hp: {"layer": object(), "n": hp.int("n", 1, 2)}).describe()


# --------------------------------------------------------------------------- replay errors


def test_replay_refuses_a_missing_value_naming_it_and_the_fingerprint() -> None:
    config = MNIST.sample(0)
    del config["learning_rate"]
    with pytest.raises(
        ConfigError,
        match=rf"missing hyperparameter 'learning_rate' \(Float\(.*\)\) that the space {MNIST.fingerprint} asks for",
    ):
        MNIST.replay(config)


def test_replay_refuses_an_extra_value_naming_it_and_the_fingerprint() -> None:
    config = {**MNIST.sample(0), "conv_blocks": 1, "conv2/filters": 32}
    config = {
        k: v for k, v in config.items() if not k.startswith(("conv1/", "conv2/")) or k == "conv2/filters"
    }
    with pytest.raises(
        ConfigError,
        match=rf"has hyperparameter\(s\) \['conv2/filters'\] that the space {MNIST.fingerprint} does not use",
    ):
        MNIST.replay(config)


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("conv0/filters", 40, r"conv0/filters=40 is outside its domain Choice\(options=\[16, 32, 48, 64\]\)"),
        ("conv0/filters", "32", r"conv0/filters='32' is outside its domain"),
        ("conv_blocks", True, r"conv_blocks=True is outside its domain Int\(low=1, high=3"),
        ("dropout", 0.9, r"dropout=0.9 is outside its domain Float\(low=0.0, high=0.5, log=False\)"),
        ("conv0/batch_norm", 1, r"conv0/batch_norm=1 is outside its domain Bool\(\)"),
    ],
)
def test_replay_refuses_an_out_of_domain_value_naming_it_and_the_fingerprint(
    name: str, value: Any, shown: str
) -> None:
    config = {**MNIST.sample(0), name: value}
    with pytest.raises(ConfigError, match=rf"config value {shown}.*\(space {MNIST.fingerprint}\)"):
        MNIST.replay(config)


def test_replay_refuses_a_config_that_is_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match=r"a config must be a mapping \{name: value\}; got list"):
        MNIST.replay([("conv_blocks", 1)])  # type: ignore[arg-type]


def test_replay_accepts_an_int_for_a_float_and_gives_a_float() -> None:
    config = {**MNIST.sample(0), "dropout": 0}
    assert MNIST.replay(config)["dropout"] == 0.0 and type(MNIST.replay(config)["dropout"]) is float


# --------------------------------------------------------------------------- mutate


def _extra(hp: HP) -> dict[str, Any]:
    return {"extra": hp.optional("extra", lambda h: h.int("n", 1, 5))}


def test_mutate_samples_a_hyperparameter_that_becomes_active() -> None:
    space = SearchSpace(_extra)
    for seed in range(10):
        child = space.mutate({"extra": False}, seed)
        assert child["extra"] is True and 1 <= child["extra/n"] <= 5
        space.validate(child)


def test_mutate_drops_a_hyperparameter_that_becomes_inactive() -> None:
    space = SearchSpace(_extra)
    children = [space.mutate({"extra": True, "extra/n": 3}, seed) for seed in range(20)]
    switched_off = [c for c in children if c["extra"] is False]
    assert switched_off and all(c == {"extra": False} for c in switched_off)
    assert all(c["extra/n"] != 3 for c in children if c["extra"])


def test_mutate_changes_exactly_one_hyperparameter_the_parent_and_child_share() -> None:
    rng = random.Random(0)
    for _ in range(300):
        parent = MNIST.sample(rng)
        child = MNIST.mutate(parent, rng)
        MNIST.validate(child)
        changed = [k for k in parent if k in child and parent[k] != child[k]]
        assert len(changed) == 1, (parent, child)


def test_mutate_follows_repeat_counts() -> None:
    parent = MNIST.sample(0)
    children = [MNIST.mutate(parent, seed) for seed in range(200)]
    for child in children:
        assert sum(k.endswith("/filters") for k in child) == child["conv_blocks"]
        assert sum(k.startswith("dense") and k.endswith("/units") for k in child) == child["dense_layers"]
    assert len({c["conv_blocks"] for c in children}) == 3


def test_mutate_is_deterministic_for_a_seed() -> None:
    parent = MNIST.sample(0)
    assert [MNIST.mutate(parent, s) for s in range(20)] == [MNIST.mutate(parent, s) for s in range(20)]


# --------------------------------------------------------------------------- describe, grid, naming


def test_describe_finds_conditional_names() -> None:
    domains = MNIST.describe()
    assert {"conv2/pool", "conv2/filters", "dense1/units", "conv0/kernel_size"} <= set(domains)
    assert domains["conv2/filters"] == Choice([16, 32, 48, 64])
    assert domains["conv1/batch_norm"] == Bool()
    assert domains["learning_rate"] == Float(1e-4, 3e-2, log=True)
    assert domains["dense_layers"] == Int(0, 2)
    assert len(domains) == 19
    assert set(conditional_space().describe()) == {
        "model",
        "model/linear/l2",
        "model/tree/depth",
        "model/tree/prune",
        "model/tree/prune/alpha",
        "scale",
    }


def test_describe_finds_a_branch_behind_a_middle_int_value() -> None:
    def deep(hp: HP) -> Any:
        n = hp.int("n", 0, 100)
        return hp.choice("hidden", ["a", "b"]) if n == 50 else n

    assert "hidden" in SearchSpace(deep).describe()


def test_grid_order_and_count() -> None:
    def small(hp: HP) -> dict[str, Any]:
        return {"act": hp.choice("act", ["relu", "tanh"]), "n": hp.int("n", 1, 3)}

    grid = list(SearchSpace(small).grid())
    assert grid == [
        {"act": "relu", "n": 1},
        {"act": "relu", "n": 2},
        {"act": "relu", "n": 3},
        {"act": "tanh", "n": 1},
        {"act": "tanh", "n": 2},
        {"act": "tanh", "n": 3},
    ]
    assert len(list(conditional_space().grid())) == 24


def test_grid_of_a_repeat_counts_every_copy() -> None:
    def layers(hp: HP) -> Any:
        return hp.repeat("layers", lambda h: h.choice("units", [8, 16]), 0, 2)

    grid = list(SearchSpace(layers).grid())
    assert len(grid) == 1 + 2 + 4
    assert grid[:3] == [{"layers": 0}, {"layers": 1, "layer0/units": 8}, {"layers": 1, "layer0/units": 16}]


def test_grid_of_a_float_needs_its_values() -> None:
    with pytest.raises(ConfigError, match=r"has no finite grid.*GridSearcher\(values="):
        list(MNIST.grid())
    grid = SearchSpace(lambda hp: {"p": hp.float("p", 0.0, 1.0)}).grid({"p": [0.0, 0.5]})
    assert list(grid) == [{"p": 0.0}, {"p": 0.5}]


def test_optional_repeat_one_of_and_scope_naming() -> None:
    def named(hp: HP) -> Any:
        return {
            "opt": hp.optional("aux", lambda h: h.int("k", 1, 3)),
            "rep": hp.repeat("blocks", lambda h: h.bool("bn"), 2, 2),
            "rep_prefix": hp.repeat("hidden_layers", lambda h: h.bool("bn"), 1, 1, prefix="hidden"),
            "rep_no_s": hp.repeat("depth", lambda h: h.bool("skip"), 1, 1),
            "branch": hp.one_of("model", {"cnn": lambda h: h.int("depth", 1, 2), "mlp": lambda h: 0}),
            "scoped": hp.scope("enc").scope("l0").choice("act", ["relu"]),
        }

    names = set(SearchSpace(named).describe())
    assert names == {
        "aux",
        "aux/k",
        "blocks",
        "block0/bn",
        "block1/bn",
        "hidden_layers",
        "hidden0/bn",
        "depth",
        "depth0/skip",
        "model",
        "model/cnn/depth",
        "enc/l0/act",
    }
