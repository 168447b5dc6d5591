"""Time the refresh stages on a store (it writes the refresh tables, as a refresh does).

    python -m benchmarks.bench_refresh --url sqlite:///olist.db
    python -m benchmarks.bench_refresh --url sqlite:///olist.db --as-of 2018-06-30 --repeat 3

Prints wall seconds per stage (as-of, features, RFM, clusters, write) for each run, the
process CPU seconds, and the result's headline figures. Target: under 60 s on the full
Olist data (about 100k orders).
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

from analytics.refresh import refresh
from storage.store import open_store


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="SQLAlchemy URL of a loaded store")
    parser.add_argument("--as-of", default="auto", help='"auto" or YYYY-MM-DD')
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--k", type=int, default=None, help="fix the number of clusters")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)

    engine = open_store(args.url)
    as_of = None if args.as_of == "auto" else dt.date.fromisoformat(args.as_of)
    for run in range(1, args.repeat + 1):
        cpu = time.process_time()
        wall = time.perf_counter()
        report = refresh(engine, as_of, seed=args.seed, k=args.k)
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        print(f"run {run}: {report.message}")
        print(f"  as-of {report.as_of.date} ({report.as_of.mode}): {report.as_of.reason}")
        for stage, seconds in report.timings.items():
            print(f"  {stage:<12} {seconds:8.2f} s")
        print(f"  {'total':<12} {wall:8.2f} s wall, {cpu:.2f} s CPU (this process)")
        print(f"  clusters: k={report.k} (knee {report.knee_k}); model {report.model_version}")
        for note in report.fallbacks:
            print(f"  fallback: {note}")
    engine.dispose()


if __name__ == "__main__":
    main()
