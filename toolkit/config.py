"""Experiment files: YAML that describes a search, validated with clear messages.

Example (``conf/experiments/demo.yaml``)::

    name: demo
    space: {fn: toolkit.spaces:conv_net, kwargs: {num_classes: 10}}
    searcher: {name: random}
    evaluator: {name: keras, params: {dataset: digits, epochs: 3}}
    objective: val_accuracy
    mode: max
    budget: {n_trials: 16}

Every mistake names the file and the key, echoes what was received, and says
how to fix it; an unknown key gets a "did you mean".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from toolkit._imports import EVALUATORS, SCHEDULERS, SEARCHERS, import_object, resolve
from toolkit.errors import ConfigError, did_you_mean

__all__ = ["ExperimentConfig", "load_experiment_config"]

TOP_KEYS = {
    "name": "the experiment's name (a folder under log_dir)",
    "space": "{fn: 'package.module:function', kwargs: {...}}",
    "searcher": "{name: random|grid|evolution|optuna, params: {...}}",
    "scheduler": "{name: asha|hyperband|sh, params: {...}} (optional)",
    "evaluator": "{name: keras|synthetic or 'package.module:Class', params: {...}}",
    "objective": "the metric to optimise, such as val_accuracy",
    "mode": "max or min",
    "seed": "an integer",
    "budget": "{n_trials, max_concurrent, timeout, trial_timeout, worker_timeout, max_attempts}",
    "log_dir": "where experiment folders are written",
}
BUDGET_KEYS = (
    "n_trials",
    "max_concurrent",
    "timeout",
    "trial_timeout",
    "worker_timeout",
    "max_attempts",
    "recycle_after",
)
COMPONENT_KEYS = ("name", "params")


class ExperimentConfig:
    """A validated experiment file, able to build its :class:`~toolkit.Experiment`."""

    def __init__(self, data: dict[str, Any], source: str):
        self.data = data
        self.source = source

    def _err(self, msg: str) -> ConfigError:
        return ConfigError(f"{self.source}: {msg}")

    @property
    def budget(self) -> dict[str, Any]:
        return dict(self.data.get("budget") or {})

    def build(self, log_dir: str | None = None) -> Any:
        """The :class:`~toolkit.Experiment` this file describes."""
        from toolkit.experiment import Experiment
        from toolkit.space import SearchSpace

        d = self.data
        seed = d.get("seed", 0)
        sp = d["space"]
        try:
            fn = import_object(sp["fn"], "space")
        except ConfigError as exc:
            raise self._err(f"space.fn: {exc}") from None
        if not callable(fn):
            raise self._err(f"space.fn {sp['fn']!r} is not a function; it resolved to {fn!r}.")
        kwargs = dict(sp.get("kwargs") or {})
        _check_space_kwargs(fn, kwargs, sp["fn"], self.source)
        space = SearchSpace(fn, **kwargs)
        searcher = self._component("searcher", SEARCHERS, default_params={"seed": seed})
        scheduler = self._component("scheduler", SCHEDULERS)
        evaluator = self._component("evaluator", EVALUATORS)
        budget = self.budget
        return Experiment(
            d["name"],
            space,
            evaluator,
            searcher=searcher,
            scheduler=scheduler,
            objective=d.get("objective", "val_accuracy"),
            mode=d.get("mode", "max"),
            log_dir=log_dir or d.get("log_dir", "logs"),
            seed=seed,
            max_attempts=budget.get("max_attempts", 3),
            trial_timeout=budget.get("trial_timeout"),
            worker_timeout=budget.get("worker_timeout", 600.0),
            recycle_after=budget.get("recycle_after"),
        )

    def _component(self, key: str, registry: dict[str, str], default_params: dict | None = None) -> Any:
        spec = self.data.get(key)
        if spec is None:
            return None
        name, params = spec["name"], dict(spec.get("params") or {})
        try:
            cls = resolve(key, name, registry)
        except ConfigError as exc:
            raise self._err(f"{key}.name: {exc}") from None
        if default_params and "seed" in _param_names(cls):
            for k, v in default_params.items():
                params.setdefault(k, v)
        try:
            obj = cls.from_params(params) if hasattr(cls, "from_params") else cls(**params)
            if key == "evaluator":
                from toolkit.experiment import check_evaluator

                check_evaluator(obj)  # bad settings and dataset files fail here, before any trial
            return obj
        except ConfigError as exc:
            raise self._err(f"{key} {name!r}: {exc}") from None
        except TypeError as exc:
            raise self._err(f"{key} {name!r} refused its params {params!r}: {exc}") from None


def _check_space_kwargs(fn: Any, kwargs: dict[str, Any], path: str, source: str) -> None:
    """Refuse space.kwargs that the space function does not take (instead of a TypeError later)."""
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(None, **kwargs)
    except TypeError as exc:
        valid = [n for n, p in list(sig.parameters.items())[1:] if p.kind != p.VAR_POSITIONAL]
        bad = next((k for k in kwargs if k not in sig.parameters), None)
        hint = did_you_mean(bad, valid) if bad else ""
        raise ConfigError(
            f"{source}: space.kwargs {kwargs!r} do not fit the space function {path!r}: {exc}{hint}. "
            f"It takes hp and then {valid or 'nothing else'}."
        ) from None


def _param_names(cls: Any) -> list[str]:
    import inspect

    try:
        return list(inspect.signature(cls.__init__).parameters)
    except (TypeError, ValueError):
        return []


def _check_keys(data: Mapping[str, Any], valid: Any, where: str, source: str) -> None:
    for key in data:
        if key not in valid:
            raise ConfigError(
                f"{source}: unknown key '{where}{key}'{did_you_mean(str(key), valid)}; "
                f"valid keys{' of ' + where.rstrip('.') if where else ''} are {sorted(valid)}."
            )


def _component(data: dict[str, Any], key: str, source: str, required: bool) -> dict[str, Any] | None:
    value = data.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{source}: missing key {key!r}; give it as {TOP_KEYS[key]}.")
        return None
    if isinstance(value, str):
        return {"name": value, "params": {}}
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{source}: {key} must be a mapping {TOP_KEYS[key]}; got {type(value).__name__} {value!r}."
        )
    _check_keys(value, COMPONENT_KEYS, f"{key}.", source)
    if not isinstance(value.get("name"), str):
        raise ConfigError(f"{source}: {key}.name must be a string; got {value.get('name')!r}.")
    params = value.get("params") or {}
    if not isinstance(params, Mapping):
        raise ConfigError(
            f"{source}: {key}.params must be a mapping; got {type(params).__name__} {params!r}."
        )
    return {"name": value["name"], "params": dict(params)}


def _positive_int(value: Any, key: str, source: str, optional: bool = True) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(
            f"{source}: {key} must be a positive integer; got {value!r}. For example {key}: 16."
        )


def parse_experiment_config(data: Any, source: str = "<config>") -> ExperimentConfig:
    """Validate a loaded mapping (the contents of an experiment file)."""
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: an experiment file must be a YAML mapping with keys {sorted(TOP_KEYS)}; "
            f"got {type(data).__name__}."
        )
    data = dict(data)
    _check_keys(data, TOP_KEYS, "", source)
    for key in ("name", "space", "evaluator"):
        if key not in data:
            raise ConfigError(f"{source}: missing key {key!r}; give it as {TOP_KEYS[key]}.")
    if not isinstance(data["name"], str) or not data["name"]:
        raise ConfigError(f"{source}: name must be a non-empty string; got {data['name']!r}.")
    space = data["space"]
    if isinstance(space, str):
        space = {"fn": space}
    if not isinstance(space, Mapping):
        raise ConfigError(f"{source}: space must be a mapping {TOP_KEYS['space']}; got {space!r}.")
    _check_keys(space, ("fn", "kwargs"), "space.", source)
    if not isinstance(space.get("fn"), str):
        raise ConfigError(
            f"{source}: space.fn must be an import path string such as 'toolkit.spaces:conv_net'; "
            f"got {space.get('fn')!r}."
        )
    if space.get("kwargs") is not None and not isinstance(space["kwargs"], Mapping):
        raise ConfigError(f"{source}: space.kwargs must be a mapping; got {space['kwargs']!r}.")
    data["space"] = dict(space)
    data["searcher"] = _component(data, "searcher", source, required=False) or {
        "name": "random",
        "params": {},
    }
    data["scheduler"] = _component(data, "scheduler", source, required=False)
    data["evaluator"] = _component(data, "evaluator", source, required=True)
    if data.get("mode", "max") not in ("max", "min"):
        raise ConfigError(f"{source}: mode must be 'max' or 'min'; got {data['mode']!r}.")
    if "objective" in data and not isinstance(data["objective"], str):
        raise ConfigError(f"{source}: objective must be a metric name string; got {data['objective']!r}.")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{source}: seed must be an integer; got {seed!r}.")
    budget = data.get("budget") or {}
    if not isinstance(budget, Mapping):
        raise ConfigError(f"{source}: budget must be a mapping {TOP_KEYS['budget']}; got {budget!r}.")
    _check_keys(budget, BUDGET_KEYS, "budget.", source)
    _positive_int(budget.get("n_trials"), "budget.n_trials", source)
    _positive_int(budget.get("max_concurrent"), "budget.max_concurrent", source)
    _positive_int(budget.get("max_attempts"), "budget.max_attempts", source)
    _positive_int(budget.get("recycle_after"), "budget.recycle_after", source)
    for key in ("timeout", "trial_timeout", "worker_timeout"):
        v = budget.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0):
            raise ConfigError(f"{source}: budget.{key} must be a positive number of seconds; got {v!r}.")
    data["budget"] = dict(budget)
    if "log_dir" in data and not isinstance(data["log_dir"], str):
        raise ConfigError(f"{source}: log_dir must be a path string; got {data['log_dir']!r}.")
    return ExperimentConfig(data, source)


def load_experiment_config(path: str | os.PathLike[str]) -> ExperimentConfig:
    """Read and validate an experiment YAML file (``yaml.safe_load`` only)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"experiment file {str(path)!r} does not exist. Give a YAML file such as conf/experiments/demo.yaml."
        )
    try:
        text = path.read_text()
    except (UnicodeDecodeError, OSError) as exc:
        raise ConfigError(
            f"experiment file {str(path)!r} cannot be read as text ({type(exc).__name__}: {exc}). "
            "Give a YAML file such as conf/experiments/demo.yaml."
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if "could not determine a constructor for the tag" in problem:
            raise ConfigError(
                f"{path}: refused{where}: {problem}. Experiment files are read with yaml.safe_load, which "
                "never builds Python objects from tags such as !!python/object; write plain values "
                "(strings, numbers, lists, mappings) and name classes by import path, "
                "e.g. evaluator: {name: 'mypkg.module:MyEvaluator'}."
            ) from None
        raise ConfigError(
            f"{path}: malformed YAML{where}: {problem}. Check the indentation and the ':' after each key."
        ) from None
    return parse_experiment_config(data, str(path))
