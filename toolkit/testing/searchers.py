"""The conformance suite every searcher passes.

Each check is a plain function ``check(make, space)``: ``make(seed)`` builds
a fresh, unbound searcher and ``space`` is the space to run it on. A check
raises ``AssertionError`` (with what was expected and what came) when the
searcher breaks the :class:`~toolkit.searchers.Searcher` contract. Run them all
with :func:`check_searcher`, or parametrize a test over :data:`CHECKS` and
:func:`spaces`, as ``tests/test_searchers.py`` does.

Trials are simulated: a config's value is :func:`synthetic_value`, some trials
fail, and configs reach ``tell`` and ``restore`` after a JSON round trip, as
they come out of a journal.

Examples
--------
>>> from toolkit.searchers import RandomSearcher
>>> check_searcher(lambda seed: RandomSearcher(seed=seed), conditional_space())
>>> sorted(spaces())
['conditional', 'conv_net']
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

from toolkit.errors import ConfigError
from toolkit.searchers.base import Searcher
from toolkit.space import HP, SearchSpace
from toolkit.spaces import conv_net
from toolkit.trial import Objective, Trial, TrialStatus, config_key

__all__ = [
    "CHECKS",
    "OBJECTIVE",
    "check_asks_valid_configs",
    "check_ask_before_setup_is_refused",
    "check_conditional_branches_are_explored",
    "check_failed_trials_are_handled",
    "check_params_round_trip",
    "check_pending_trials_told_out_of_order",
    "check_repeated_tells_are_tolerated",
    "check_restore_gives_the_same_next_asks",
    "check_same_seed_same_asks",
    "check_searcher",
    "check_setup_resets_state",
    "conditional_space",
    "spaces",
    "synthetic_value",
]

Make = Callable[[int], Searcher]
Config = dict[str, Any]

OBJECTIVE = Objective("score", "max")
"""The objective the checks optimise (``synthetic_value``, higher is better)."""

_PLAIN = (str, int, float, bool, type(None))


# --------------------------------------------------------------------------- fixtures


def _tiny(hp: HP) -> dict[str, Any]:
    model = hp.one_of(
        "model",
        {
            "linear": lambda h: {"l2": h.choice("l2", [0.0, 0.01, 0.1])},
            "tree": lambda h: {
                "depth": h.int("depth", 1, 3),
                "prune": h.optional("prune", lambda g: {"alpha": g.choice("alpha", [0.1, 0.5])}),
            },
        },
    )
    return {"model": model, "scale": hp.bool("scale")}


def conditional_space() -> SearchSpace:
    """A small space with ``one_of`` and ``optional`` branches: 24 configs in all.

    ``model`` is ``linear`` (``model/linear/l2``: 3 values) or ``tree``
    (``model/tree/depth``: 1-3, and ``model/tree/prune`` on or off, with
    ``model/tree/prune/alpha``: 2 values when on); ``scale`` is a bool. That
    is ``(3 + 3 * (1 + 2)) * 2 = 24`` configs.

    Examples
    --------
    >>> sorted(conditional_space().describe())
    ['model', 'model/linear/l2', 'model/tree/depth', 'model/tree/prune', 'model/tree/prune/alpha', 'scale']
    """
    return SearchSpace(_tiny)


def spaces() -> dict[str, SearchSpace]:
    """The spaces the suite runs on: the MNIST conv net (``repeat``) and :func:`conditional_space`."""
    return {"conv_net": SearchSpace(conv_net, num_classes=10), "conditional": conditional_space()}


def synthetic_value(config: Config) -> float:
    """A deterministic value in ``[0, 1)`` for a config (the same in every process).

    Examples
    --------
    >>> synthetic_value({"x": 1}) == synthetic_value({"x": 1}) != synthetic_value({"x": 2})
    True
    """
    digest = hashlib.sha256(config_key(config).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _journaled(config: Config) -> Config:
    """The config as it comes back from a journal (a JSON round trip, a new object)."""
    return json.loads(json.dumps(config))


def _outcome(i: int, config: Config, fail_every: int = 5) -> Trial:
    """Trial ``i``'s terminal state: every ``fail_every``-th fails, the others finish."""
    if fail_every and i % fail_every == fail_every - 1:
        return Trial(i, _journaled(config), TrialStatus.FAILED, error="RuntimeError: simulated failure")
    return Trial(i, _journaled(config), TrialStatus.FINISHED, value=synthetic_value(config))


