"""Dask clusters from named profiles: a LocalCluster, or a SLURMCluster for an HPC site.

A profile is a commented YAML file in ``conf/clusters/`` that defines ``darch.clusters.<name>``.
The packaged profiles are registered as :mod:`dask.config` defaults, so the usual layering applies,
highest first:

1. keyword overrides: ``make_cluster("bridges2-gpu", walltime="08:00:00")``;
2. the user's own YAML in ``~/.config/dask/`` (same ``darch: clusters: <name>:`` keys), or a
   ``DASK_DARCH__CLUSTERS__BRIDGES2_GPU__WALLTIME=08:00:00`` environment variable;
3. the packaged profile.

Every value is read through one helper, :func:`_setting`.

SLURM profiles add three things to what dask-jobqueue does:

* **TLS on by default.** ``security=True`` makes dask-jobqueue create ``Security.temporary()``
  credentials and write the worker's copy into ``shared_temp_directory``, which darch makes a
  private (0700) folder on the shared filesystem; the key files are 0600 and go when the cluster
  object goes. ``tls=False`` turns it off, with a warning.
* **Walltime-aware workers.** Each worker gets ``--lifetime`` and ``--lifetime-stagger`` so that it
  retires before SLURM kills its job; the job exports ``DARCH_JOB_DEADLINE`` and every worker
  publishes its own deadline (see :func:`worker_deadline`).
* **One GPU per worker.** ``--resources GPU=n`` is derived from the job's GPU request; when one job
  runs several worker processes, each is pinned to its own devices through
  ``CUDA_VISIBLE_DEVICES`` by a worker preload (:func:`dask_setup`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import dask
import dask.config
import dask.system
import yaml
from dask.utils import parse_bytes, parse_timedelta

from toolkit.errors import ConfigError, did_you_mean

logger = logging.getLogger(__name__)

__all__ = [
    "connect", "dask_setup", "job_script", "list_profiles", "make_cluster", "profile_settings",
    "worker_deadline",
]  # fmt: skip

CONFIG_KEY = "darch.clusters"
# The packaged profiles: conf/clusters/ of the source tree, or toolkit/conf/clusters/ inside a wheel.
PROFILE_DIRS = (
    Path(__file__).resolve().parents[1] / "conf" / "clusters",
    Path(__file__).resolve().parent / "conf" / "clusters",
)

# Settings each kind of profile accepts (YAML spells them with '-', keywords with '_').
_COMMON = {"kind", "description", "resources", "dashboard_link"}
_LOCAL = _COMMON | {
    "n_workers", "threads_per_worker", "processes", "memory_limit", "env", "dashboard_address",
    "local_directory", "silence_logs",
}  # fmt: skip
_JOBQUEUE = {  # dask_jobqueue.SLURMCluster's keywords that a profile may set
    "cores", "memory", "processes", "nanny", "interface", "death_timeout", "local_directory",
    "worker_command", "worker_extra_args", "job_extra_directives", "job_script_prologue",
    "job_directives_skip", "log_directory", "shebang", "python", "job_name", "queue", "account",
    "walltime", "job_cpu", "job_mem", "shared_temp_directory", "scheduler_options", "silence_logs", "name",
}  # fmt: skip
_DARCH_SLURM = {
    "tls", "security", "lifetime", "lifetime_margin", "lifetime_stagger", "worker_setup", "account_env",
    "replace_jobs",
}  # fmt: skip
_SLURM = _COMMON | _JOBQUEUE | _DARCH_SLURM
_KINDS = {"local": _LOCAL, "slurm": _SLURM}

# Example values shown in error messages ("for example: make_cluster(..., key=example)").
_EXAMPLES: dict[str, Any] = {
    "cores": 5, "memory": "60GB", "processes": 1, "walltime": "02:00:00", "queue": "GPU-shared",
    "account": "abc123p", "job_extra_directives": ["--gpus=v100-32:2"], "worker_extra_args": [],
    "job_script_prologue": ["module load anaconda3", "conda activate darch"], "tls": True,
    "resources": {"GPU": 1}, "lifetime": "50 minutes", "lifetime_margin": "5 minutes",
    "lifetime_stagger": "2 minutes", "n_workers": 2, "threads_per_worker": 1, "env": {"OMP_NUM_THREADS": "1"},
    "replace_jobs": True, "worker_setup": True, "account_env": ["DARCH_ACCOUNT"],
}  # fmt: skip


# --- the packaged profiles, registered as dask.config defaults ------------------------------------


def _packaged_profiles() -> dict[str, dict[str, Any]]:
    directory = next((d for d in PROFILE_DIRS if d.is_dir()), None)
    if directory is None:
        logger.warning("no packaged cluster profiles: none of %s exists", ", ".join(map(str, PROFILE_DIRS)))
        return {}
    profiles: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        section = (data.get("darch") or {}).get("clusters") or {}
        if list(section) != [path.stem]:
            raise ConfigError(
                f"{path} must define exactly one profile, darch.clusters.{path.stem}; it defines "
                f"{sorted(section)}"
            )
        profiles.update(section)
    return profiles


dask.config.update_defaults({"darch": {"clusters": _packaged_profiles()}})


# --- the one lookup -------------------------------------------------------------------------------


def _setting(profile: str, key: str, overrides: Mapping[str, Any], default: Any = None) -> Any:
    """Return one setting: keyword override > user YAML / ``DASK_`` env > packaged profile > default.

    ``key`` is spelled with underscores; dask.config treats ``-`` and ``_`` alike.
    """
    if key in overrides:
        return overrides[key]
    return dask.config.get(f"{CONFIG_KEY}.{profile}.{key.replace('_', '-')}", default=default)


def list_profiles() -> list[str]:
    """Return the names of the cluster profiles, packaged and user-defined.

    Examples
    --------
    >>> "local" in list_profiles() and "bridges2-gpu" in list_profiles()
    True
    """
    return sorted(dask.config.get(CONFIG_KEY, default={}) or {})


def _resolve(profile: str) -> str:
    names = list_profiles()
    for candidate in (profile, str(profile).replace("_", "-"), str(profile).replace("-", "_")):
        if candidate in names:
            return candidate
    raise ConfigError(
        f"Unknown cluster profile {profile!r}{did_you_mean(profile, names)}. Valid profiles: "
        f"{', '.join(names)}. They live in conf/clusters/*.yaml; add your own under 'darch: clusters:' "
        f"in ~/.config/dask/darch.yaml. For example:\n    make_cluster('bridges2-gpu', jobs=2)"
    )


def _where(profile: str, key: str, overrides: Mapping[str, Any]) -> str:
    if key in overrides:
        return f"keyword {key}"
    return (
        f"setting {CONFIG_KEY}.{profile}.{key.replace('_', '-')} (packaged YAML, ~/.config/dask or DASK_ env)"
    )


def _bad(profile: str, key: str, value: Any, overrides: Mapping[str, Any], need: str) -> ConfigError:
    example = _EXAMPLES.get(key, "...")
    return ConfigError(
        f"make_cluster({profile!r}): {_where(profile, key, overrides)} {need}; received {value!r}. "
        f"For example:\n    make_cluster({profile!r}, {key}={example!r})"
    )


# --- validation -----------------------------------------------------------------------------------


def walltime_seconds(walltime: str | int) -> int:
    """Return a SLURM time limit in seconds.

    Accepts SLURM's forms: ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``;
    a bare number is minutes, as for ``sbatch -t``.

    Examples
    --------
    >>> walltime_seconds("02:00:00"), walltime_seconds("1-12"), walltime_seconds(30)
    (7200, 129600, 1800)
    """
    text = str(walltime).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not match:
        raise ValueError(f"not a SLURM time limit: {walltime!r}")
    days, a, b, c = match.groups()
    if days is None:
        parts = [int(a), int(b or 0), int(c or 0)]
        if c is not None:
            hours, minutes, seconds = parts
        else:  # MM or MM:SS
            hours, minutes, seconds = 0, parts[0], parts[1]
        return hours * 3600 + minutes * 60 + seconds
    return int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)


def _is_int(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _parses(parse: Callable[[Any], Any]) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        try:
            parse(value)
        except (TypeError, ValueError):
            return False
        return True

    return check


_STRINGS = (
    "queue", "account", "interface", "local_directory", "log_directory", "shared_temp_directory", "python",
    "job_name", "description", "dashboard_link", "dashboard_address",
)  # fmt: skip
_LISTS = (
    "job_extra_directives", "job_script_prologue", "worker_extra_args", "job_directives_skip", "account_env",
)  # fmt: skip
_DURATIONS = ("lifetime", "lifetime_margin", "lifetime_stagger")
_POSITIVE = (lambda v: _is_int(v, 1), "must be a positive integer")
_BOOL = (lambda v: isinstance(v, bool), "must be true or false")
_LIST = (
    lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v),
    "must be a list of strings",
)
_DURATION = (
    lambda v: v == "auto" or v is False or _parses(parse_timedelta)(v),
    "must be 'auto', false or a duration like '50 minutes'",
)
# setting (or (kind, setting)) -> (test, what its value must be)
_RULES: dict[Any, tuple[Callable[[Any], bool], str]] = {
    "cores": _POSITIVE, "threads_per_worker": _POSITIVE, "job_cpu": _POSITIVE,
    ("slurm", "processes"): _POSITIVE, ("local", "processes"): _BOOL,
    "n_workers": (lambda v: _is_int(v, 0), "must be an integer >= 0"),
    "tls": _BOOL, "nanny": _BOOL, "replace_jobs": _BOOL, "worker_setup": _BOOL,
    "memory": (_parses(parse_bytes), "must be an amount of memory like '24GB'"),
    "walltime": (_parses(walltime_seconds), "must be a SLURM time limit like 'HH:MM:SS' or 'D-HH:MM:SS'"),
    "env": (lambda v: isinstance(v, Mapping), "must be a mapping"),
    "scheduler_options": (lambda v: isinstance(v, Mapping), "must be a mapping"),
    "resources": (lambda v: isinstance(v, Mapping) and all(isinstance(x, (int, float)) for x in v.values()),
                  "must map resource names to numbers, like {GPU: 1}"),
    "kind": (lambda v: v in _KINDS, f"must be one of {sorted(_KINDS)}"),
    "memory_limit": (lambda v: isinstance(v, (str, int, float)) and not isinstance(v, bool),
                     "must be 'auto', an amount like '4GB' or a number of bytes"),
    **dict.fromkeys(_LISTS, _LIST),
    **dict.fromkeys(_DURATIONS, _DURATION),
    **dict.fromkeys(_STRINGS, (lambda v: isinstance(v, str), "must be a string")),
}  # fmt: skip


def _check(profile: str, kind: str, key: str, value: Any, overrides: Mapping[str, Any]) -> Any:
    """Validate one non-None setting against ``_RULES``; return it, normalised."""
    test, need = _RULES.get((kind, key)) or _RULES.get(key) or ((lambda v: True), "")
    if not test(value):
        raise _bad(profile, key, value, overrides, need)
    if key in _DURATIONS and value is False and key != "lifetime":
        raise _bad(profile, key, value, overrides, "must be 'auto' or a duration")
    if key in _LISTS:
        return list(value)
    return dict(value) if isinstance(value, Mapping) else value


def profile_settings(profile: str = "local", **overrides: Any) -> dict[str, Any]:
    """Return a profile's effective settings after layering, validated, with unset ones left out.

    Raises :class:`~toolkit.errors.ConfigError` for an unknown profile, an unknown setting (a keyword
    or a key in the YAML) or a value of the wrong kind, before anything is started or submitted.

    Examples
    --------
    >>> profile_settings("bridges2-gpu", walltime="08:00:00")["walltime"]
    '08:00:00'
    """
    name = _resolve(profile)
    kind = _setting(name, "kind", overrides)
    if kind not in _KINDS:
        raise _bad(name, "kind", kind, overrides, f"must be one of {sorted(_KINDS)}")
    allowed = _KINDS[kind]
    stored = {str(k).replace("-", "_") for k in (dask.config.get(f"{CONFIG_KEY}.{name}") or {})}
    for source, keys in (("keyword", set(overrides)), ("YAML/DASK_ env setting", stored)):
        unknown = sorted(keys - allowed)
        if unknown:
            key = unknown[0]
            value = overrides[key] if key in overrides else dask.config.get(f"{CONFIG_KEY}.{name}.{key}")
            raise ConfigError(
                f"make_cluster({name!r}): unknown {source} {key!r}{did_you_mean(key, allowed)} for a {kind} "
                f"profile; received {key}={value!r}. "
                f"Valid settings: {', '.join(sorted(allowed))}. For example:\n"
                f"    make_cluster({name!r}, jobs=2, walltime='02:00:00')"
            )
    settings = {}
    for key in sorted(allowed):
        value = _setting(name, key, overrides)
        if value is not None:
            settings[key] = _check(name, kind, key, value, overrides)
    settings["profile"] = name
    return settings


# --- GPUs, lifetime, TLS --------------------------------------------------------------------------

_GPU_DIRECTIVES = (
    re.compile(r"--gres[= ](?:\S*,)?gpu(?::[A-Za-z][\w.-]*)?:(\d+)"),  # --gres=gpu:p100:1, --gres=gpu:1
    re.compile(r"--gpus(?:-per-node|-per-task)?[= ](?:[A-Za-z][\w.-]*:)?(\d+)"),  # --gpus=v100-32:8
    re.compile(r"^-G ?(?:[A-Za-z][\w.-]*:)?(\d+)"),
)


def gpus_per_job(directives: list[str]) -> int:
    """Return the number of GPUs that a job's ``#SBATCH`` directives ask for (0 when none).

    Examples
    --------
    >>> gpus_per_job(["--gpus=v100-32:8"]), gpus_per_job(["--gres=gpu:p100:1"]), gpus_per_job(["--exclusive"])
    (8, 1, 0)
    """
    found = [int(m.group(1)) for d in directives for p in _GPU_DIRECTIVES if (m := p.search(d.strip()))]
    if len(found) > 1:
        raise ConfigError(
            f"job_extra_directives ask for GPUs {len(found)} times: {directives!r}; keep one request, "
            f"for example:\n    make_cluster('bridges2-gpu', job_extra_directives=['--gpus=v100-32:2'])"
        )
    return found[0] if found else 0


def lifetime_plan(walltime: str | int, lifetime: Any = "auto", margin: Any = "auto", stagger: Any = "auto"):
    """Return ``(lifetime_s, stagger_s)`` for workers of a job with this walltime, or None for no lifetime.

    With ``"auto"``, the margin is 10% of the walltime (at least 30 s, at most 10 minutes, never
    more than a quarter of it) and the stagger 5% (at most 5 minutes); the lifetime is the walltime
    minus both, so that even the latest worker retires ``margin`` before SLURM's kill.

    Examples
    --------
    >>> lifetime_plan("01:00:00")
    (3060, 180)
    >>> lifetime_plan("00:10:00")
    (510, 30)
    """
    if lifetime is None or lifetime is False:
        return None
    wall = walltime_seconds(walltime)
    margin_s = min(600.0, max(30.0, 0.1 * wall), wall / 4) if margin == "auto" else parse_timedelta(margin)
    stagger_s = min(300.0, 0.05 * wall) if stagger == "auto" else parse_timedelta(stagger)
    life_s = wall - margin_s - stagger_s if lifetime == "auto" else parse_timedelta(lifetime)
    if life_s <= stagger_s or life_s + stagger_s > wall:
        raise ConfigError(
            f"lifetime {life_s:.0f}s with stagger {stagger_s:.0f}s does not fit in walltime {walltime!r} "
            f"({wall}s): the latest worker must retire before SLURM kills the job. For example:\n"
            f"    make_cluster('bridges2-gpu', walltime='02:00:00', lifetime='auto')"
        )
    return int(life_s), int(stagger_s)


def _private_directory(path: str) -> str:
    """Create (or tighten) a per-user folder for the TLS key files: mode 0700, owned by us."""
    expanded = os.path.abspath(os.path.expanduser(os.path.expandvars(path)))
    if "$" in expanded:
        raise ConfigError(
            f"shared_temp_directory {path!r} names an unset environment variable; for example:\n"
            f"    make_cluster('bridges2-gpu', shared_temp_directory='~/.darch/tls')"
        )
    os.makedirs(expanded, mode=0o700, exist_ok=True)
    info = os.stat(expanded)
    if info.st_uid != os.getuid():
        raise ConfigError(f"the TLS folder {expanded} belongs to another user; choose one of your own")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(expanded, 0o700)
    # dask-jobqueue deletes its key files when the cluster object is collected; a killed kernel leaves
    # them behind. Jobs read them at start (replacements too), so only week-old ones are removed.
    stale = time.time() - 7 * 86400
    for path in Path(expanded).glob(".dask-jobqueue.worker.*"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < stale:
                path.unlink()
    return expanded


def _worker_args(settings: dict[str, Any], gpus: int) -> tuple[list[str], list[str]]:
    """Return (worker_extra_args, job_script_prologue) with darch's additions."""
    args = list(settings.get("worker_extra_args", []))
    prologue = list(settings.get("job_script_prologue", []))
    processes = settings.get("processes", 1)
    resources = settings.get("resources")
    if resources is None and gpus:
        if gpus % processes:
            raise ConfigError(
                f"make_cluster({settings['profile']!r}): {gpus} GPUs per job cannot be shared evenly by "
                f"{processes} worker processes; received processes={processes}. For example:\n"
                f"    make_cluster({settings['profile']!r}, processes={gpus})"
            )
        resources = {"GPU": gpus // processes}
    if resources and "--resources" not in args:
        args += ["--resources", ",".join(f"{k}={v:g}" for k, v in resources.items())]
    if gpus and processes > 1:
        prologue.append(f"export DARCH_WORKERS_PER_JOB={processes} DARCH_GPUS_PER_WORKER={gpus // processes}")

    plan = lifetime_plan(
        settings["walltime"],
        settings.get("lifetime", "auto"),
        settings.get("lifetime_margin", "auto"),
        settings.get("lifetime_stagger", "auto"),
    )
    prologue.append(
        f"export DARCH_JOB_DEADLINE=$(( $(date +%s) + {walltime_seconds(settings['walltime'])} ))"
    )
    if plan and "--lifetime" not in args:
        args += ["--lifetime", f"{plan[0]}s", "--lifetime-stagger", f"{plan[1]}s"]
    if settings.get("worker_setup", True):
        args += ["--preload", __name__]
    return args, prologue


def _slurm_kwargs(settings: dict[str, Any]) -> dict[str, Any]:
    """Turn validated settings into SLURMCluster keyword arguments (no side effects but the TLS folder)."""
    name = settings["profile"]
    kwargs = {k: v for k, v in settings.items() if k in _JOBQUEUE}
    kwargs.setdefault("processes", 1)
    kwargs.setdefault(
        "walltime", dask.config.get("jobqueue.slurm.walltime", default="00:30:00")
    )  # jobqueue's
    settings = {**settings, "processes": kwargs["processes"], "walltime": kwargs["walltime"]}
    if kwargs.get("account") is None:
        for var in settings.get("account_env", []):
            if os.environ.get(var):
                kwargs["account"] = os.environ[var]
                logger.info("cluster %s: account %r from $%s", name, kwargs["account"], var)
                break
    if kwargs["processes"] > kwargs.get("cores", kwargs["processes"]):
        raise ConfigError(
            f"make_cluster({name!r}): processes={kwargs['processes']} is more than "
            f"cores={kwargs.get('cores')}; each worker process needs a core. For example:\n"
            f"    make_cluster({name!r}, cores=40, processes=8)"
        )
    if "log_directory" in kwargs:  # used on this side only: SLURM does not expand #SBATCH -o paths
        kwargs["log_directory"] = os.path.expanduser(os.path.expandvars(kwargs["log_directory"]))
    gpus = gpus_per_job(list(kwargs.get("job_extra_directives", [])))
    kwargs["worker_extra_args"], kwargs["job_script_prologue"] = _worker_args(settings, gpus)

    tls = settings.get("tls", True) or "security" in settings
    if tls:
        try:
            import cryptography  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                f"TLS for profile {name!r} needs the 'cryptography' package: pip install cryptography. "
                f"Or turn TLS off (not advised on shared login nodes):\n    make_cluster({name!r}, tls=False)"
            ) from exc
        kwargs["security"] = settings.get("security", True)
        kwargs["shared_temp_directory"] = _private_directory(
            settings.get("shared_temp_directory", "~/.darch/tls")
        )
    else:
        kwargs.pop("shared_temp_directory", None)
        logger.warning(
            "cluster %s: TLS is off; anyone who can reach the scheduler's port can run code as you on "
            "your workers. Leave tls=True unless you know the network is private.",
            name,
        )
    return kwargs


