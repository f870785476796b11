"""Searchers: the conformance suite for all four, then what is particular to each."""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable
from typing import Any

import pytest

from toolkit.errors import ConfigError
from toolkit.searchers import EvolutionSearcher, GridSearcher, OptunaSearcher, RandomSearcher, Searcher
from toolkit.space import HP, Float, SearchSpace
from toolkit.testing.searchers import CHECKS, conditional_space, spaces
from toolkit.trial import Objective, Trial, TrialStatus

SPACES = spaces()


def _float_grid(space: SearchSpace) -> dict[str, list[float]]:
    """Two grid values (the ends) for every float of ``space``."""
    return {n: [d.low, d.high] for n, d in space.describe().items() if isinstance(d, Float)}


FACTORIES: dict[str, Callable[[SearchSpace], Callable[[int], Searcher]]] = {
    "random": lambda space: lambda seed: RandomSearcher(seed=seed),
    "grid": lambda space: lambda seed: GridSearcher(values=_float_grid(space), seed=seed),
    "evolution": lambda space: lambda seed: EvolutionSearcher(population_size=6, sample_size=3, seed=seed),
    "optuna": lambda space: lambda seed: OptunaSearcher(seed=seed, n_startup_trials=5),
}


@pytest.mark.parametrize("space_name", sorted(SPACES))
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("searcher", sorted(FACTORIES))
def test_searcher_conforms(searcher: str, check: Callable[..., None], space_name: str) -> None:
    space = SPACES[space_name]
    check(FACTORIES[searcher](space), space)


def _finish(s: Searcher, i: int, config: dict[str, Any], value: float | None, **kw: Any) -> Trial:
    status = TrialStatus.FINISHED if value is not None else TrialStatus.FAILED
    trial = Trial(i, config, status, value=value, **kw)
    s.tell(trial)
    return trial


def _flat(hp: HP) -> dict[str, Any]:
    return {"a": hp.int("a", 0, 50), "b": hp.choice("b", ["x", "y", "z"]), "c": hp.bool("c")}


# --------------------------------------------------------------------------- base


def test_searcher_base_has_one_abstract_method() -> None:
    assert Searcher.__abstractmethods__ == frozenset({"ask"})


@pytest.mark.parametrize("cls", [RandomSearcher, GridSearcher, EvolutionSearcher, OptunaSearcher])
def test_from_params_refuses_unknown_parameter_listing_valid_ones(cls: type[Searcher]) -> None:
    with pytest.raises(
        ConfigError, match=r"no parameter 'seeed' \(did you mean 'seed'\?\); valid parameters are"
    ):
        cls.from_params({"seeed": 1})


def test_independent_flags_tell_the_runner_which_searchers_may_submit_ahead() -> None:
    assert RandomSearcher.independent and GridSearcher.independent
    assert not EvolutionSearcher.independent and not OptunaSearcher.independent


def test_setup_refuses_a_bare_function_instead_of_a_space() -> None:
    with pytest.raises(ConfigError, match=r"needs a SearchSpace; got function .*SearchSpace\(my_space\)"):
        RandomSearcher(seed=0).setup(_flat)  # type: ignore[arg-type]


def test_seed_must_be_an_int() -> None:
    with pytest.raises(ConfigError, match=r"seed must be an int or None; got '1'"):
        RandomSearcher(seed="1").setup(SearchSpace(_flat))  # type: ignore[arg-type]


def test_seed_none_draws_a_seed_that_is_recorded() -> None:
    s = RandomSearcher()
    s.setup(SearchSpace(_flat))
    again = RandomSearcher(seed=s.seed_)
    again.setup(SearchSpace(_flat))
    assert [s.ask() for _ in range(5)] == [again.ask() for _ in range(5)]


