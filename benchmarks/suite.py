"""The scale benchmark: generate (or reuse) Olist-shaped data, time every stage, print a table.

    python -m benchmarks run --customers 1000000 [--orders 10000000] [--repeat 3]
        [--url sqlite:///… | postgresql://postgres@127.0.0.1/postgres] [--out bench.json]

Each stage runs in its own subprocess (peak RSS = that child's ru_maxrss, read with
os.wait4), `--repeat` times (load: `--load-repeat`, each into a fresh store; the last
one is the store the later stages read). Figures per stage: median, min, max seconds,
peak RSS, order rows per second and the ratio to the DuckDB yardstick (the same
per-customer RFM features, quintile scores and monthly cohort matrix computed by DuckDB
in memory from the same CSVs, in the same run).

From 1M customers on (`--memory-probe`), what fresh memory costs this machine is measured
first and recorded with the figures (`benchmarks.fresh_memory`): on the machines this is
measured on, every GiB of a stage's peak memory costs it about 2.2 s of kernel time.

With a PostgreSQL URL a throwaway database is created on that server and dropped at
the end; with no URL a SQLite file in the work folder is used (and removed unless
`--keep-store`).

"features" and "refresh" read the whole store (a first refresh); "day_features" and
"day_refresh" read incrementally (`analytics.snapshot`), as the nightly refresh does,
after a "day_load" process has loaded the next day's export (`storage.next_batch`: a
730th of the orders new, as many changed); that load's figures are the stage's "day".
"day_refresh" retrains the churn model for the new day (the default,
`analytics.churn_retrain_days` = 0); "day_refresh_kept" scores it with the model of the
day before (`churn_retrain_days` = 7).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.fresh_memory import fresh_memory_cost, meminfo_bytes
from benchmarks.stages import RESULT_TAG

ROOT = Path(__file__).resolve().parents[1]
STAGE_ORDER = ("load", "yardstick", "features", "train", "refresh", "day_features", "day_refresh",
               "day_refresh_kept",
               "answers", "digest")
# stage -> (target as text, check(result, yardstick seconds) -> bool | None)
TARGETS: dict[str, str] = {
    "load": ">= 300,000 order rows/s, peak RSS <= 2 GiB",
    "features": "<= 3x yardstick, peak RSS <= 4 GiB",
    "refresh": "<= 6x yardstick",
    "day_features": "<= 3x yardstick (after a day's load)",
    "day_refresh": "<= 6x yardstick (after a day's load)",
    "day_refresh_kept": "<= 6x yardstick (after a day's load, churn_retrain_days = 7)",
    "answers": "p95 <= 1.0 s; export of 100k rows <= 5 s",
    "digest": "<= 15 s",
}


# from this size on, what fresh memory costs the machine is measured and recorded (see
# benchmarks.fresh_memory): the probe takes about 15 s, worth it where that cost is seconds
# of a stage, not for the small runs
PROBE_FROM_CUSTOMERS = 1_000_000


class StageFailed(RuntimeError):
    pass


def run_stage(stage: str, params: dict[str, Any], log: Path | None = None,
              timeout: float | None = None) -> dict[str, Any]:
    """Run one stage in a child process; its result plus `peak_rss_mb` and `wall_s`."""
    cmd = [sys.executable, "-m", "benchmarks.stages", stage if stage != "train" else "refresh",
           json.dumps(params)]
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    err = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env, cwd=ROOT)
        deadline = None if timeout is None else t0 + timeout
        out_chunks = []
        # read stdout to the end (the child may print a lot), then reap it with its rusage
        while True:
            chunk = proc.stdout.read(65536)
            if not chunk:
                break
            out_chunks.append(chunk)
            if deadline and time.perf_counter() > deadline:
                proc.kill()
                raise StageFailed(f"{stage}: timed out after {timeout} s")
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if log:
            err.close()
    wall = time.perf_counter() - t0
    out = b"".join(out_chunks).decode(errors="replace")
    line = next((ln for ln in reversed(out.splitlines()) if ln.startswith(RESULT_TAG)), None)
    if proc.returncode != 0 or line is None:
        raise StageFailed(f"{stage} failed (exit {proc.returncode}); see {log}")
    result = json.loads(line[len(RESULT_TAG):])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # Linux: KiB
    result["wall_s"] = wall
    return result


# --- data and stores -----------------------------------------------------------------------


def ensure_data(work: Path, customers: int, orders: int, seed: int) -> tuple[Path, dict]:
    """The generated CSVs for this size (reused when an earlier run made them)."""
    from storage.generate import generate_olist

    folder = work / f"data_c{customers}_o{orders}_s{seed}"
    done = folder / "GENERATED.json"
    if done.exists():
        return folder, json.loads(done.read_text())
    info = generate_olist(folder, customers, orders, seed=seed)
    done.write_text(json.dumps(info))
    return folder, info


class Store:
    """A throwaway store: a SQLite file, or a PostgreSQL database made on the given server."""

    def __init__(self, url: str | None, work: Path, keep: bool = False):
        self.server = url
        self.work = work
        self.keep = keep
        self.made: list[str] = []

    @property
    def kind(self) -> str:
        return "postgresql" if self.server and self.server.startswith("postgres") else "sqlite"

    def fresh(self) -> str:
        """The URL of a new empty store (the previous one is dropped)."""
        self.drop()
        name = f"pulse_bench_{uuid.uuid4().hex[:10]}"
        if self.kind == "sqlite":
            path = self.work / f"{name}.db"
            self.made.append(str(path))
            return f"sqlite:///{path}"
        from sqlalchemy import create_engine, text

        from storage.engine import normalise_url

        admin = create_engine(normalise_url(self.server), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        self.made.append(name)
        return self.server.rsplit("/", 1)[0] + "/" + name

    def _url(self, name: str) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{name}"
        return self.server.rsplit("/", 1)[0] + "/" + name

    def drop(self) -> None:
        while self.made:
            name = self.made.pop()
            _drop_snapshot(self._url(name))
            if self.kind == "sqlite":
                for suffix in ("", "-wal", "-shm"):
                    Path(name + suffix).unlink(missing_ok=True)
                continue
            from sqlalchemy import create_engine, text

            from storage.engine import normalise_url

            admin = create_engine(normalise_url(self.server), isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE datname = :n"), {"n": name})
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            admin.dispose()


def _drop_snapshot(url: str) -> None:
    """Remove the refresh snapshot a store kept (analytics.snapshot), if any."""
    import shutil

    from sqlalchemy import create_engine
    from sqlalchemy.exc import SQLAlchemyError

    from analytics.snapshot import snapshot_folder
    from storage.engine import normalise_url

    engine = create_engine(normalise_url(url))
    try:
        folder = snapshot_folder(engine)
    except SQLAlchemyError:
        folder = None  # no store there (never made, or no meta table yet)
    finally:
        engine.dispose()
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


# --- the run -------------------------------------------------------------------------------


def summarise(stage: str, runs: list[dict[str, Any]], yard_s: float | None) -> dict[str, Any]:
    secs = [r["seconds"] for r in runs if r.get("seconds") is not None]
    median = statistics.median(secs) if secs else None
    rows = runs[-1].get("rows")
    return {
        "stage": stage,
        "runs": len(runs),
        "median_s": median,
        "min_s": min(secs) if secs else None,
        "max_s": max(secs) if secs else None,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "rows_per_s": (rows / median) if rows and median else None,
        "ratio_to_yardstick": (median / yard_s) if median and yard_s else None,
        "target": TARGETS.get(stage),
        # every run's seconds, memory and parts (the detail is the last run's)
        "each": [{k: r.get(k) for k in ("seconds", "peak_rss_mb", "parts")} for r in runs],
        "detail": runs[-1],
    }


def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "stages.log"
    orders = args.orders or args.customers * 10
    fresh_memory = None
    if args.memory_probe == "on" or (args.memory_probe == "auto" and args.customers >= PROBE_FROM_CUSTOMERS):
        if not args.quiet:
            print("measuring what fresh memory costs (benchmarks.fresh_memory) …", file=sys.stderr, flush=True)
        fresh_memory = fresh_memory_cost()
    t_gen = time.perf_counter()
    data, info = ensure_data(work, args.customers, orders, args.seed)
    gen_s = time.perf_counter() - t_gen
    stages = [s for s in STAGE_ORDER if s in set(args.stages.split(","))]
    store = Store(args.url, work, keep=args.keep_store)
    results: dict[str, Any] = {}
    base = {"data_dir": str(data), "orders": info["orders"], "customers": info["customers"],
            "passes": args.answer_passes, "export_rows": args.export_rows}
    url = None
    as_of = None

    def say(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    try:
        load_runs = []
        n_load = args.load_repeat if "load" in stages else 1
        for i in range(n_load):
            url = store.fresh()
            say(f"load {i + 1}/{n_load} into {store.kind} …")
            load_runs.append(run_stage("load", {**base, "url": url}, log))
            as_of = load_runs[-1]["as_of"]
        if "load" in stages:
            results["load"] = summarise("load", load_runs, None)
        base = {**base, "url": url, "as_of": as_of}

        yard_s = None
        for stage in stages:
            if stage == "load":
                continue
            n = 1 if stage == "train" else args.repeat
            runs = []
            for i in range(n):
                say(f"{stage} {i + 1}/{n} …")
                params = dict(base)
                if stage == "train":
                    params["retrain"] = True
                try:
                    # a day's export is loaded first in a process of its own: the stage's
                    # time and peak memory are the refresh's alone
                    day = run_stage("day_load", params, log) if stage.startswith("day_") else None
                    runs.append(run_stage(stage, params, log))
                    if day is not None:
                        runs[-1]["day"] = day
                except StageFailed as exc:
                    results[stage] = {"stage": stage, "error": str(exc), "target": TARGETS.get(stage)}
                    break
            if runs:
                results[stage] = summarise(stage, runs, yard_s if stage != "yardstick" else None)
                if stage == "yardstick":
                    yard_s = results[stage]["median_s"]
            if args.out:  # partial results survive an interrupted long run
                Path(args.out).with_suffix(".partial.json").write_text(
                    json.dumps({"as_of": as_of, "stages": results}, indent=2, default=str))
    finally:
        if not args.keep_store:
            store.drop()
        else:
            store.made.clear()

    return {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "memory_gb": _memory_gb(),
                    "fresh_memory": fresh_memory},
        "store": store.kind, "url": url if args.keep_store else None,
        "customers": info["customers"], "orders": info["orders"], "rows": info.get("rows"),
        "generate_s": round(gen_s, 2), "as_of": as_of, "repeat": args.repeat,
        "stages": results,
    }


def _memory_gb() -> float | None:
    total = meminfo_bytes("MemTotal")
    return None if total is None else round(total / 1024**3, 1)


def _f(x: float | None, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def format_table(report: dict[str, Any]) -> str:
    """The results as a fixed-width text table."""
    head = (f"{report['customers']:,} customers, {report['orders']:,} orders on {report['store']} "
            f"({report['machine']['cpus']} CPUs, {report['machine']['memory_gb']} GB), "
            f"as of {report['as_of']}, {report['date']}")
    fresh = report["machine"].get("fresh_memory") or {}
    if "first_s_per_gib" in fresh:
        head += (f"\nfresh memory: {fresh['first_s_per_gib']:.2f} s/GiB, {fresh['again_s_per_gib']:.2f} written "
                 f"again at once, {fresh['after_pause_s_per_gib']:.2f} after {fresh['pause_s']:g} s")
    lines = [head, f"{'stage':<12} {'runs':>4} {'median s':>9} {'min s':>8} {'max s':>8} "
                   f"{'peak MB':>8} {'rows/s':>10} {'x yard':>7}  target"]
    for name, s in report["stages"].items():
        if "error" in s:
            lines.append(f"{name:<12} FAILED: {s['error']}")
            continue
        lines.append(
            f"{name:<12} {s['runs']:>4} {_f(s['median_s'], '9.2f')} {_f(s['min_s'], '8.2f')} "
            f"{_f(s['max_s'], '8.2f')} {_f(s['peak_rss_mb'], '8.0f')} {_f(s['rows_per_s'], '10,.0f')} "
            f"{_f(s['ratio_to_yardstick'], '7.2f')}  {s.get('target') or ''}")
    ans = report["stages"].get("answers", {}).get("detail")
    if ans:
        lines.append(f"answers: p95 cold {_f(ans.get('p95_cold'), '.2f')} s, warm "
                     f"{_f(ans.get('p95_warm'), '.2f')} s, 20 concurrent {_f(ans.get('p95_concurrent20'), '.2f')} s; "
                     f"export {ans.get('export_rows'):,} rows {_f(ans.get('export_s'), '.2f')} s")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="Retail Pulse scale benchmark")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the suite and print/write the table")
    run.add_argument("--customers", type=int, required=True)
    run.add_argument("--orders", type=int, default=None, help="default: 10 per customer")
    run.add_argument("--seed", type=int, default=7)
    run.add_argument("--url", default=None, help="PostgreSQL server URL (a throwaway DB is made); default SQLite")
    run.add_argument("--repeat", type=int, default=3)
    run.add_argument("--load-repeat", type=int, default=1)
    run.add_argument("--stages", default=",".join(STAGE_ORDER))
    run.add_argument("--work", default="bench-work", help="folder for data and stores (reused)")
    run.add_argument("--out", default=None, help="JSON file (default: WORK/bench-CUSTOMERS-STORE.json)")
    run.add_argument("--answer-passes", type=int, default=2, help="warm passes over the commands")
    run.add_argument("--export-rows", type=int, default=100_000)
    run.add_argument("--keep-store", action="store_true")
    run.add_argument("--quiet", action="store_true")
    run.add_argument("--memory-probe", choices=("auto", "on", "off"), default="auto",
                     help="measure what fresh memory costs first (auto: from 1M customers)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = run_suite(args)
    out = Path(args.out) if args.out else Path(args.work) / f"bench-{args.customers}-{report['store']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print(format_table(report))
    print(f"JSON: {out}")
    failed = [n for n, s in report["stages"].items() if "error" in s]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())