def _dashboard_link(setting: str | None) -> None:
    """Point ``distributed.dashboard.link`` at the Jupyter proxy when running under JupyterHub."""
    if setting in (None, "", "auto"):
        default = "{scheme}://{host}:{port}/status"  # distributed's own
        user_set = dask.config.get("distributed.dashboard.link", default=default) != default
        if "JUPYTERHUB_SERVICE_PREFIX" not in os.environ or user_set:
            return
        setting = "{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/status"
    dask.config.set({"distributed.dashboard.link": setting})
    logger.info("dashboard link template: %s", setting)


# --- building clusters ----------------------------------------------------------------------------


def _build(settings: dict[str, Any], *, dashboard: bool = True):
    if settings["kind"] == "local":
        from distributed import LocalCluster

        return LocalCluster(
            n_workers=settings.get("n_workers", dask.system.CPU_COUNT),
            threads_per_worker=settings.get("threads_per_worker", 1),
            processes=settings.get("processes", True),
            memory_limit=settings.get("memory_limit", "auto"),
            env={str(k): str(v) for k, v in settings.get("env", {}).items()},
            dashboard_address=settings.get("dashboard_address", ":8787") if dashboard else None,
            resources=settings.get("resources"),
            local_directory=settings.get("local_directory"),
            silence_logs=settings.get("silence_logs", logging.WARNING),
        )
    from dask_jobqueue import SLURMCluster

    kwargs = _slurm_kwargs(settings)
    if not dashboard:
        kwargs["scheduler_options"] = {**kwargs.get("scheduler_options", {}), "dashboard_address": ":0"}
    return SLURMCluster(**kwargs)