@pytest.mark.parametrize("searcher", ["evolution", "optuna"])
def test_a_status_given_as_a_plain_string_is_understood(searcher: str) -> None:
    s = FACTORIES[searcher](SPACES["conditional"])(0)
    s.setup(SPACES["conditional"])
    config = s.ask()
    s.tell(Trial(0, config, "failed", value=0.9))  # type: ignore[arg-type]
    if isinstance(s, EvolutionSearcher):
        assert s.population_ == []
    else:
        assert s.study_.trials[0].state.name == "FAIL"


# --------------------------------------------------------------------------- random


def test_random_avoids_duplicates_until_the_space_runs_out() -> None:
    space = SearchSpace(lambda hp: {"a": hp.choice("a", [1, 2, 3]), "b": hp.bool("b")})  # 6 configs
    s = RandomSearcher(seed=0, max_retries=200)
    s.setup(space)
    first = [s.ask() for _ in range(6)]
    assert len({(c["a"], c["b"]) for c in first}) == 6
    assert s.ask() in first  # the 7th is a duplicate, returned rather than looping forever


def test_random_without_retries_does_not_avoid_duplicates() -> None:
    space = SearchSpace(lambda hp: {"a": hp.choice("a", [1, 2, 3]), "b": hp.bool("b")})  # 6 configs
    s = RandomSearcher(seed=0, max_retries=0)
    s.setup(space)
    assert len({(c["a"], c["b"]) for c in (s.ask() for _ in range(6))}) < 6


def test_random_refuses_negative_max_retries() -> None:
    with pytest.raises(ConfigError, match=r"max_retries must be an int >= 0; got -1"):
        RandomSearcher(max_retries=-1).setup(SearchSpace(_flat))


def test_random_seeds_differ() -> None:
    a, b = RandomSearcher(seed=0), RandomSearcher(seed=1)
    a.setup(SPACES["conv_net"])
    b.setup(SPACES["conv_net"])
    assert [a.ask() for _ in range(5)] != [b.ask() for _ in range(5)]


# --------------------------------------------------------------------------- grid


def test_grid_enumerates_the_conditional_space_exactly() -> None:
    # model=linear: 3 l2 values; model=tree: 3 depths x (prune off, or on with 2 alphas); times scale on/off.
    expected = []
    for l2 in (0.0, 0.01, 0.1):
        for scale in (False, True):
            expected.append({"model": "linear", "model/linear/l2": l2, "scale": scale})
    for depth in (1, 2, 3):
        for prune, alphas in ((False, [None]), (True, [0.1, 0.5])):
            for alpha in alphas:
                for scale in (False, True):
                    c: dict[str, Any] = {
                        "model": "tree",
                        "model/tree/depth": depth,
                        "model/tree/prune": prune,
                    }
                    if prune:
                        c["model/tree/prune/alpha"] = alpha
                    expected.append({**c, "scale": scale})
    assert len(expected) == 24
    s = GridSearcher()
    s.setup(conditional_space())
    got = [s.ask() for _ in range(24)]
    assert got == expected
    assert [list(c) for c in got] == [list(c) for c in expected]  # key order: declaration order


def test_grid_returns_none_once_exhausted_and_stays_exhausted() -> None:
    s = GridSearcher()
    s.setup(conditional_space())
    for _ in range(24):
        assert s.ask() is not None
    assert s.ask() is None
    assert s.ask() is None
    assert s.n_asked_ == 24


def test_grid_float_without_values_is_refused_naming_it() -> None:
    s = GridSearcher(values={"dropout": [0.0, 0.5]})
    with pytest.raises(
        ConfigError,
        match=r"cannot enumerate the float hyperparameter 'learning_rate' \(Float\(low=0.0001, high=0.03, log=True\)\)"
        r".*GridSearcher\(values=\{'learning_rate': \[0.0001, 0.00173, 0.03\]\}\)",
    ):
        s.setup(SPACES["conv_net"])


def test_grid_values_for_an_unknown_name_suggest_the_right_one() -> None:
    with pytest.raises(
        ConfigError, match=r"'dropuot', which is not a hyperparameter .*did you mean 'dropout'"
    ):
        GridSearcher(values={"dropuot": [0.1]}).setup(SPACES["conv_net"])


