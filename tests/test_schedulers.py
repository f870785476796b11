"""Multi-fidelity scheduling policies: pure functions of the records, tested without a cluster."""

from __future__ import annotations

import doctest
import importlib
import pickle
import random

import pytest

from toolkit.errors import ConfigError
from toolkit.schedulers import (
    ASHA,
    WAIT,
    Hyperband,
    Job,
    RungRecord,
    SuccessiveHalving,
    get_scheduler,
    simulate,
)

# budgets of ASHA(max_budget=27, eta=3) and SuccessiveHalving(max_budget=27, eta=3): 1, 3, 9, 27
LADDER = (1.0, 3.0, 9.0, 27.0)


def done(tid: int, rung: int, score: float, bracket: int = 0) -> RungRecord:
    return RungRecord(tid, bracket, rung, LADDER[rung], "finished", score)


def failed(tid: int, rung: int, bracket: int = 0) -> RungRecord:
    return RungRecord(tid, bracket, rung, LADDER[rung], "failed")


def running(tid: int, rung: int, bracket: int = 0, budget: float | None = None) -> RungRecord:
    return RungRecord(tid, bracket, rung, LADDER[rung] if budget is None else budget, "running")


def new(rung_budget: float = 1.0, bracket: int = 0) -> Job:
    return Job("new", bracket, 0, rung_budget)


def promote(tid: int, rung: int, bracket: int = 0, budget: float | None = None) -> Job:
    return Job("promote", bracket, rung, LADDER[rung] if budget is None else budget, tid)


def drive(policy, n_workers: int, max_trials: int | None, seed: int = 0, fail_every: int = 0):
    """Drive a policy like the runner, completing running jobs in a seeded random order.

    Returns the list of ``(records, n_started, decision)`` for every call.
    """
    rng = random.Random(seed)
    records: dict[tuple[int, int], RungRecord] = {}
    n_started, calls, in_flight = 0, [], []
    while True:
        while len(in_flight) < n_workers:
            snapshot = tuple(records.values())
            job = policy.next_job(snapshot, n_started, max_trials)
            calls.append((snapshot, n_started, job))
            if job is None or job is WAIT:
                break
            tid = n_started if job.kind == "new" else job.trial_id
            n_started += job.kind == "new"
            records[(tid, job.rung)] = RungRecord(tid, job.bracket, job.rung, job.budget, "running")
            in_flight.append((tid, job.rung))
        if calls[-1][2] is None or not in_flight:
            return calls
        tid, rung = in_flight.pop(rng.randrange(len(in_flight)))
        r = records[(tid, rung)]
        status = "failed" if fail_every and tid % fail_every == fail_every - 1 else "finished"
        score = round(rng.random(), 2) if status == "finished" else None  # rounding makes ties
        records[(tid, rung)] = RungRecord(tid, r.bracket, r.rung, r.budget, status, score)


def closed_form(brackets: list[tuple[list[int], list[float]]], resume: bool) -> float:
    total = 0.0
    for sizes, budgets in brackets:
        prev = 0.0
        for n, r in zip(sizes, budgets):
            total += n * (r - prev if resume else r)
            prev = r
    return total


HB81_TABLE = [  # (n, r) per bracket s = 4..0, Li et al. 2018, Table 1 (R=81, eta=3)
    (81, 1.0),
    (34, 3.0),
    (15, 9.0),
    (8, 27.0),
    (5, 81.0),
]
HB81_SIZES = [
    [81, 27, 9, 3, 1],
    [34, 11, 3, 1],
    [15, 5, 1],
    [8, 2],
    [5],
]
HB81_BUDGETS = [
    [1.0, 3.0, 9.0, 27.0, 81.0],
    [3.0, 9.0, 27.0, 81.0],
    [9.0, 27.0, 81.0],
    [27.0, 81.0],
    [81.0],
]


# ---------------------------------------------------------------- Hyperband


