"""The scale benchmark's entry point runs end to end at a tiny size and writes its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Only a guard against a hung run, not a speed check (timings are the benchmark's job): seven
# stages in fresh processes take about a minute here, and several on a slow, busy machine.
HANG_GUARD_S = 1200


@pytest.mark.slow
def test_benchmark_runs_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "--customers", "1000", "--orders", "8000",
         "--repeat", "1", "--answer-passes", "0", "--export-rows", "500",
         "--work", str(tmp_path / "work"), "--out", str(out), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=HANG_GUARD_S,
        env={k: v for k, v in os.environ.items() if not k.startswith("PULSE_")} | {"MPLBACKEND": "Agg"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["customers"] == 1000 and report["orders"] == 8000
    assert report["store"] == "sqlite"
    stages = report["stages"]
    assert set(stages) == {"load", "yardstick", "features", "train", "refresh", "day_features",
                           "day_refresh", "day_refresh_kept", "answers", "digest"}
    for name, stage in stages.items():
        assert "error" not in stage, (name, stage)
        assert stage["median_s"] > 0 and stage["peak_rss_mb"] > 10, name
        assert len(stage["each"]) == stage["runs"] and stage["each"][-1]["seconds"] == stage["detail"]["seconds"]
    assert stages["load"]["detail"]["rows"] == 8000
    assert stages["load"]["rows_per_s"] > 0
    assert stages["features"]["ratio_to_yardstick"] > 0
    assert stages["features"]["detail"]["customers"] == stages["yardstick"]["detail"]["customers"]
    assert stages["refresh"]["detail"]["read"]["mode"] == "full"
    for name in ("day_features", "day_refresh", "day_refresh_kept"):  # a day's export loaded, then read incrementally
        detail = stages[name]["detail"]
        assert detail["read"]["mode"] == "incremental", detail["read"]
        assert detail["read"]["orders_read"] == 2 * detail["day"]["new_orders"] == 60
    # the nightly refresh retrains the churn model for the new day by default; with
    # churn_retrain_days = 7 the model that refresh trained scores the next day
    retrained, kept = (stages[s]["detail"]["churn_model"] for s in ("day_refresh", "day_refresh_kept"))
    assert retrained["reused"] is None and kept["reused"].startswith(f"trained as of {retrained['trained_as_of']}")
    assert "median s" in proc.stdout and "JSON:" in proc.stdout
    # the throwaway store is removed; the generated data is kept for reuse
    assert not list((tmp_path / "work").glob("*.db*"))