def _bound(make: Make, space: SearchSpace, seed: int = 0) -> Searcher:
    searcher = make(seed)
    searcher.setup(space, OBJECTIVE)
    return searcher


def _assert_valid(searcher: Searcher, space: SearchSpace, config: Any, where: str) -> None:
    name = type(searcher).__name__
    assert isinstance(config, dict), f"{name}.ask() returned {config!r} ({where}); expected a dict or None"
    try:
        space.validate(config)
    except ConfigError as exc:
        raise AssertionError(
            f"{name}.ask() returned a config that does not fit the space ({where}): {exc}"
        ) from exc
    bad = {k: type(v).__name__ for k, v in config.items() if type(v) not in _PLAIN}
    assert not bad, f"{name}.ask() returned values that are not plain JSON scalars ({where}): {bad}"
    assert _journaled(config) == config, f"{name}.ask() returned a config that a JSON round trip changes"


def _sequential(searcher: Searcher, n: int, fail_every: int = 5, start: int = 0) -> list[Config | None]:
    """Ask and tell ``n`` times, one trial at a time."""
    asks: list[Config | None] = []
    for i in range(start, start + n):
        config = searcher.ask()
        asks.append(config)
        if config is not None:
            searcher.tell(_outcome(i, config, fail_every))
    return asks


# --------------------------------------------------------------------------- checks


def check_asks_valid_configs(make: Make, space: SearchSpace) -> None:
    """Every ask fits the space (``space.validate``) and is plain JSON; the first ask is not ``None``."""
    searcher = _bound(make, space)
    asks = _sequential(searcher, 40)
    assert asks[0] is not None, f"{type(searcher).__name__}.ask() returned None on a fresh search"
    for i, config in enumerate(asks):
        if config is None:
            assert all(c is None for c in asks[i:]), "ask() returned a config after returning None"
            break
        _assert_valid(searcher, space, config, f"ask {i}")
    assert searcher.n_asked_ == sum(c is not None for c in asks), (
        f"n_asked_ is {searcher.n_asked_} after {sum(c is not None for c in asks)} configs were asked"
    )


def check_same_seed_same_asks(make: Make, space: SearchSpace) -> None:
    """Two searchers with the same seed and the same history ask the same configs."""
    a = _sequential(_bound(make, space, seed=7), 30)
    b = _sequential(_bound(make, space, seed=7), 30)
    assert a == b, f"the same seed gave different asks:\n{a}\n{b}"


def check_failed_trials_are_handled(make: Make, space: SearchSpace) -> None:
    """Failed trials, and finished ones without a usable value, are told without breaking the search."""
    searcher = _bound(make, space)
    for i in range(30):
        config = searcher.ask()
        if config is None:
            break
        _assert_valid(searcher, space, config, f"ask {i}, with failures")
        if i % 7 == 3:
            trial = Trial(i, _journaled(config), TrialStatus.FINISHED, value=math.nan)
        elif i % 7 == 5:
            trial = Trial(i, _journaled(config), TrialStatus.FINISHED, value=None)
        else:
            trial = _outcome(i, config, fail_every=2)
        searcher.tell(trial)
    every_one_fails = _bound(make, space, seed=1)
    for i in range(25):
        config = every_one_fails.ask()
        if config is None:
            break
        _assert_valid(every_one_fails, space, config, f"ask {i}, when every trial fails")
        every_one_fails.tell(Trial(i, _journaled(config), TrialStatus.FAILED, error="OOM"))


