"""Keyword-argument objects in the scikit-learn style, shared by searchers, schedulers and evaluators.

``__init__`` only stores its keyword arguments, so an object can be printed,
compared and rebuilt from :meth:`Params.get_params` (which is what
``experiment.json`` records); :meth:`Params.from_params` refuses unknown
parameters with the valid list and then calls the :meth:`Params.validate` hook.

Examples
--------
>>> class Halver(Params):
...     def __init__(self, eta=3):
...         self.eta = eta
>>> Halver.from_params({"eta": 2})
Halver(eta=2)
>>> Halver.from_params({"eat": 2})
Traceback (most recent call last):
...
toolkit.errors.ConfigError: Halver has no parameter 'eat' (did you mean 'eta'?); valid parameters are ['eta'].
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from toolkit.errors import ConfigError, did_you_mean

__all__ = ["Params"]


class Params:
    """Base class: parameters are the keyword arguments of ``__init__``, stored as attributes."""

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [
            p.name
            for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]

    @classmethod
    def valid_params(cls, params: Mapping[str, Any] | None = None) -> list[str]:
        """The parameter names :meth:`from_params` accepts (``params`` lets a subclass depend on them)."""
        return cls._param_names()

    def get_params(self) -> dict[str, Any]:
        """The keyword arguments this object was built with."""
        return {name: getattr(self, name) for name in self._param_names()}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Any:
        """Build from keyword arguments, refusing unknown ones, then :meth:`validate`."""
        if not isinstance(params, Mapping):
            raise ConfigError(
                f"{cls.__name__} parameters must be a mapping {{name: value}}; got {params!r}. "
                f"Valid parameters are {cls.valid_params()}."
            )
        valid = cls.valid_params(params)
        for key in params:
            if key not in valid:
                raise ConfigError(
                    f"{cls.__name__} has no parameter {key!r}{did_you_mean(key, valid)}; "
                    f"valid parameters are {valid}."
                )
        obj = cls(**params)
        obj.validate()
        return obj

    def validate(self) -> None:
        """Raise :class:`~toolkit.errors.ConfigError` for invalid settings; a no-op by default."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.get_params() == self.get_params()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]
