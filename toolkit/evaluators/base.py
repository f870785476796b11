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

from typing import Any, ClassVar

from toolkit.params import Params


class Evaluator(Params):
    """Base class for evaluators. Subclasses implement :meth:`__call__`.

    Attributes
    ----------
    resources
        Dask worker resources one trial needs, for example ``{"GPU": 1}``. The
        runner asks for them only when the cluster's workers advertise them.
    """

    resources: ClassVar[dict[str, float]] = {}

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