def test_hyperband_r81_eta3_brackets_start_with_the_papers_n_and_r():
    brackets = Hyperband(min_budget=1, max_budget=81, eta=3).brackets()
    assert [(b.n_configs, b.budgets[0]) for b in brackets] == HB81_TABLE
    assert [b.index for b in brackets] == [0, 1, 2, 3, 4]


def test_hyperband_r81_eta3_plans_every_rung_size_and_budget_of_every_bracket():
    brackets = Hyperband(max_budget=81, eta=3).brackets()
    assert [list(b.sizes) for b in brackets] == HB81_SIZES
    assert [list(b.budgets) for b in brackets] == HB81_BUDGETS


def test_hyperband_r81_eta3_runs_exactly_the_planned_rung_sizes():
    result = simulate(Hyperband(max_budget=81, eta=3), n_workers=5)
    expected = {(b, i): n for b, sizes in enumerate(HB81_SIZES) for i, n in enumerate(sizes)}
    assert result.trials_per_rung == expected
    assert result.n_configs == 81 + 34 + 15 + 8 + 5


def test_hyperband_budgets_are_those_of_the_first_bracket():
    assert Hyperband(max_budget=81).budgets() == HB81_BUDGETS[0]


def test_hyperband_starts_the_next_bracket_while_one_waits_at_its_barrier():
    records = [done(i, 0, 0.5) for i in range(80)] + [running(80, 0)]
    job = Hyperband(max_budget=81).next_job(records, n_started=81, max_trials=None)
    assert job == Job("new", bracket=1, rung=0, budget=3.0)


def test_hyperband_gives_an_earlier_brackets_promotion_priority_over_a_later_bracket():
    records = [done(i, 0, i / 100) for i in range(81)]
    records += [RungRecord(81 + i, 1, 0, 3.0, "running") for i in range(5)]
    job = Hyperband(max_budget=81).next_job(records, n_started=86, max_trials=None)
    assert job == Job("promote", bracket=0, rung=1, budget=3.0, trial_id=80)


def test_hyperband_waits_only_when_every_unfinished_bracket_waits():
    records, tid = [], 0
    for b, (n, r) in enumerate(HB81_TABLE):
        for i in range(n):
            status = "running" if i == 0 else "finished"
            records.append(RungRecord(tid, b, 0, r, status, None if i == 0 else 0.5))
            tid += 1
    assert Hyperband(max_budget=81).next_job(records, n_started=tid, max_trials=None) is WAIT


def test_hyperband_plan_ends_when_all_brackets_are_complete():
    policy = Hyperband(max_budget=27)
    result = simulate(policy, n_workers=3)
    assert policy.next_job(list(result.records), result.n_configs, None) is None


def test_hyperband_max_trials_cuts_the_plan_in_bracket_order():
    result = simulate(Hyperband(max_budget=81), n_workers=4, max_trials=100)
    assert result.n_configs == 100
    assert {k: v for k, v in result.trials_per_rung.items() if k[0] == 1} == {
        (1, 0): 19,
        (1, 1): 6,
        (1, 2): 2,
        (1, 3): 1,
    }
    assert {b for b, _ in result.trials_per_rung} == {0, 1}


def test_hyperband_overlapping_brackets_is_faster_than_running_them_one_after_another():
    hb = Hyperband(max_budget=81)
    one_by_one = sum(
        simulate(
            SuccessiveHalving(min_budget=b.budgets[0], max_budget=81, n_configs=b.n_configs), n_workers=8
        ).makespan
        for b in hb.brackets()
    )
    overlapped = simulate(hb, n_workers=8)
    assert overlapped.makespan < 0.75 * one_by_one
    assert overlapped.utilization > 0.9


# ---------------------------------------------------------------- successive halving


