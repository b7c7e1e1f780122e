import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_and_reports():
    result = subprocess.run(
        [sys.executable, "-m", "cloudburst", "demo", "--operations", "50"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fan-in DAG passes upstream results in edge order" in result.stdout
    assert "FAILED" not in result.stdout
    assert "median" in result.stdout


def test_bad_arguments_fail_with_usage():
    result = subprocess.run(
        [sys.executable, "-m", "cloudburst", "kvs", "--threads", "many"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "invalid int value" in result.stderr


def test_zero_threads_is_a_clear_error():
    result = subprocess.run(
        [sys.executable, "-m", "cloudburst", "kvs", "--threads", "0", "--in-memory"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode != 0
    assert "threads must be at least 1" in result.stderr
    assert "Traceback" not in result.stderr