def test_grid_values_outside_the_domain_are_refused() -> None:
    values = {"dropout": [0.0, 0.9], "learning_rate": [1e-3]}
    with pytest.raises(ConfigError, match=r"values\['dropout'\] has value\(s\) \[0.9\] outside its domain"):
        GridSearcher(values=values).setup(SPACES["conv_net"])


def test_grid_values_narrow_a_finite_domain_and_ints_become_floats() -> None:
    space = SearchSpace(lambda hp: {"k": hp.int("k", 1, 9), "p": hp.float("p", 0.0, 1.0)})
    s = GridSearcher(values={"k": [3, 5], "p": [0, 1]})
    s.setup(space)
    got = [s.ask() for _ in range(5)]
    assert got == [{"k": 3, "p": 0.0}, {"k": 3, "p": 1.0}, {"k": 5, "p": 0.0}, {"k": 5, "p": 1.0}, None]
    assert all(type(c["p"]) is float for c in got[:4])


def test_grid_shuffle_visits_the_same_configs_in_a_seeded_order() -> None:
    def run(**kw: Any) -> list[dict[str, Any]]:
        s = GridSearcher(**kw)
        s.setup(conditional_space())
        return [s.ask() for _ in range(24)]

    plain, a, b, c = run(), run(shuffle=True, seed=1), run(shuffle=True, seed=1), run(shuffle=True, seed=2)
    assert a == b and a != plain and a != c
    assert sorted(map(str, a)) == sorted(map(str, plain))


def test_grid_skips_configs_told_from_elsewhere() -> None:
    s = GridSearcher()
    s.setup(conditional_space())
    s.tell(
        Trial(
            99, {"model": "linear", "model/linear/l2": 0.0, "scale": False}, TrialStatus.FINISHED, value=1.0
        )
    )
    assert s.ask() == {"model": "linear", "model/linear/l2": 0.0, "scale": True}