def _history_then_restore(
    make: Make, space: SearchSpace, seed: int
) -> tuple[Searcher, Searcher, list[Trial]]:
    """Run a searcher through a history with pending trials and out-of-order tells; restore another."""
    original = _bound(make, space, seed)
    asked: list[Config] = []
    told: dict[int, Trial] = {}

    def ask(n: int) -> None:
        for _ in range(n):
            config = original.ask()
            if config is not None:
                asked.append(config)

    def tell(i: int) -> None:
        if i < len(asked) and i not in told:
            told[i] = _outcome(i, asked[i])
            original.tell(told[i])

    ask(6)
    for i in (1, 3, 0):
        tell(i)
    ask(4)
    for i in (5, 2, 7, 9):
        tell(i)
    for _ in range(10):  # a pipeline three deep; trial 8 stays pending throughout
        ask(1)
        if len(asked) - 3 not in (4, 8):
            tell(len(asked) - 3)
    ask(4)
    n = len(asked)
    for i in (n - 2, n - 5, n - 1, n - 4, n - 3, 4):  # the newest out of order, then an old straggler
        tell(i)
    journal = [
        told.get(i) or Trial(i, _journaled(c), TrialStatus.PENDING if i % 2 else TrialStatus.RUNNING)
        for i, c in enumerate(asked)
    ]
    restored = _bound(make, space, seed)
    restored.restore(journal)
    return original, restored, journal


def check_restore_gives_the_same_next_asks(make: Make, space: SearchSpace) -> None:
    """``setup`` + ``restore(journal)`` gives the same next asks as the searcher that lived the history."""
    original, restored, journal = _history_then_restore(make, space, seed=3)
    name = type(original).__name__
    assert restored.n_asked_ == original.n_asked_ == len(journal), (
        f"{name}: n_asked_ is {restored.n_asked_} after restoring {len(journal)} trials "
        f"(the original's is {original.n_asked_})"
    )
    a = [original.ask() for _ in range(3)]
    b = [restored.ask() for _ in range(3)]
    assert a == b, f"{name}: after restore the next asks differ:\noriginal {a}\nrestored {b}"
    pending = [t for t in journal if t.status not in (TrialStatus.FINISHED, TrialStatus.FAILED)]
    news = [Trial(len(journal) + j, c, TrialStatus.PENDING) for j, c in enumerate(a) if c is not None]
    for trial in reversed(pending + news):
        outcome = _outcome(trial.trial_id, trial.config)
        original.tell(outcome)
        restored.tell(outcome)
    a = [original.ask() for _ in range(3)]
    b = [restored.ask() for _ in range(3)]
    assert a == b, f"{name}: after restore and more tells the asks differ:\noriginal {a}\nrestored {b}"


def check_conditional_branches_are_explored(make: Make, space: SearchSpace) -> None:
    """Configs from different branches appear, each holding only the hyperparameters its branch touched."""
    searcher = _bound(make, space)
    asks = [c for c in _sequential(searcher, 60) if c is not None]
    for i, config in enumerate(asks):
        _assert_valid(searcher, space, config, f"ask {i}")
    shapes = {frozenset(c) for c in asks}
    assert len(shapes) >= 2, (
        f"{type(searcher).__name__} asked {len(asks)} configs that all touch the same hyperparameters "
        f"{sorted(next(iter(shapes)))}; a conditional space should yield more than one branch"
    )


