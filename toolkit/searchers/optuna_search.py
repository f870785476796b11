"""A model-based searcher on Optuna's samplers (TPE by default), through its ask/tell API.

Optuna is imported when the searcher is set up, not when this module is
imported, so ``import toolkit.searchers`` stays cheap.

Examples
--------
>>> from toolkit.space import SearchSpace
>>> from toolkit.spaces import conv_net
>>> from toolkit.trial import Objective
>>> s = OptunaSearcher(seed=0)
>>> s.setup(SearchSpace(conv_net), Objective("val_accuracy", "max"))
>>> config = s.ask()
>>> s.space_.validate(config)
>>> s.study_.trials[0].state.name
'RUNNING'
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from toolkit.errors import ConfigError, did_you_mean
from toolkit.searchers.base import TOLD_STATUSES, AskBook, Config, Searcher, status_of
from toolkit.space import Bool, Choice, Domain, Float, Int
from toolkit.trial import Trial, TrialStatus

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

__all__ = ["OptunaSearcher"]

SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler"}
"""Sampler names :class:`OptunaSearcher` accepts, and the ``optuna.samplers`` class of each."""

TPE_DEFAULTS: dict[str, Any] = {"constant_liar": True, "multivariate": False}
"""Our defaults for ``TPESampler``; keyword arguments given to :class:`OptunaSearcher` override them.

``constant_liar`` makes pending trials count as bad ones, so workers that ask at
the same time spread out. The independent (``multivariate=False``) TPE is the
one made for tree-structured, conditional spaces, and it is the one with which
:meth:`OptunaSearcher.restore` is exact while trials are pending.
"""


def _sampler_class(name: str) -> type:
    import optuna

    return getattr(optuna.samplers, SAMPLERS[name])


def _sampler_param_names(name: str) -> list[str]:
    sig = inspect.signature(_sampler_class(name).__init__)
    return [
        p.name
        for p in sig.parameters.values()
        if p.name not in ("self", "seed") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def _distribution(dom: Domain) -> BaseDistribution:
    """The Optuna distribution of one of our domains."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(dom, Bool):
        return CategoricalDistribution([False, True])
    if isinstance(dom, Choice):
        return CategoricalDistribution(list(dom.options))
    if isinstance(dom, Int):
        return IntDistribution(dom.low, dom.high, log=dom.log, step=dom.step)
    if isinstance(dom, Float):
        return FloatDistribution(dom.low, dom.high, log=dom.log)
    raise ConfigError(
        f"OptunaSearcher cannot map the domain {dom!r} onto an Optuna distribution; "
        "use hp.choice, hp.int, hp.float or hp.bool in the space."
    )


def _suggest(trial: optuna.Trial, name: str, dom: Domain) -> Any:
    """Ask an Optuna trial for a value of ``name``, as a plain Python value inside ``dom``."""
    if isinstance(dom, Bool):
        return bool(trial.suggest_categorical(name, [False, True]))
    if isinstance(dom, Choice):
        return trial.suggest_categorical(name, list(dom.options))
    if isinstance(dom, Int):
        return int(trial.suggest_int(name, dom.low, dom.high, step=dom.step, log=dom.log))
    if isinstance(dom, Float):
        return float(trial.suggest_float(name, dom.low, dom.high, log=dom.log))
    return _distribution(dom)  # raises the error for an unknown domain


