"""Resolving objects by import path or short name, with clear errors."""

from __future__ import annotations

import importlib
from typing import Any

from toolkit.errors import ConfigError, did_you_mean

SEARCHERS = {
    "random": "toolkit.searchers:RandomSearcher",
    "grid": "toolkit.searchers:GridSearcher",
    "evolution": "toolkit.searchers:EvolutionSearcher",
    "optuna": "toolkit.searchers:OptunaSearcher",
    "tpe": "toolkit.searchers:OptunaSearcher",
}
EVALUATORS = {
    "synthetic": "toolkit.evaluators.synthetic:SyntheticEvaluator",
    "keras": "toolkit.evaluators.keras:KerasClassifierEvaluator",
}
SCHEDULERS = {
    "asha": "toolkit.schedulers:ASHA",
    "hyperband": "toolkit.schedulers:Hyperband",
    "sh": "toolkit.schedulers:SuccessiveHalving",
    "successive_halving": "toolkit.schedulers:SuccessiveHalving",
}


def import_object(path: str, what: str = "object") -> Any:
    """Import ``"package.module:attr.sub"`` (or ``"package.module.attr"``).

    Examples
    --------
    >>> import_object("toolkit.spaces:conv_net").__name__
    'conv_net'
    """
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"the {what} must be an import path such as 'mypkg.spaces:my_space'; got {path!r}.")
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(
            f"the {what} {path!r} is not an import path; write it as 'package.module:name', "
            "for example 'toolkit.spaces:conv_net'."
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"the {what} {path!r} does not resolve: module {exc.name!r} cannot be imported. "
            "Check the spelling, and that the module is on PYTHONPATH (or installed) on this machine."
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            raise ConfigError(
                f"the {what} {path!r} does not resolve: {module_name!r} has no attribute {part!r}"
                f"{did_you_mean(part, names)}."
            )
        obj = getattr(obj, part)
    return obj


def resolve(kind: str, name: str, registry: dict[str, str]) -> Any:
    """A short name from ``registry`` or an import path, to the object it names."""
    if isinstance(name, str) and name in registry:
        return import_object(registry[name], kind)
    if isinstance(name, str) and (":" in name or "." in name):
        return import_object(name, kind)
    raise ConfigError(
        f"unknown {kind} {name!r}{did_you_mean(str(name), registry)}; "
        f"use one of {sorted(registry)} or an import path such as 'mypkg.module:MyClass'."
    )


def qualified_name(obj: Any) -> str:
    """``module:qualname`` of a class or function (of an instance's class)."""
    cls = obj if isinstance(obj, type) or callable(obj) and hasattr(obj, "__qualname__") else type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"