def make_cluster(profile: str = "local", *, jobs: int | None = None, **overrides: Any):
    """Build a Dask cluster from a named profile.

    Parameters
    ----------
    profile
        A name from :func:`list_profiles`: ``"local"`` (a LocalCluster, the default), or a SLURM
        profile such as ``"bridges2-gpu"``.
    jobs
        SLURM profiles: the number of jobs to keep running. With ``replace_jobs`` (on in the packaged
        profiles) this is ``cluster.adapt(minimum_jobs=jobs, maximum_jobs=jobs)``, so a job killed at
        walltime or cancelled is replaced; otherwise ``cluster.scale(jobs=jobs)``. Local profile: the
        number of worker processes.
    **overrides
        Any setting of the profile, spelled with underscores (``walltime="08:00:00"``,
        ``job_extra_directives=["--gpus=v100-32:2"]``, ``tls=False``). They beat the user's YAML and
        ``DASK_DARCH__CLUSTERS__...`` variables, which beat the packaged profile.

    Returns
    -------
    distributed.LocalCluster or dask_jobqueue.SLURMCluster

    Raises
    ------
    toolkit.errors.ConfigError
        For an unknown profile or setting, or a bad value; raised before anything is submitted.

    Examples
    --------
    >>> cluster = make_cluster("local", n_workers=1, dashboard_address=None)  # doctest: +SKIP
    >>> cluster = make_cluster("bridges2-gpu", jobs=4, account="abc123p")  # doctest: +SKIP
    >>> from distributed import Client; client = Client(cluster)  # doctest: +SKIP
    """
    if jobs is not None and (not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 0):
        raise ConfigError(f"jobs must be an integer >= 0; received {jobs!r}. For example:\n"
                          f"    make_cluster({profile!r}, jobs=2)")  # fmt: skip
    settings = profile_settings(profile, **overrides)
    if settings["kind"] == "local" and jobs is not None:
        settings["n_workers"] = jobs
    _dashboard_link(settings.get("dashboard_link"))
    cluster = _build(settings)
    logger.info(
        "cluster %s (%s) started: %s", settings["profile"], type(cluster).__name__, cluster.dashboard_link
    )
    if settings["kind"] == "slurm" and jobs:
        try:
            _test_submission(cluster, settings["profile"])
        except BaseException:
            cluster.close()
            raise
        if settings.get("replace_jobs", False):
            cluster.adapt(minimum_jobs=jobs, maximum_jobs=jobs)
        else:
            cluster.scale(jobs=jobs)
    return cluster