class OptunaSearcher(Searcher):
    """Optuna's samplers driving a define-by-run space, with an in-memory study.

    Each ask runs the space function against an Optuna trial: ``hp.choice`` and
    ``hp.bool`` become ``suggest_categorical``, ``hp.int`` ``suggest_int`` and
    ``hp.float`` ``suggest_float``, so conditional hyperparameters are
    suggested only when their branch runs. Pending trials stay ``RUNNING`` in
    the study (TPE's constant liar treats them as bad ones); failed trials and
    trials without a value are told as ``FAIL``; a stopped trial with a value is
    told as complete with that value. When a trial is told more than once
    (once per rung), the first value is kept.

    For a named sampler, ask number ``k`` gets a fresh sampler seeded from
    ``(seed, k)``, so the same seed and history give the same asks, and
    :meth:`restore` rebuilds the study from a journal.

    Parameters
    ----------
    sampler
        ``"tpe"`` (``TPESampler`` with :data:`TPE_DEFAULTS`) or ``"random"``; or
        a callable ``seed -> optuna sampler``, called for every ask; or an
        Optuna sampler instance, used as is (its own state then decides, so
        replay is only as exact as that sampler is).
    seed
        The search's seed; ``None`` draws one at :meth:`setup` (``seed_``).
    **sampler_kwargs
        Keyword arguments of the named sampler's class, for example
        ``n_startup_trials=5``.

    Attributes
    ----------
    study_
        The in-memory ``optuna.Study`` (set by :meth:`setup`).

    Examples
    --------
    >>> from toolkit.space import SearchSpace
    >>> from toolkit.trial import Objective, Trial, TrialStatus
    >>> space = SearchSpace(lambda hp: {"x": hp.float("x", -1.0, 1.0)})
    >>> s = OptunaSearcher(seed=0, n_startup_trials=3)
    >>> s.setup(space, Objective("loss", "min"))
    >>> for i in range(6):
    ...     config = s.ask()
    ...     s.tell(Trial(i, config, TrialStatus.FINISHED, value=config["x"] ** 2))
    >>> len(s.study_.trials), s.study_.direction.name
    (6, 'MINIMIZE')
    >>> OptunaSearcher(sampler="tpe", n_startup_trails=3).setup(space)
    Traceback (most recent call last):
        ...
    toolkit.errors.ConfigError: OptunaSearcher(sampler='tpe') got the unknown sampler keyword argument 'n_startup_trails' (did you mean 'n_startup_trials'?); TPESampler accepts ['consider_prior', 'prior_weight', 'consider_magic_clip', 'consider_endpoints', 'n_startup_trials', 'n_ei_candidates', 'gamma', 'weights', 'multivariate', 'group', 'warn_independent_sampling', 'constant_liar', 'constraints_func'].
    """

    def __init__(
        self,
        sampler: str | Callable[[int], Any] | Any = "tpe",
        seed: int | None = None,
        **sampler_kwargs: Any,
    ):
        self.sampler = sampler
        self.seed = seed
        self.sampler_kwargs = sampler_kwargs

    # -- parameters ----------------------------------------------------------------------
    @classmethod
    def valid_params(cls, params: Mapping[str, Any] | None = None) -> list[str]:
        """``sampler``, ``seed`` and the keyword arguments of the named sampler (TPE when not given).

        Examples
        --------
        >>> OptunaSearcher.valid_params({"sampler": "random"})
        ['sampler', 'seed']
        """
        sampler = (params or {}).get("sampler", "tpe")
        names = ["sampler", "seed"]
        if isinstance(sampler, str) and sampler in SAMPLERS:
            names += _sampler_param_names(sampler)
        return names

    def get_params(self) -> dict[str, Any]:
        """``sampler``, ``seed`` and the sampler keyword arguments, flat.

        Examples
        --------
        >>> OptunaSearcher(seed=1, n_startup_trials=5).get_params()
        {'sampler': 'tpe', 'seed': 1, 'n_startup_trials': 5}
        """
        return {"sampler": self.sampler, "seed": self.seed, **self.sampler_kwargs}

    def validate(self) -> None:
        super().validate()
        from optuna.samplers import BaseSampler

        s = self.sampler
        if isinstance(s, str):
            if s not in SAMPLERS:
                raise ConfigError(
                    f"OptunaSearcher has no sampler {s!r}{did_you_mean(s, SAMPLERS)}; use one of "
                    f"{sorted(SAMPLERS)}, an optuna sampler instance, or a callable seed -> sampler, "
                    "for example OptunaSearcher(sampler='tpe', seed=0)."
                )
            valid = _sampler_param_names(s)
            for key in self.sampler_kwargs:
                if key not in valid:
                    raise ConfigError(
                        f"OptunaSearcher(sampler={s!r}) got the unknown sampler keyword argument {key!r}"
                        f"{did_you_mean(key, valid)}; {SAMPLERS[s]} accepts {valid}."
                    )
        elif isinstance(s, BaseSampler) or callable(s):
            if self.sampler_kwargs:
                raise ConfigError(
                    f"OptunaSearcher got sampler keyword arguments {sorted(self.sampler_kwargs)} with a "
                    f"sampler {s!r} that is not a name; they apply only to a named sampler such as "
                    "OptunaSearcher(sampler='tpe', n_startup_trials=5). Configure the sampler you pass instead."
                )
        else:
            raise ConfigError(
                f"OptunaSearcher sampler must be one of {sorted(SAMPLERS)}, an optuna sampler instance or "
                f"a callable seed -> sampler; got {s!r}."
            )

    # -- lifecycle -----------------------------------------------------------------------
    def _sampler_for(self, k: int) -> Any:
        """The sampler of ask number ``k``."""
        from optuna.samplers import BaseSampler

        s = self.sampler
        if isinstance(s, BaseSampler):
            return s
        seed = self.rng_for(k).getrandbits(32)
        if isinstance(s, str):
            kwargs = {**TPE_DEFAULTS, **self.sampler_kwargs} if s == "tpe" else dict(self.sampler_kwargs)
            return _sampler_class(s)(seed=seed, **kwargs)
        sampler = s(seed)
        if not isinstance(sampler, BaseSampler):
            raise ConfigError(
                f"OptunaSearcher's sampler callable {s!r} must return an optuna sampler; got {sampler!r}. "
                "For example sampler=lambda seed: optuna.samplers.TPESampler(seed=seed)."
            )
        return sampler

    def reset(self) -> None:
        super().reset()
        import optuna

        if optuna.logging.get_verbosity() < optuna.logging.WARNING:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
        direction = "maximize" if self.objective_.mode == "max" else "minimize"
        self.study_ = optuna.create_study(direction=direction, sampler=self._sampler_for(0))
        self._book = AskBook()
        self._n_study_trials = 0

    def ask(self) -> Config:
        """Run the space function against a new Optuna trial and return its config."""
        self.check_setup()
        from optuna.trial import TrialState

        study = self.study_
        study.sampler = self._sampler_for(self.n_asked_)
        trial = study.ask()
        try:
            _, record = self.space_.run(lambda name, dom: _suggest(trial, name, dom))
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            self._n_study_trials += 1
            raise
        config = {name: value for name, (_, value) in record.items()}
        self._book.add(config, trial.number)
        self._n_study_trials += 1
        self.n_asked_ += 1
        return config

    def _frozen(self, config: Config, **kwargs: Any) -> optuna.trial.FrozenTrial:
        """A trial of ``config`` (checked against the space) to add to the study."""
        from optuna.trial import create_trial

        self.space_.validate(config)
        _, record = self.space_.run(lambda name, dom: dom.coerce(config[name]))
        dists = {name: _distribution(dom) for name, (dom, _) in record.items()}
        params = {name: value for name, (_, value) in record.items()}
        return create_trial(params=params, distributions=dists, **kwargs)

    def note_ask(self, config: Config) -> None:
        """Add ``config`` to the study as a running trial (:meth:`restore` calls it)."""
        from optuna.trial import TrialState

        self.study_.add_trial(self._frozen(config, state=TrialState.RUNNING))
        self._book.add(config, self._n_study_trials)
        self._n_study_trials += 1
        super().note_ask(config)

    def tell(self, trial: Trial) -> None:
        """Tell the study the trial's value (or ``FAIL``); a second tell of a trial is ignored."""
        self.check_setup()
        from optuna.trial import TrialState

        status = status_of(trial)
        if status not in TOLD_STATUSES:
            return
        number, first = self._book.match(trial)
        if not first:
            return
        v = trial.value
        ok = status is not TrialStatus.FAILED and isinstance(v, (int, float)) and not math.isnan(v)
        if number is None:  # a config this searcher did not ask: add it as a finished trial
            state = TrialState.COMPLETE if ok else TrialState.FAIL
            self.study_.add_trial(self._frozen(trial.config, state=state, value=float(v) if ok else None))
            self._book.bind(trial.trial_id, self._n_study_trials)
            self._n_study_trials += 1
        elif ok:
            self.study_.tell(number, float(v))
        else:
            self.study_.tell(number, state=TrialState.FAIL)
