"""The soak benchmark, briefly: a steady mixed load fails no call and grows no process's memory much.

A minute and a half cannot tell a slow leak from warm-up; it catches a fast one (memory per call), and keeps the
benchmark itself working. The real run is ``python -m benchmarks soak`` (30 minutes).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPOSITORY = Path(__file__).resolve().parents[2]
#: Growth allowed per process over the run: generous, as allocators and caches settle for a while.
MAX_GROWTH_RATIO = 1.5
MAX_GROWTH_MB = 30.0


@pytest.mark.timeout(300)
def test_a_short_soak_has_no_errors_and_no_fast_memory_growth(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "soak",
            "--minutes",
            "1.25",
            "--warmup",
            "15",
            "--sample-every",
            "2",
            "--output-dir",
            str(tmp_path),
        ],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=270,
        check=False,
    )
    print(run.stdout)
    if not (tmp_path / "soak.json").exists():
        pytest.fail(f"the soak wrote no results (exit code {run.returncode}):\n{run.stderr[-3000:]}")
    results = json.loads((tmp_path / "soak.json").read_text())
    assert results["errors"] == {}, f"{results['first_errors']}\n{run.stderr[-3000:]}"
    for name, row in results["processes"].items():
        grown = row["end_mb"] - row["start_mb"]
        assert row["end_mb"] <= row["start_mb"] * MAX_GROWTH_RATIO or grown <= MAX_GROWTH_MB, f"{name} grew {grown} MB"