# --------------------------------------------------------------------------- evolution


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"population_size": 0}, r"population_size must be an int >= 1; got population_size=0"),
        ({"population_size": 4, "sample_size": 0}, r"1 <= sample_size <= population_size; got sample_size=0"),
        ({"population_size": 4, "sample_size": 5}, r"got sample_size=5 with population_size=4"),
    ],
)
def test_evolution_refuses_bad_sizes(params: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        EvolutionSearcher.from_params(params)


def test_evolution_population_is_exactly_p_once_full() -> None:
    s = EvolutionSearcher(population_size=5, sample_size=2, seed=0)
    s.setup(SearchSpace(_flat))
    sizes = []
    for i in range(30):
        _finish(s, i, s.ask(), float(i))
        sizes.append(len(s.population_))
    assert sizes[:5] == [1, 2, 3, 4, 5]
    assert set(sizes[5:]) == {5}
    assert [t.trial_id for t in s.population_] == [25, 26, 27, 28, 29]  # the oldest died


def test_evolution_samples_at_random_until_p_results_are_in() -> None:
    s = EvolutionSearcher(population_size=4, sample_size=4, seed=0)
    s.setup(SearchSpace(_flat))
    asks = [s.ask() for _ in range(8)]  # nothing told: no population, every ask is a random sample
    r = RandomSearcher(seed=0, max_retries=0)
    r.setup(SearchSpace(_flat))
    assert asks == [r.ask() for _ in range(8)]
    assert s.population_ == []


def test_evolution_mutates_the_best_member_when_the_tournament_is_the_population() -> None:
    s = EvolutionSearcher(population_size=6, sample_size=6, seed=0)
    s.setup(SearchSpace(_flat))
    for i in range(6):
        c = s.ask()
        _finish(s, i, c, c["a"] + i / 1000)  # distinct values: one best member
    for i in range(6, 40):
        best = max(s.population_, key=lambda t: t.value or -math.inf)
        child = s.ask()
        changed = [k for k in child if child[k] != best.config[k]]
        assert len(changed) == 1, (best.config, child)
        _finish(s, i, child, child["a"] + i / 1000)


def test_evolution_never_adds_failed_trials() -> None:
    s = EvolutionSearcher(population_size=3, sample_size=2, seed=0)
    s.setup(SearchSpace(_flat))
    for i in range(10):
        _finish(s, i, s.ask(), None)
    assert s.population_ == [] and s.n_results_ == 0
    _finish(s, 10, s.ask(), 0.5)
    assert [t.trial_id for t in s.population_] == [10]


def test_evolution_updates_a_member_told_again_at_a_larger_budget() -> None:
    s = EvolutionSearcher(population_size=3, sample_size=2, seed=0)
    s.setup(SearchSpace(_flat))
    c = s.ask()
    _finish(s, 0, c, 0.1, budget=1.0, rung=0)
    _finish(s, 0, c, 0.7, budget=3.0, rung=1)
    assert [(t.trial_id, t.value, t.budget) for t in s.population_] == [(0, 0.7, 3.0)]
    assert s.n_results_ == 1


def test_evolution_ages_by_birth_so_a_late_old_result_does_not_join_a_full_population() -> None:
    s = EvolutionSearcher(population_size=2, sample_size=1, seed=0)
    s.setup(SearchSpace(_flat))
    configs = [s.ask() for _ in range(4)]
    for i in (1, 2, 3):
        _finish(s, i, configs[i], 0.5)
    _finish(s, 0, configs[0], 0.9)  # born first, told last
    assert [t.trial_id for t in s.population_] == [2, 3]


# --------------------------------------------------------------------------- optuna


def _optuna(seed: int = 0, **kw: Any) -> OptunaSearcher:
    s = OptunaSearcher(seed=seed, n_startup_trials=3, **kw)
    s.setup(conditional_space(), Objective("score", "max"))
    return s


def test_optuna_tells_failed_trials_as_fail_and_pending_stay_running() -> None:
    from optuna.trial import TrialState

    s = _optuna()
    configs = [s.ask() for _ in range(4)]
    _finish(s, 0, configs[0], 0.5)
    _finish(s, 1, configs[1], None)
    s.tell(Trial(2, configs[2], TrialStatus.FINISHED, value=math.nan))
    states = [t.state for t in s.study_.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL, TrialState.RUNNING]


def test_optuna_keeps_the_first_value_of_a_trial_told_twice() -> None:
    s = _optuna()
    c = s.ask()
    _finish(s, 0, c, 0.2, budget=1.0)
    _finish(s, 0, c, 0.9, budget=3.0)
    assert [t.value for t in s.study_.trials] == [0.2]


def test_optuna_matches_tells_to_asks_by_config_whatever_the_trial_ids() -> None:
    s = _optuna()
    configs = [s.ask() for _ in range(3)]
    _finish(s, 100, configs[2], 0.3)
    _finish(s, 101, configs[0], 0.1)
    assert [t.value for t in s.study_.trials] == [0.1, None, 0.3]


def test_optuna_adds_a_config_it_did_not_ask_as_a_finished_trial() -> None:
    s = _optuna()
    _finish(s, 0, {"model": "linear", "model/linear/l2": 0.1, "scale": True}, 0.4)
    (trial,) = s.study_.trials
    assert trial.params == {"model": "linear", "model/linear/l2": 0.1, "scale": True} and trial.value == 0.4


def test_optuna_direction_follows_the_objective() -> None:
    s = OptunaSearcher(seed=0)
    s.setup(conditional_space(), Objective("val_loss", "min"))
    assert s.study_.direction.name == "MINIMIZE"


def test_optuna_silences_its_info_logging() -> None:
    _optuna()
    assert logging.getLogger("optuna").getEffectiveLevel() >= logging.WARNING


def test_optuna_accepts_a_sampler_instance_or_a_seed_to_sampler_callable() -> None:
    import optuna

    seeds: list[int] = []

    def make(seed: int) -> optuna.samplers.BaseSampler:
        seeds.append(seed)
        return optuna.samplers.RandomSampler(seed=seed)

    s = OptunaSearcher(sampler=make, seed=0)
    s.setup(conditional_space())
    s.ask()
    s.ask()
    assert len(seeds) == 3 and len(set(seeds[1:])) == 2  # one for the study, then one per ask
    instance = optuna.samplers.RandomSampler(seed=0)
    s = OptunaSearcher(sampler=instance)
    s.setup(conditional_space())
    conditional_space().validate(s.ask())
    assert s.study_.sampler is instance


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"sampler": "tpee"},
            r"has no sampler 'tpee' \(did you mean 'tpe'\?\); use one of \['random', 'tpe'\]",
        ),
        ({"n_startup_trails": 5}, r"unknown sampler keyword argument 'n_startup_trails' \(did you mean"),
        ({"sampler": "random", "n_startup_trials": 5}, r"RandomSampler accepts \[\]"),
        ({"sampler": 3}, r"sampler must be one of \['random', 'tpe'\], an optuna sampler instance"),
    ],
)
def test_optuna_refuses_bad_sampler_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        OptunaSearcher(**kwargs).setup(conditional_space())


