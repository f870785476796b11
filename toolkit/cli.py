"""The ``darch`` command: run, resume and inspect searches from a shell.

    darch run conf/experiments/demo.yaml [--cluster local|PROFILE] [--jobs K] [--trials N]
    darch resume logs/demo
    darch results logs/demo --top 10 [--format table|csv|parquet]
    darch cluster bridges2-gpu --print-job-script

User mistakes print one line, ``darch: error: ...``, and exit with code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from toolkit.errors import ConfigError, DarchError

__all__ = ["main"]

logger = logging.getLogger("toolkit")

EPILOG = "Docs and notebooks: see README.md. Exit codes: 0 ok, 1 search error, 2 bad input, 130 interrupted."


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="darch",
        description="Architecture and hyperparameter search on Dask, for laptops and SLURM clusters.",
        epilog=EPILOG,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log what the search does (INFO level)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add_cluster_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--cluster",
            default="local",
            metavar="PROFILE",
            help="'local' (an embedded LocalCluster, the default), a profile of conf/clusters/, "
            "such as bridges2-gpu, or the address of a running Dask scheduler (tcp://HOST:PORT)",
        )
        sp.add_argument("--jobs", type=int, metavar="K", help="SLURM jobs to request (cluster.scale(jobs=K))")
        sp.add_argument(
            "--trials", type=int, metavar="N", help="number of trials (overrides budget.n_trials)"
        )
        sp.add_argument("--max-concurrent", type=int, metavar="N", help="trials in flight at most")
        sp.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    run = sub.add_parser(
        "run",
        help="run the search an experiment file describes",
        description="Run the search described by an experiment YAML file (see conf/experiments/). "
        "If its folder already holds the same search, it is continued.",
        epilog="Example: darch run conf/experiments/demo.yaml --trials 16",
    )
    run.add_argument("config", metavar="CONFIG.yaml", help="experiment file")
    run.add_argument("--log-dir", metavar="DIR", help="where experiment folders go (overrides log_dir)")
    add_cluster_args(run)

    resume = sub.add_parser(
        "resume",
        help="continue an interrupted search",
        description="Continue a search from its journal: finished trials are kept, trials that were in "
        "flight run again, and the searcher is rebuilt from the journal.",
        epilog="Example: darch resume logs/demo --cluster bridges2-gpu --jobs 4",
    )
    resume.add_argument("path", metavar="PATH", help="experiment folder (logs/<name>)")
    add_cluster_args(resume)

    results = sub.add_parser(
        "results",
        help="show or export a search's results",
        description="Read a journal (also while its search runs) and print or export one row per trial.",
        epilog="Example: darch results logs/demo --top 5",
    )
    results.add_argument("path", metavar="PATH", help="experiment folder (logs/<name>)")
    results.add_argument("--top", type=int, metavar="N", help="only the N best finished trials")
    results.add_argument("--format", choices=("table", "csv", "parquet"), default="table")
    results.add_argument("--output", "-o", metavar="FILE", help="file to write (required for parquet)")

    cluster = sub.add_parser(
        "cluster",
        help="inspect cluster profiles",
        description="Show the cluster profiles of conf/clusters/ and the job script a profile submits.",
        epilog="Example: darch cluster bridges2-gpu --print-job-script",
    )
    cluster.add_argument("profile", nargs="?", help="profile name")
    cluster.add_argument(
        "--print-job-script", action="store_true", help="print the job script, submit nothing"
    )
    cluster.add_argument("--list", action="store_true", help="list the profiles")
    cluster.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a profile value (repeatable)",
    )
    return p


def _positive(value: int | None, flag: str) -> None:
    if value is not None and value <= 0:
        raise ConfigError(f"{flag} must be a positive integer; got {value}. For example {flag} 16.")


@contextlib.contextmanager
def _client(profile: str, jobs: int | None) -> Iterator[Any]:
    """``None`` for the embedded LocalCluster, else a client on the profile's cluster (or address)."""
    if profile == "local" and not jobs:
        yield None
        return
    from distributed import Client

    from toolkit.cluster import connect, make_cluster

    if "://" in profile:
        if jobs:
            raise ConfigError(
                f"--jobs scales a cluster profile; {profile!r} is the address of a running scheduler, "
                "whose workers are started elsewhere. Drop --jobs, or give a profile: --cluster bridges2-gpu --jobs 4."
            )
        with connect(profile) as client:
            yield client
        return

    cluster = make_cluster(profile, jobs=jobs) if jobs else make_cluster(profile)
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def _print_leaderboard(exp: Any, top: int = 10) -> None:
    from toolkit.results import load_results

    res = load_results(exp.path)
    df = res.frame()
    print(_table(df, res.objective, top))
    print(f"\njournal: {exp.path}")


