"""Worker recycling: a worker process is restarted after ``recycle_after`` trials, losing nothing."""

from __future__ import annotations

from distributed import Client

from toolkit import Experiment, SearchSpace
from toolkit.evaluators import SyntheticEvaluator
from toolkit.journal import read_events
from toolkit.spaces import conv_net


def test_workers_are_restarted_after_recycle_after_trials_and_nothing_is_lost(fresh_cluster, tmp_path):
    with Client(fresh_cluster) as client:
        exp = Experiment(
            "recycle",
            SearchSpace(conv_net),
            SyntheticEvaluator(sleep=0.3),
            log_dir=tmp_path,
            recycle_after=2,
        )
        df = exp.run(client, n_trials=10, max_concurrent=2, progress=False)
    assert len(df) == 10 and df["trial_id"].is_unique
    assert (df["status"] == "finished").all()
    finished = read_events(exp.path, ["finished"])
    assert len(finished) == 10, "a trial was recorded twice"
    # Each process runs at most a couple of trials before it is replaced: more pids than workers.
    pids = {e["start"]["pid"] for e in finished}
    assert len(pids) > 2
    assert max(e["result"]["process_trials"] for e in finished) <= 3