@pytest.mark.parametrize(
    "max_budget, eta, n_configs, sizes",
    [
        (81, 3, None, [81, 27, 9, 3, 1]),
        (27, 3, 100, [100, 33, 11, 3]),
        (8, 2, None, [8, 4, 2, 1]),
        (16, 2, 20, [20, 10, 5, 2, 1]),
        (16, 4, 10, [10, 2, 1]),  # 10 // 16 == 0: the best still reaches the top rung
        (5, 3, 7, [7, 2]),
        (1, 3, 6, [6]),
    ],
)
def test_successive_halving_runs_exact_rung_sizes(max_budget, eta, n_configs, sizes):
    policy = SuccessiveHalving(max_budget=max_budget, eta=eta, n_configs=n_configs)
    assert policy.rung_sizes() == sizes
    result = simulate(policy, n_workers=3)
    assert result.trials_per_rung == {(0, i): n for i, n in enumerate(sizes)}


def test_successive_halving_budgets_are_min_budget_times_powers_of_eta_up_to_max_budget():
    assert SuccessiveHalving(min_budget=2, max_budget=100, eta=3).budgets() == [2.0, 6.0, 18.0, 54.0]
    assert SuccessiveHalving(min_budget=1, max_budget=16, eta=2).budgets() == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_successive_halving_starts_all_rung0_configs_before_waiting():
    policy = SuccessiveHalving(max_budget=9)
    records = [running(i, 0) for i in range(8)]
    assert policy.next_job(records, n_started=8, max_trials=None) == new()
    records.append(running(8, 0))
    assert policy.next_job(records, n_started=9, max_trials=None) is WAIT


def test_successive_halving_waits_at_the_barrier_until_the_rung_is_complete():
    policy = SuccessiveHalving(max_budget=9)
    records = [done(i, 0, score=i / 10) for i in range(8)] + [running(8, 0)]
    assert policy.next_job(records, n_started=9, max_trials=None) is WAIT


def test_successive_halving_promotes_the_best_in_order_after_the_barrier():
    policy = SuccessiveHalving(max_budget=9)
    scores = [0.3, 0.9, 0.1, 0.7, 0.5, 0.8, 0.2, 0.4, 0.6]
    records = [done(i, 0, s) for i, s in enumerate(scores)]
    given = []
    for _ in range(3):
        job = policy.next_job(records, n_started=9, max_trials=None)
        given.append(job)
        records.append(running(job.trial_id, 1))
    assert given == [promote(1, 1), promote(5, 1), promote(3, 1)]
    assert policy.next_job(records, n_started=9, max_trials=None) is WAIT


def test_successive_halving_never_promotes_failed_trials():
    policy = SuccessiveHalving(max_budget=9)
    records = [failed(i, 0) for i in range(7)] + [done(7, 0, 0.1), done(8, 0, 0.2)]
    assert policy.next_job(records, 9, None) == promote(8, 1)
    records.append(running(8, 1))
    assert policy.next_job(records, 9, None) == promote(7, 1)
    records.append(running(7, 1))
    assert policy.next_job(records, 9, None) is WAIT


def test_successive_halving_ends_early_when_a_whole_rung_failed():
    policy = SuccessiveHalving(max_budget=9)
    records = [done(i, 0, i / 10) for i in range(9)] + [failed(8, 1), failed(7, 1), failed(6, 1)]
    assert policy.next_job(records, 9, None) is None


def test_successive_halving_ends_after_the_top_rung():
    policy = SuccessiveHalving(max_budget=9)
    records = list(simulate(policy, n_workers=2).records)
    assert len(records) == 9 + 3 + 1
    assert policy.next_job(records, 9, None) is None


def test_successive_halving_max_trials_caps_configs_and_shrinks_rungs():
    result = simulate(SuccessiveHalving(max_budget=27), n_workers=2, max_trials=10)
    assert result.trials_per_rung == {(0, 0): 10, (0, 1): 3, (0, 2): 1, (0, 3): 1}


# ---------------------------------------------------------------- ASHA


def test_asha_promotes_from_the_highest_rung_with_a_candidate():
    records = [done(i, 0, i / 100) for i in range(12)]  # rung 0: top 4 are 11, 10, 9, 8
    records += [done(11, 1, 0.5), done(10, 1, 0.9), done(9, 1, 0.7)]  # 8 not promoted yet
    assert ASHA(max_budget=27).next_job(records, 12, None) == promote(10, 2)