def _test_submission(cluster: Any, profile: str) -> None:
    """Ask SLURM to validate the job script (``sbatch --test-only``) before any job is submitted.

    dask-jobqueue submits jobs in the background, where a refusal (a bad partition or account) is only
    logged and the search would wait for workers that never come; this turns it into an error that
    shows SLURM's own message. Skipped when ``sbatch`` is not on this machine's PATH.
    """
    submit = getattr(cluster.job_cls, "submit_command", None) or "sbatch"
    if shutil.which(submit) is None:
        logger.warning(
            "cluster %s: %s is not on PATH; the job script cannot be checked here", profile, submit
        )
        return
    with tempfile.NamedTemporaryFile("w", prefix="darch-job-", suffix=".sh", delete=False) as fh:
        fh.write(cluster.job_script())
    try:
        out = subprocess.run(
            [submit, "--test-only", fh.name], capture_output=True, text=True, timeout=120, check=False
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"make_cluster({profile!r}): `{submit} --test-only` did not answer in 120 s; is the SLURM "
            "controller reachable from this machine (try `sinfo`)? Nothing was submitted."
        ) from None
    finally:
        os.unlink(fh.name)
    if out.returncode != 0:
        said = " ".join(line.strip() for line in (out.stderr or out.stdout).splitlines() if line.strip())
        raise ConfigError(
            f"make_cluster({profile!r}): SLURM refused the job script; {submit} said: {said!r}. Nothing was "
            f"submitted. Fix the setting it names (queue, account, walltime, memory or job_extra_directives) "
            f"in conf/clusters/{profile}.yaml, ~/.config/dask/darch.yaml or as a keyword, and see the script "
            f"with `darch cluster {profile} --print-job-script`. For example:\n"
            f"    make_cluster({profile!r}, queue='GPU-shared')"
        )


