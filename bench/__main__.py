"""Run darch's benchmarks and regenerate the results table in ``bench/README.md``.

Usage::

    python -m bench [--quick] [NAME ...]     # run the named benches (default: all), then the table
    python -m bench --missing                # run only the benches that have no results yet
    python -m bench --only-table             # just regenerate the table from bench/results/*.json

Each bench runs as its own subprocess, ``python bench/<name>.py [--quick]`` (``--quick`` only to the
benches that take it), so one that crashes or is missing is noted and the others still run. Every bench writes ``bench/results/<name>.json`` (quick runs
of parallel, multifidelity, quality and gpu write ``<name>-quick.json``, so that they never replace a
full result); the table prefers a full result over a quick one. Durations of the runs go to
``bench/results/suite.json`` (``suite-quick.json`` with ``--quick``).

Benchmarks never affect test pass/fail: this exits 0 unless its own arguments are wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
README = BENCH / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
ALL = ("sample", "overhead", "scale", "evaluator", "parallel", "multifidelity", "quality", "soak", "gpu")
BOOKKEEPING = {
    "bench", "benchmark", "what", "when", "machine", "quick", "note", "notes", "versions", "duration_s", "wall_s",
}  # fmt: skip
SOAK_KEYS = ("trials", "finished", "failed", "kills", "lost_attempts", "ms_per_trial")


# -- running ----------------------------------------------------------------------------------------
def result_files(name: str) -> list[Path]:
    """The results a bench left, full first."""
    return [p for p in (RESULTS / f"{name}.json", RESULTS / f"{name}-quick.json") if p.exists()]


def run_bench(name: str, quick: bool, timeout: float | None) -> dict[str, Any]:
    """Run ``bench/<name>.py`` in a subprocess; return its exit status, duration and output tail."""
    script = BENCH / f"{name}.py"
    if not script.exists():
        print(f"[bench] {name}: no script {script.relative_to(ROOT)}; skipped", flush=True)
        return {"status": "missing"}
    quick_flag = quick and "--quick" in script.read_text()  # a bench without the flag runs in full
    cmd = [sys.executable, str(script), *(["--quick"] if quick_flag else [])]
    print(f"[bench] {name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        elapsed = round(time.perf_counter() - t0, 1)
        print(f"[bench] {name}: timed out after {elapsed} s", flush=True)
        return {"status": "timeout", "duration_s": elapsed, "tail": _tail(exc.stderr)}
    elapsed = round(time.perf_counter() - t0, 1)
    last = proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else []
    status = "ok" if proc.returncode == 0 else f"rc={proc.returncode}"
    print(f"[bench] {name}: {status} in {elapsed} s", flush=True)
    if proc.returncode != 0:
        print(_tail(proc.stderr) or _tail(proc.stdout), flush=True)
    out: dict[str, Any] = {"status": status, "duration_s": elapsed}
    if last:
        try:
            json.loads(last[0])
        except ValueError:
            out["last_line_not_json"] = last[0][:200]
    if proc.returncode != 0:
        out["tail"] = _tail(proc.stderr)
    return out


def _tail(text: str | bytes | None, n: int = 1500) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-n:]


def record_suite(runs: dict[str, dict[str, Any]], quick: bool, wall: float) -> None:
    """Merge this invocation's durations into ``suite[-quick].json``."""
    path = RESULTS / f"suite{'-quick' if quick else ''}.json"
    try:
        suite = json.loads(path.read_text())
    except (OSError, ValueError):
        suite = {"benches": {}}
    suite.setdefault("benches", {}).update(
        {k: {**v, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")} for k, v in runs.items()}
    )
    suite["quick"] = quick
    suite["last_invocation"] = {"benches": list(runs), "wall_s": round(wall, 1)}
    suite["total_s"] = round(sum(v.get("duration_s") or 0.0 for v in suite["benches"].values()), 1)
    suite["cores"] = os.cpu_count()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(suite, indent=2) + "\n")


# -- reading results --------------------------------------------------------------------------------
def _lookup(result: dict[str, Any], key: str) -> Any:
    if key in result:
        return result[key]
    for section in ("summary", "figures_flat"):
        if isinstance(result.get(section), dict) and key in result[section]:
            return result[section][key]
    return None


def _parse_goal(text: Any) -> tuple[str, float] | None:
    m = re.match(r"\s*(<=|>=|<|>|==)\s*([-+0-9.eE]+)", str(text))
    return (m.group(1), float(m.group(2))) if m else None


def _check(value: Any, goal: Any) -> bool | None:
    parsed = _parse_goal(goal)
    if parsed is None or not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    op, target = parsed
    return {"<=": value <= target, ">=": value >= target, "<": value < target, ">": value > target}.get(
        op, value == target
    )


def _lower_is_better(key: str) -> bool:
    if key.endswith("_per_s") or "efficiency" in key or "utilization" in key:
        return False
    return bool(re.search(r"(_s|_ms|ms_per_trial|drift|_mb|fraction)$", key)) or "ratio_darch_vs" in key


# Anchors that benches without a "figures" list record under other keys: {bench: {key: {label: key}}}.
KNOWN_ANCHORS: dict[str, dict[str, dict[str, str]]] = {
    "scale": {
        "results_100k_s": {"Optuna trials_dataframe()": "optuna_dataframe_100k_s"},
        "results_10k_s": {"Optuna trials_dataframe()": "optuna_dataframe_10k_s"},
    },
}


def _overhead_figures(result: dict[str, Any]) -> list[dict[str, Any]]:
    goals = result.get("goals") or {}
    anchors = {
        "raw Dask client.map": result.get("dask_ms_per_trial"),
        "Optuna + DaskStorage": result.get("optuna_dask_ms_per_trial"),
    }
    parts = [f"darch/raw Dask {goals['ratio_darch_vs_dask']}"] if "ratio_darch_vs_dask" in goals else []
    if "ratio_optuna_dask_vs_darch" in goals:
        parts.append(f"Optuna-Dask/darch {goals['ratio_optuna_dask_vs_darch']}")
    met = [result.get("meets_goal_darch_vs_dask"), result.get("meets_goal_optuna_dask_vs_darch")]
    return [
        {
            "key": "darch_ms_per_trial",
            "label": "per-trial overhead, no-op trials, 2 workers",
            "darch": result.get("darch_ms_per_trial"),
            "unit": "ms/trial",
            "higher_is_better": False,
            "anchors": {k: v for k, v in anchors.items() if v is not None},
            "goal": "; ".join(parts) or None,
            "met": all(met) if all(m is not None for m in met) else None,
        }
    ]


def figures_of(name: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    """The table rows of one result: its own ``figures`` list, or rows guessed from its keys."""
    if isinstance(result.get("figures"), list):
        return [f for f in result["figures"] if isinstance(f, dict)]
    if name == "overhead" and "darch_ms_per_trial" in result:
        return _overhead_figures(result)
    goals: dict[str, str] = {}
    for key, text in (result.get("goals") or {}).items():
        if _parse_goal(text):
            goals[key] = str(text)
    for key, value in result.items():
        if key.startswith("goal_") and isinstance(value, (int, float)) and not isinstance(value, bool):
            target = key[len("goal_") :]
            goals.setdefault(target, f"{'<=' if _lower_is_better(target) else '>='} {value}")
    rows = []
    for key, goal in goals.items():
        value = _lookup(result, key)
        met = result.get(f"meets_goal_{key}")
        if met is None:
            for mkey, mval in result.items():
                if mkey.startswith("meets_goal_") and key.startswith(mkey[len("meets_goal_") :]):
                    met = mval
            if met is None and len(goals) == 1 and isinstance(result.get("meets_goal"), bool):
                met = result["meets_goal"]
        if met is None:
            met = _check(value, goal)
        anchors = {
            label: _lookup(result, akey)
            for label, akey in KNOWN_ANCHORS.get(name, {}).get(key, {}).items()
            if _lookup(result, akey) is not None
        }
        rows.append(
            {
                "key": key,
                "label": key,
                "darch": value if value is not None else "not measured",
                "unit": "",
                "higher_is_better": not _lower_is_better(key),
                "anchors": anchors,
                "goal": goal,
                "met": met,
            }
        )
    if rows:
        return rows
    if isinstance(result.get("skipped"), str):
        return [
            {"key": "skipped", "label": "skipped", "darch": result["skipped"], "anchors": {}, "goal": None}
        ]
    if isinstance(result.get("ok"), bool):
        failed = [k[3:] for k, v in result.items() if k.startswith("ok_") and v is False]
        rows.append(
            {
                "key": "ok",
                "label": "all checks pass" + (f" (failed: {', '.join(failed)})" if failed else ""),
                "darch": result["ok"],
                "anchors": {},
                "goal": "true",
                "met": result["ok"],
            }
        )
        pool = {k: result[k] for k in SOAK_KEYS if k in result}
    else:
        pool = result.get("summary") if isinstance(result.get("summary"), dict) else result
    for key, value in pool.items():
        if key in BOOKKEEPING or key.startswith("ok_") or len(rows) >= 8:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append({"key": key, "label": key, "darch": value, "anchors": {}, "goal": None, "met": None})
    return rows


# -- the table --------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return str(value)
        if value == 0:
            return "0"
        mag = abs(value)
        if mag >= 1000:
            return f"{value:,.0f}"
        if mag >= 10:
            return f"{value:.1f}"
        if mag >= 0.01:
            return f"{value:.3g}" if mag < 1 else f"{value:.3f}".rstrip("0").rstrip(".")
        return f"{value:.2g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "/").replace("\n", " ")


def _advantage(darch: Any, anchor: Any, higher_is_better: bool | None) -> str:
    """How many times better darch is than the anchor (> 1: darch is better)."""
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (darch, anchor))
    if not numbers or higher_is_better is None or not darch or not anchor:
        return "—"
    ratio = darch / anchor if higher_is_better else anchor / darch
    return f"{ratio:.2f}×"


def _met(met: Any) -> str:
    return {True: "**met**", False: "**missed**"}.get(met, "—")


def render_table(chosen: dict[str, tuple[Path, dict[str, Any]]], suite: dict[str, Any]) -> str:
    lines = [
        "Generated by `python -m bench` from `bench/results/*.json`; do not edit by hand.",
        "“darch ×” is how many times better darch is than the anchor (above 1: darch is better; for",
        "lower-is-better figures it is anchor / darch). Anchors are measured in the same run, on the same",
        "machine.",
        "",
        "| bench | figure | darch | anchors | darch × | goal | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (path, result) in chosen.items():
        tag = f"`{name}`" + (" (quick)" if result.get("quick") or path.stem.endswith("-quick") else "")
        for fig in figures_of(name, result):
            unit = f" {fig['unit']}" if fig.get("unit") else ""
            anchors = fig.get("anchors") or {}
            anchor_txt = "<br>".join(f"{k}: {_fmt(v)}" for k, v in anchors.items()) or "—"
            adv = "<br>".join(
                _advantage(fig.get("darch"), v, fig.get("higher_is_better")) for v in anchors.values()
            )
            lines.append(
                f"| {tag} | {_fmt(fig.get('label') or fig.get('key'))}{unit} | {_fmt(fig.get('darch'))} | "
                f"{anchor_txt} | {adv or '—'} | {_fmt(fig.get('goal'))} | {_met(fig.get('met'))} |"
            )
    lines += ["", "**Runs**", "", "| bench | file | when | duration | load average (before → after) |"]
    lines.append("|---|---|---|---|---|")
    for name, (path, result) in chosen.items():
        duration = result.get("duration_s") or result.get("wall_s")
        load = result.get("load_average_before_after")
        load_txt = f"{load[0]} → {load[1]}" if isinstance(load, list) and len(load) == 2 else "—"
        lines.append(
            f"| `{name}` | `{path.relative_to(ROOT)}` | {result.get('when', '—')} | "
            f"{_fmt(duration) + ' s' if duration is not None else '—'} | {load_txt} |"
        )
    for label, key in (("full suite", "suite"), ("`--quick` suite", "suite-quick")):
        s = suite.get(key)
        if s and s.get("benches"):
            parts = ", ".join(
                f"{n} {_fmt(v.get('duration_s'))} s"
                + ("" if v.get("status") == "ok" else f" ({v.get('status')})")
                for n, v in s["benches"].items()
            )
            lines += [
                "",
                f"**{label}**: {_fmt(s.get('total_s'))} s in all on {s.get('cores')} cores — {parts}.",
            ]
    described = [
        r["machine"]
        for _p, r in chosen.values()
        if isinstance(r.get("machine"), dict) and r["machine"].get("cpu")
    ]
    machines = {(m.get("cpu"), m.get("cores")) for m in described}
    tools: dict[str, str] = {}
    for _p, r in chosen.values():
        tools.update({k: v for k, v in (r.get("tool_versions") or {}).items() if v})
    if described:
        m = max(described, key=lambda d: len(d.get("versions") or {}))
        versions = ", ".join(f"{k} {v}" for k, v in {**(m.get("versions") or {}), **tools}.items() if v)
        lines += [
            "",
            f"**Machine**: {m.get('cpu')}, {m.get('cores')} cores"
            + (f", {m.get('memory_gib')} GiB" if m.get("memory_gib") else "")
            + f"; {m.get('platform')}; Python {m.get('python')}; {versions}."
            + (
                f" (The results come from {len(machines)} different CPUs or core counts.)"
                if len(machines) > 1
                else ""
            ),
        ]
    return "\n".join(lines)


def regenerate_readme() -> None:
    chosen: dict[str, tuple[Path, dict[str, Any]]] = {}
    names = list(ALL) + sorted(
        {p.stem.removesuffix("-quick") for p in RESULTS.glob("*.json")} - set(ALL) - {"suite"}
    )
    for name in names:
        for path in result_files(name):
            try:
                chosen[name] = (path, json.loads(path.read_text()))
                break
            except (OSError, ValueError) as exc:
                print(f"[bench] cannot read {path}: {exc}", flush=True)
    suite = {}
    for key in ("suite", "suite-quick"):
        with contextlib.suppress(OSError, ValueError):
            suite[key] = json.loads((RESULTS / f"{key}.json").read_text())
    table = render_table(chosen, suite)
    text = README.read_text() if README.exists() else f"# darch benchmarks\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text = text.rstrip() + f"\n\n## Results\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _old, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{table}\n{END}{tail}")
    print(f"[bench] table regenerated in {README.relative_to(ROOT)} from {len(chosen)} result(s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benches to run (default: all of {list(ALL)})"
    )
    parser.add_argument("--quick", action="store_true", help="pass --quick to every bench")
    parser.add_argument("--only-table", action="store_true", help="run nothing; regenerate the table")
    parser.add_argument("--missing", action="store_true", help="run only the benches without results")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed to one bench (1800)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if not (BENCH / f"{n}.py").exists() and n not in ALL]
    if unknown:
        print(f"[bench] note: no script for {unknown}; they will be reported missing", flush=True)
    runs: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    if not args.only_table:
        for name in args.names or ALL:
            if args.missing and result_files(name):
                print(f"[bench] {name}: results present; not rerun (--missing)", flush=True)
                continue
            runs[name] = run_bench(name, args.quick, args.timeout)
        if any(r.get("status") != "missing" for r in runs.values()):
            record_suite(runs, args.quick, time.perf_counter() - t0)
            print(f"[bench] ran {len(runs)} bench(es) in {time.perf_counter() - t0:.0f} s", flush=True)
    regenerate_readme()
    return 0


if __name__ == "__main__":
    sys.exit(main())