def test_asha_promotes_only_from_the_top_1_over_eta_of_a_rung():
    records = [done(i, 0, s) for i, s in enumerate([0.1, 0.6, 0.3, 0.5, 0.2, 0.4])]
    records += [running(1, 1), running(3, 1)]  # the top 2 of 6 are promoted; 5 (0.4) is third
    assert ASHA(max_budget=27).next_job(records, 6, None) == new()


def test_asha_never_promotes_a_trial_twice():
    records = [done(i, 0, s) for i, s in enumerate([0.1, 0.9, 0.8, 0.2, 0.3, 0.4])]
    records.append(failed(1, 1))  # the best was promoted and failed at rung 1
    assert ASHA(max_budget=27).next_job(records, 6, None) == promote(2, 1)


def test_asha_breaks_score_ties_by_earlier_trial_id():
    records = [done(5, 0, 0.5), done(2, 0, 0.5), done(7, 0, 0.5)]
    assert ASHA(max_budget=27).next_job(records, 8, None) == promote(2, 1)


def test_asha_never_promotes_a_failed_trial():
    records = [failed(0, 0), failed(1, 0), failed(2, 0)]
    assert ASHA(max_budget=27).next_job(records, 3, None) == new()


def test_asha_counts_failed_trials_in_the_rung_size_but_ranks_them_last():
    records = [failed(0, 0), done(1, 0, 0.2), failed(2, 0), done(3, 0, 0.1)]
    assert ASHA(max_budget=27).next_job(records, 4, None) == promote(1, 1)


def test_asha_ranks_a_finished_trial_without_a_score_above_failed_ones():
    records = [failed(0, 0), RungRecord(1, 0, 0, 1.0, "finished", None), failed(2, 0)]
    assert ASHA(max_budget=27).next_job(records, 3, None) == promote(1, 1)


def test_asha_does_not_count_or_rank_running_records():
    records = [done(0, 0, 0.2), done(1, 0, 0.9)] + [running(i, 0) for i in range(2, 8)]
    assert ASHA(max_budget=27).next_job(records, 8, None) == new()


def test_asha_never_promotes_from_the_top_rung():
    records = [done(i, 3, i / 10) for i in range(9)]
    assert ASHA(max_budget=27).next_job(records, 9, None) == new()
    assert ASHA(max_budget=27).next_job(records, 9, max_trials=9) is None


def test_asha_starts_a_new_config_when_no_rung_has_a_candidate():
    assert ASHA(max_budget=27).next_job([], 0, None) == new()
    assert ASHA(max_budget=27).next_job([done(0, 0, 0.5)], 1, 10) == new()


def test_asha_waits_when_max_trials_is_reached_and_jobs_are_running():
    records = [done(0, 0, 0.5), running(1, 0)]
    assert ASHA(max_budget=27).next_job(records, 2, max_trials=2) is WAIT


def test_asha_ends_when_max_trials_is_reached_and_nothing_is_running():
    records = [done(0, 0, 0.5), done(1, 0, 0.4)]
    assert ASHA(max_budget=27).next_job(records, 2, max_trials=2) is None


def test_asha_still_promotes_after_max_trials_is_reached():
    records = [done(0, 0, 0.5), done(1, 0, 0.4), done(2, 0, 0.3)]
    assert ASHA(max_budget=27).next_job(records, 3, max_trials=3) == promote(0, 1)


def test_asha_starts_exactly_max_trials_configs_and_reaches_the_top_rung():
    result = simulate(ASHA(max_budget=27), n_workers=4, max_trials=90)
    assert result.n_configs == 90
    assert result.trials_per_rung[(0, 0)] == 90
    assert result.trials_per_rung[(0, 3)] >= 1


# ---------------------------------------------------------------- simulate