def connect(address: str, timeout: float | str | None = None, **client_kwargs: Any):
    """Return a :class:`distributed.Client` on a running Dask scheduler, or a clear error.

    Parameters
    ----------
    address
        The scheduler's address, such as ``"tcp://10.0.0.5:8786"`` (``dask scheduler`` prints it).
    timeout
        Seconds to keep trying; default ``distributed.comm.timeouts.connect`` from :mod:`dask.config`.
    **client_kwargs
        Passed to ``Client``, such as ``security=`` for a ``tls://`` scheduler.

    Raises
    ------
    toolkit.errors.ConfigError
        When the address is malformed or no scheduler answers there in time.

    Examples
    --------
    >>> client = connect("tcp://10.0.0.5:8786")  # doctest: +SKIP
    """
    from distributed import Client

    if timeout is None:
        timeout = dask.config.get("distributed.comm.timeouts.connect")
    seconds = parse_timedelta(timeout)
    try:
        return Client(address, timeout=seconds, **client_kwargs)
    except (OSError, TimeoutError, TypeError, ValueError) as exc:
        hint = (
            " It is a TLS address: connect with the cluster's credentials, Client(cluster) in the process "
            "that made it, or connect(address, security=cluster.security)."
            if str(address).startswith("tls://") and "security" not in client_kwargs
            else ""
        )
        raise ConfigError(
            f"could not reach a Dask scheduler at {address!r} within {seconds:g} s ({type(exc).__name__}: "
            f"{exc}).{hint} Check that the scheduler is running (it prints 'Scheduler at: tcp://HOST:PORT'), "
            "that the address and port are right and reachable from this machine; or give no address "
            "to start an embedded LocalCluster. A slow network may need a longer "
            "distributed.comm.timeouts.connect (DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=60s)."
        ) from None


