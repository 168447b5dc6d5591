"""The digest built from what the refresh stored against the raw paths, on one store.

    python -m benchmarks.digest_paths sqlite:///path/to/store.db --runs 3

Builds the digest alternately the way it is built (at-risk figures from `agg_customers`,
segment migration from `agg_migration`, the as-of date of the last refresh) and by the
raw paths (the scores, the two snapshots, the daily order counts), prints each time and
whether both gave the same text. The store must have been refreshed.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import matplotlib

matplotlib.use("Agg")


@contextmanager
def raw_paths() -> Iterator[None]:
    """Within: the digest resolves its as-of and reads scores and snapshots, as before the
    stored facts."""
    from analytics import asof, migration, risk

    saved = (asof.current_as_of, risk._risk_facts, migration.stored_cells)
    asof.current_as_of = lambda engine, fixed=None, today=None: asof.resolve_as_of(engine, fixed=fixed, today=today)
    risk._risk_facts = lambda engine, risk_filter: None
    migration.stored_cells = lambda *args, **kwargs: None
    try:
        yield
    finally:
        asof.current_as_of, risk._risk_facts, migration.stored_cells = saved


def main(argv: list[str] | None = None) -> int:
    from benchmarks.stages import _router
    from bot.digest import build_digest

    parser = argparse.ArgumentParser(prog="python -m benchmarks.digest_paths")
    parser.add_argument("url")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    router, engine = _router(args.url)
    seconds: dict[str, list[float]] = {"stored": [], "raw": []}
    texts: dict[str, str] = {}
    for _ in range(args.runs):
        for mode in ("raw", "stored"):
            with raw_paths() if mode == "raw" else nullcontext():
                started = time.perf_counter()
                digest = build_digest(engine, router.settings)
                seconds[mode].append(round(time.perf_counter() - started, 3))
            texts[mode] = digest.to_markdown()
            print(f"{mode:7} {seconds[mode][-1]:8.3f} s  as of {digest.as_of}", flush=True)
    print(json.dumps({"seconds": seconds, "same_text": texts["raw"] == texts["stored"]}))
    engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