@pytest.mark.parametrize("resume, expected", [(True, 297.0), (False, 405.0)])
def test_simulate_successive_halving_total_epochs_equal_the_closed_form(resume, expected):
    policy = SuccessiveHalving(max_budget=81, eta=3)
    assert closed_form([(HB81_SIZES[0], HB81_BUDGETS[0])], resume) == expected
    assert simulate(policy, n_workers=4, resume=resume).total_epochs == expected


@pytest.mark.parametrize("resume, expected", [(True, 1581.0), (False, 1902.0)])
def test_simulate_hyperband_total_epochs_equal_the_closed_form(resume, expected):
    assert closed_form(list(zip(HB81_SIZES, HB81_BUDGETS)), resume) == expected
    assert simulate(Hyperband(max_budget=81), n_workers=4, resume=resume).total_epochs == expected


@pytest.mark.parametrize("n_workers", [1, 2, 7, 200])
def test_simulate_total_epochs_of_a_plan_do_not_depend_on_the_worker_count(n_workers):
    assert simulate(Hyperband(max_budget=27), n_workers=n_workers).total_epochs == closed_form(
        [([27, 9, 3, 1], [1, 3, 9, 27]), ([12, 4, 1], [3, 9, 27]), ([6, 2], [9, 27]), ([4], [27])], True
    )


def test_simulate_with_one_worker_keeps_it_busy_for_the_whole_makespan():
    result = simulate(Hyperband(max_budget=27), n_workers=1)
    assert result.utilization == 1.0
    assert result.makespan == result.total_epochs


def test_simulate_is_deterministic_for_a_seed():
    a = simulate(ASHA(max_budget=27), n_workers=3, max_trials=60, seed=7)
    b = simulate(ASHA(max_budget=27), n_workers=3, max_trials=60, seed=7)
    c = simulate(ASHA(max_budget=27), n_workers=3, max_trials=60, seed=8)
    assert a == b
    assert a.records == b.records
    assert a.records != c.records


def test_simulate_refuses_asha_without_max_trials():
    with pytest.raises(ConfigError, match=r"max_trials=None.*simulate\(ASHA\(\), max_trials=100\)"):
        simulate(ASHA())


def test_simulate_refuses_a_policy_that_waits_with_nothing_running():
    class Stuck(ASHA):
        def next_job(self, records, n_started, max_trials=None):
            return WAIT

    with pytest.raises(RuntimeError, match="WAIT with no job running"):
        simulate(Stuck(), max_trials=1)


def test_simulate_reports_the_schedulers_resource_name():
    result = simulate(ASHA(max_budget=9, resource="steps"), max_trials=3)
    assert result.resource == "steps"


# ---------------------------------------------------------------- purity and replay


POLICIES = [
    SuccessiveHalving(max_budget=27, eta=3),
    Hyperband(max_budget=27, eta=3),
    ASHA(max_budget=27, eta=3),
]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_decisions_replay_identically_on_a_scheduler_rebuilt_from_its_params(policy):
    calls = drive(policy, n_workers=4, max_trials=60, seed=1, fail_every=5)
    rebuilt = get_scheduler(policy.name, **policy.get_params())
    assert rebuilt is not policy
    replayed = [rebuilt.next_job(records, n_started, 60) for records, n_started, _ in calls]
    assert replayed == [decision for _, _, decision in calls]
    assert [policy.next_job(r, n, 60) for r, n, _ in reversed(calls)] == [d for *_, d in reversed(calls)]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_a_full_run_with_failures_ends_and_never_promotes_a_failed_trial(policy):
    calls = drive(policy, n_workers=3, max_trials=60, seed=2, fail_every=4)
    assert calls[-1][2] is None
    final = {(r.trial_id, r.rung): r for r in calls[-1][0]}
    for _, _, job in calls:
        if isinstance(job, Job) and job.kind == "promote":
            assert final[(job.trial_id, job.rung - 1)].status == "finished"


# ---------------------------------------------------------------- settings and records