def _table(df: Any, objective: Any, top: int | None) -> str:
    import pandas as pd

    name = objective.name
    done = df[df["status"] == "finished"].sort_values(name, ascending=objective.mode == "min")
    if done.empty:
        summary = ", ".join(f"{int(v)} {k}" for k, v in df["status"].value_counts().items() if v)
        failed = df[df["status"] == "failed"]
        text = f"{summary or 'no trials yet'}\nno finished trial yet"
        if not failed.empty:
            first = failed.iloc[0]
            text += f"; the first failure (trial {first['trial_id']}): {first['error']}"
        return text
    if top:
        done = done.head(top)
    params = [c for c in df.columns if c.startswith("param_") and df[c].notna().all()]
    cols = ["trial_id", name, "best_epoch", "num_params", "duration_s", *params]
    cols = [c for c in cols if c in done.columns and done[c].notna().any()]
    with pd.option_context("display.max_columns", 12, "display.width", 160, "display.precision", 4):
        summary = df["status"].value_counts()
        counts = ", ".join(f"{int(v)} {k}" for k, v in summary.items() if v)
        return f"{counts}\n" + done[cols].to_string(index=False)


def _cmd_run(args: argparse.Namespace) -> int:
    from toolkit.config import load_experiment_config

    cfg = load_experiment_config(args.config)
    _positive(args.trials, "--trials")
    _positive(args.jobs, "--jobs")
    _positive(args.max_concurrent, "--max-concurrent")
    exp = cfg.build(log_dir=args.log_dir)
    budget = cfg.budget
    n_trials = args.trials or budget.get("n_trials")
    exp.check(n_trials)  # a locked folder or another space is refused before any cluster starts
    with _client(args.cluster, args.jobs) as client:
        exp.run(
            client,
            n_trials=n_trials,
            max_concurrent=args.max_concurrent or budget.get("max_concurrent"),
            timeout=budget.get("timeout"),
            progress=not args.no_progress,
        )
    _print_leaderboard(exp)
    return 0


def _cmd_resume(args: argparse.Namespace) -> int:
    from toolkit.experiment import Experiment

    _positive(args.trials, "--trials")
    _positive(args.jobs, "--jobs")
    _positive(args.max_concurrent, "--max-concurrent")
    exp = Experiment.load(args.path)
    exp.check(args.trials)
    with _client(args.cluster, args.jobs) as client:
        exp.run(
            client, n_trials=args.trials, max_concurrent=args.max_concurrent, progress=not args.no_progress
        )
    _print_leaderboard(exp)
    return 0


def _cmd_results(args: argparse.Namespace) -> int:
    from toolkit.results import load_results

    _positive(args.top, "--top")
    res = load_results(args.path)
    df = res.frame()
    if args.format == "table":
        text = _table(df, res.objective, args.top)
        if args.output:
            with open(args.output, "w") as fh:
                fh.write(text + "\n")
        else:
            print(text)
    elif args.format == "csv":
        if args.top:
            df = (
                df[df["status"] == "finished"]
                .sort_values(res.objective.name, ascending=res.objective.mode == "min")
                .head(args.top)
            )
        df.to_csv(args.output or sys.stdout, index=False)
    else:
        if not args.output:
            raise ConfigError("--format parquet needs --output FILE; for example -o results.parquet.")
        res.to_parquet(args.output)
        print(f"wrote {args.output}")
    return 0


def _cmd_cluster(args: argparse.Namespace) -> int:
    from toolkit import cluster as cl

    if args.list or not args.profile:
        for name in cl.list_profiles():
            desc = cl.profile_settings(name).get("description") or ""
            print(f"{name:20s} {desc}")
        return 0
    overrides: dict[str, Any] = {}
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set takes KEY=VALUE; got {item!r}. For example --set walltime=02:00:00.")
        key, _, value = item.partition("=")
        import yaml

        overrides[key.strip()] = yaml.safe_load(value)
    if args.print_job_script:
        print(cl.job_script(args.profile, **overrides))
    else:
        print(
            cl.describe_profile(args.profile, **overrides)
            if hasattr(cl, "describe_profile")
            else args.profile
        )
    return 0


COMMANDS = {"run": _cmd_run, "resume": _cmd_resume, "results": _cmd_results, "cluster": _cmd_cluster}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``darch`` console script."""
    args = _parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if args.verbose else logging.WARNING)
    logger.propagate = False
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        return COMMANDS[args.command](args)
    except DarchError as exc:
        print(f"darch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "darch: interrupted; the journal is intact: continue with `darch resume PATH`.", file=sys.stderr
        )
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
