"""The evaluator protocol: what a worker runs for one trial.

An evaluator is a picklable callable. The runner sends it to a worker with the
trial's architecture and calls::

    result = evaluator(arch, config=config, budget=budget, trial_dir=trial_dir,
                       seed=seed, resume=resume)

* ``arch`` is the JSON architecture that ``SearchSpace.replay(config)`` gave;
* ``budget`` is the number of epochs to train *up to* (``None``: the
  evaluator's own default);
* ``trial_dir`` is the trial's folder on the shared filesystem, for
  checkpoints and artefacts;
* ``seed`` is the trial's seed (derived from the experiment's seed and the
  trial id);
* ``resume`` asks to continue from the checkpoint in ``trial_dir`` (a
  multi-fidelity promotion) instead of starting afresh.

It returns a flat ``dict``: the objective metric, plus optionally
``history`` (``{"epoch": [1, 2, ...], "loss": [...], ...}``), ``best_epoch``,
``epochs``, ``num_params`` and anything else JSON-able. Raising an exception
fails the trial; the search goes on.

Following scikit-learn, ``__init__`` only stores its keyword arguments, so an
evaluator can be printed, compared and rebuilt from ``get_params()`` (which is
what ``experiment.json`` records).
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

from toolkit.errors import ConfigError, did_you_mean


class Evaluator:
    """Base class for evaluators. Subclasses implement :meth:`__call__`.

    Attributes
    ----------
    resources
        Dask worker resources one trial needs, for example ``{"GPU": 1}``. The
        runner asks for them only when the cluster's workers advertise them.
    """

    resources: ClassVar[dict[str, float]] = {}

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [
            p.name
            for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]

    def get_params(self) -> dict[str, Any]:
        """The keyword arguments this evaluator was built with."""
        return {name: getattr(self, name) for name in self._param_names()}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Evaluator:
        """Build from keyword arguments, refusing unknown ones with the valid list."""
        valid = cls._param_names()
        for key in params:
            if key not in valid:
                raise ConfigError(
                    f"{cls.__name__} has no parameter {key!r}{did_you_mean(key, valid)}; "
                    f"valid parameters are {valid}."
                )
        return cls(**params)

    def __call__(
        self,
        arch: Any,
        *,
        config: dict[str, Any],
        budget: float | None = None,
        trial_dir: str | None = None,
        seed: int = 0,
        resume: bool = False,
    ) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.get_params() == self.get_params()

    __hash__ = None  # type: ignore[assignment]