def job_script(profile: str, **overrides: Any) -> str:
    """Return the batch script that ``make_cluster(profile, ...)`` would submit for each job.

    Nothing is submitted and SLURM need not be installed: the SLURMCluster is built (its scheduler
    starts in this process, its dashboard on a free port), asked for ``job_script()``, and closed.
    The worker name reads ``dummy-name``, and the TLS key files it names are removed afterwards.

    Examples
    --------
    >>> print(job_script("bridges2-gpu", account="abc123p"))  # doctest: +SKIP
    #!/usr/bin/env bash
    #SBATCH -J darch-worker
    #SBATCH -p GPU-shared
    #SBATCH -A abc123p
    ...
    """
    settings = profile_settings(profile, **overrides)
    if settings["kind"] != "slurm":
        slurm = [p for p in list_profiles() if _setting(p, "kind", {}) == "slurm"]
        raise ConfigError(
            f"profile {settings['profile']!r} is a {settings['kind']} cluster, which submits no job script; "
            f"SLURM profiles are {', '.join(slurm)}. For example:\n    job_script('bridges2-gpu')"
        )
    cluster = _build(settings, dashboard=False)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


# --- on the workers -------------------------------------------------------------------------------


def worker_deadline() -> float | None:
    """Return when this worker will retire (seconds since the epoch), or None if it has no limit.

    It is the earlier of the worker's staggered ``--lifetime`` and its SLURM job's walltime, as set by
    :func:`dask_setup`. Run it on the workers with ``client.run(worker_deadline)``; it is also in
    ``client.scheduler_info()["workers"][address]["metrics"]["darch_deadline"]``, and evaluators can
    read ``os.environ["DARCH_WORKER_DEADLINE"]``.

    Examples
    --------
    >>> deadlines = client.run(worker_deadline)  # doctest: +SKIP
    >>> fits = {w: t is None or t - time.time() > expected_s for w, t in deadlines.items()}  # doctest: +SKIP
    """
    value = os.environ.get("DARCH_WORKER_DEADLINE")
    return float(value) if value else None