def test_optuna_from_params_checks_the_sampler_keywords() -> None:
    s = OptunaSearcher.from_params({"sampler": "tpe", "seed": 1, "n_startup_trials": 4})
    assert s.get_params() == {"sampler": "tpe", "seed": 1, "n_startup_trials": 4}
    with pytest.raises(ConfigError, match=r"no parameter 'n_startup' \(did you mean 'n_startup_trials'\?\)"):
        OptunaSearcher.from_params({"n_startup": 4})


# --------------------------------------------------------------------------- search quality


def _synthetic(hp: HP) -> dict[str, Any]:
    model = hp.one_of(
        "model",
        {
            "quad": lambda h: {"x": h.float("x", -5.0, 5.0), "y": h.float("y", -5.0, 5.0)},
            "wave": lambda h: {"a": h.float("a", 0.0, 10.0), "k": h.int("k", 1, 8)},
        },
    )
    return {"model": model, "lr": hp.float("lr", 1e-5, 1e-1, log=True), "bn": hp.bool("bn")}


def _synthetic_value(c: dict[str, Any]) -> float:
    """Best (1.0) at model=quad, x=1.5, y=-2, lr=1e-3, bn on; the wave branch tops out at 0.7."""
    penalty = abs(math.log10(c["lr"]) + 3.0) / 4.0 + (0.0 if c["bn"] else 0.1)
    if c["model"] == "quad":
        return 1.0 - ((c["model/quad/x"] - 1.5) ** 2 + (c["model/quad/y"] + 2.0) ** 2) / 50.0 - penalty
    return 0.7 - abs(c["model/wave/a"] - 7.0) / 10.0 - abs(c["model/wave/k"] - 3) / 10.0 - penalty


def _median_best(make: Callable[[int], Searcher], n_trials: int = 100, seeds: int = 5) -> float:
    bests = []
    for seed in range(seeds):
        s = make(seed)
        s.setup(SearchSpace(_synthetic), Objective("score", "max"))
        best = -math.inf
        for i in range(n_trials):
            config = s.ask()
            value = _synthetic_value(config)
            _finish(s, i, config, value)
            best = max(best, value)
        bests.append(best)
    return statistics.median(bests)


def test_optuna_beats_random_search_on_a_conditional_synthetic_objective() -> None:
    tpe = _median_best(lambda seed: OptunaSearcher(seed=seed))
    rnd = _median_best(lambda seed: RandomSearcher(seed=seed))
    assert tpe > rnd, f"median best after 100 trials: TPE {tpe:.4f}, random {rnd:.4f}"