def test_from_params_refuses_an_unknown_parameter_with_the_valid_list_and_a_suggestion():
    with pytest.raises(ConfigError, match=r"'max_budjet' \(did you mean 'max_budget'\?\); valid parameters"):
        SuccessiveHalving.from_params({"max_budjet": 9})


@pytest.mark.parametrize("eta", [1, 0, 2.5, True, "3", float("nan")])
def test_eta_that_is_not_an_integer_of_at_least_two_is_refused(eta):
    with pytest.raises(ConfigError, match=rf"eta must be an integer >= 2.*got eta={eta!r}.*eta=3\)"):
        get_scheduler("hyperband", eta=eta)


def test_eta_given_as_an_integral_float_is_accepted():
    assert get_scheduler("asha", max_budget=9, eta=3.0).budgets() == [1.0, 3.0, 9.0]


@pytest.mark.parametrize("min_budget, max_budget", [(10, 5), (0, 81), (-1, 81)])
def test_budgets_outside_zero_min_max_order_are_refused(min_budget, max_budget):
    with pytest.raises(ConfigError, match=r"0 < min_budget <= max_budget; got min_budget="):
        ASHA.from_params({"min_budget": min_budget, "max_budget": max_budget})


@pytest.mark.parametrize("n_configs", [0, -3, 2.5])
def test_successive_halving_n_configs_must_be_a_positive_integer(n_configs):
    with pytest.raises(ConfigError, match=r"n_configs must be a positive integer"):
        SuccessiveHalving.from_params({"n_configs": n_configs})


def test_init_only_stores_and_settings_are_checked_at_first_use():
    policy = SuccessiveHalving(eta=1)
    assert policy.eta == 1
    with pytest.raises(ConfigError, match="eta must be"):
        policy.next_job([], 0, None)


def test_an_empty_resource_name_is_refused():
    with pytest.raises(ConfigError, match="resource must name"):
        ASHA.from_params({"resource": ""})


@pytest.mark.parametrize(
    "name, cls",
    [
        ("sh", SuccessiveHalving),
        ("successive_halving", SuccessiveHalving),
        ("Successive-Halving", SuccessiveHalving),
        ("hyperband", Hyperband),
        ("ASHA", ASHA),
    ],
)
def test_get_scheduler_knows_each_name(name, cls):
    assert type(get_scheduler(name)) is cls


def test_get_scheduler_refuses_an_unknown_name_with_the_valid_list_and_a_suggestion():
    with pytest.raises(ConfigError, match=r"'hyperbnd' \(did you mean 'hyperband'\?\); valid names are \["):
        get_scheduler("hyperbnd")


def test_schedulers_compare_equal_and_print_by_their_params():
    assert ASHA(max_budget=9) == get_scheduler("asha", max_budget=9)
    assert ASHA(max_budget=9) != ASHA(max_budget=27)
    assert repr(ASHA(max_budget=9)) == "ASHA(min_budget=1, max_budget=9, eta=3, resource='epochs')"


def test_a_record_with_an_unknown_status_is_refused():
    with pytest.raises(ConfigError, match=r"status must be one of \['running', 'finished', 'failed'\]"):
        RungRecord(0, 0, 0, 1.0, "stopped")


def test_a_record_outside_the_plan_is_refused_as_written_by_other_settings():
    with pytest.raises(ConfigError, match=r"bracket 0, rung 4, outside this scheduler's plan"):
        SuccessiveHalving(max_budget=27).next_job([done(0, 0, 0.1), RungRecord(0, 0, 4, 81.0, "running")], 1)


def test_wait_is_a_singleton_that_survives_pickling():
    assert pickle.loads(pickle.dumps(WAIT)) is WAIT
    assert repr(WAIT) == "WAIT"


@pytest.mark.parametrize("module", ["base", "halving", "hyperband", "asha", "simulate", "__init__"])
def test_docstring_examples_run(module):
    name = "toolkit.schedulers" if module == "__init__" else f"toolkit.schedulers.{module}"
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0
    assert result.failed == 0