def check_pending_trials_told_out_of_order(make: Make, space: SearchSpace) -> None:
    """Four asks before any tell are all valid; telling them out of order works, and so do the next asks."""
    searcher = _bound(make, space)
    first = [searcher.ask() for _ in range(4)]
    for i, config in enumerate(first):
        _assert_valid(searcher, space, config, f"pending ask {i}")
    for i in (2, 0, 3, 1):
        searcher.tell(_outcome(i, first[i], fail_every=3))
    more = [searcher.ask() for _ in range(4)]
    for i, config in enumerate(more):
        if config is not None:
            _assert_valid(searcher, space, config, f"ask {4 + i}, after out-of-order tells")
    for i in (3, 1, 2, 0):
        if more[i] is not None:
            searcher.tell(_outcome(4 + i, more[i]))


def check_repeated_tells_are_tolerated(make: Make, space: SearchSpace) -> None:
    """A trial told once per rung (growing budget) does not break the search."""
    searcher = _bound(make, space)
    for i in range(12):
        config = searcher.ask()
        if config is None:
            break
        _assert_valid(searcher, space, config, f"ask {i}, with repeated tells")
        for rung, budget in enumerate((1.0, 3.0, 9.0)):
            value = synthetic_value(config) * (rung + 1) / 3
            status = TrialStatus.FINISHED if rung == 2 or i % 2 else TrialStatus.STOPPED
            searcher.tell(Trial(i, _journaled(config), status, value=value, budget=budget, rung=rung))


def check_setup_resets_state(make: Make, space: SearchSpace) -> None:
    """``setup`` forgets every ask and tell: a reused searcher asks what a fresh one does."""
    reused = _bound(make, space, seed=5)
    _sequential(reused, 20)
    reused.setup(space, OBJECTIVE)
    assert reused.n_asked_ == 0, f"n_asked_ is {reused.n_asked_} after setup()"
    a = _sequential(reused, 15)
    b = _sequential(_bound(make, space, seed=5), 15)
    assert a == b, f"a searcher set up again asks differently from a fresh one:\n{a}\n{b}"


def check_params_round_trip(make: Make, space: SearchSpace) -> None:
    """``from_params(get_params())`` rebuilds an equal searcher; an unknown parameter is refused."""
    searcher = make(0)
    cls = type(searcher)
    params = searcher.get_params()
    assert "seed" in params and params["seed"] == 0, f"{cls.__name__}.get_params() has no seed=0: {params}"
    rebuilt = cls.from_params(params)
    assert rebuilt == searcher and repr(rebuilt) == repr(searcher), f"{rebuilt!r} != {searcher!r}"
    assert repr(searcher).startswith(f"{cls.__name__}("), repr(searcher)
    try:
        cls.from_params({**params, "sead": 1})
    except ConfigError as exc:
        assert "sead" in str(exc) and "seed" in str(exc), (
            f"the error should name 'sead' and list 'seed': {exc}"
        )
    else:
        raise AssertionError(f"{cls.__name__}.from_params accepted an unknown parameter 'sead'")


def check_ask_before_setup_is_refused(make: Make, space: SearchSpace) -> None:
    """``ask`` before ``setup`` raises an error that says to call ``setup``."""
    searcher = make(0)
    try:
        searcher.ask()
    except RuntimeError as exc:
        assert "setup" in str(exc), f"the error should say to call setup(): {exc}"
    else:
        raise AssertionError(f"{type(searcher).__name__}.ask() worked before setup()")


CHECKS: tuple[Callable[[Make, SearchSpace], None], ...] = (
    check_asks_valid_configs,
    check_same_seed_same_asks,
    check_failed_trials_are_handled,
    check_restore_gives_the_same_next_asks,
    check_conditional_branches_are_explored,
    check_pending_trials_told_out_of_order,
    check_repeated_tells_are_tolerated,
    check_setup_resets_state,
    check_params_round_trip,
    check_ask_before_setup_is_refused,
)
"""Every check of the suite, in a stable order."""


def check_searcher(make: Make, space: SearchSpace, checks: Sequence[Callable[..., None]] = CHECKS) -> None:
    """Run every check on ``make`` and ``space``; the first failure raises ``AssertionError``."""
    for check in checks:
        check(make, space)