def dask_setup(worker) -> None:
    """Worker preload (``dask worker --preload toolkit.cluster``): pin GPUs, record the deadline.

    When one job runs several worker processes (``DARCH_WORKERS_PER_JOB`` > 1), worker ``i`` (its
    name ends in ``-i``) keeps devices ``[i*g, (i+1)*g)`` of the job's ``CUDA_VISIBLE_DEVICES``, with
    ``g = DARCH_GPUS_PER_WORKER``. The deadline is the earlier of ``DARCH_JOB_DEADLINE`` and this
    worker's lifetime; it goes into ``DARCH_WORKER_DEADLINE`` and the worker metric ``darch_deadline``.

    Examples
    --------
    >>> dask_setup(worker)  # doctest: +SKIP
    """
    per_job = int(os.environ.get("DARCH_WORKERS_PER_JOB", "1") or 1)
    per_worker = int(os.environ.get("DARCH_GPUS_PER_WORKER", "0") or 0)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    suffix = str(worker.name).rsplit("-", 1)[-1]
    if per_job > 1 and per_worker and visible and not suffix.isdigit():
        logger.warning("worker %s: no -<index> in its name; GPUs left unpinned (%s)", worker.name, visible)
    elif per_job > 1 and per_worker and visible:
        index = int(suffix)
        mine = visible.split(",")[index * per_worker : (index + 1) * per_worker]
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(mine)
        logger.info("worker %s: CUDA_VISIBLE_DEVICES=%s (job has %s)", worker.name, ",".join(mine), visible)
    candidates = []
    if os.environ.get("DARCH_JOB_DEADLINE"):
        candidates.append(float(os.environ["DARCH_JOB_DEADLINE"]))
    if getattr(worker, "lifetime", None):
        candidates.append(time.time() + worker.lifetime)
    if candidates:
        deadline = min(candidates)
        os.environ["DARCH_WORKER_DEADLINE"] = f"{deadline:.0f}"
        worker.metrics["darch_deadline"] = lambda _worker: deadline
