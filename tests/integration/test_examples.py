"""Every program in ``examples/`` runs against one running cluster and passes its own correctness check.

Each example is run as a user would, ``python examples/NAME.py --scheduler HOST``, in its own process. By
convention an example exits with 0 and prints ``NAME: OK ...`` as its last line when its check passes (see
``examples/README.md``), so a new example is picked up here without changes.
"""

import subprocess
import sys
from pathlib import Path

import pytest

import cloudburst
from cloudburst.cluster.local import random_loopback_host

pytestmark = pytest.mark.integration

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.py"))
#: Seconds one example may take against a running cluster (each takes a few on 2 cores).
EXAMPLE_TIMEOUT = 120


@pytest.fixture(scope="module")
def cluster():
    """One cluster for every example: 2 nodes of 2 executors, so causal reads cross nodes and 4 functions can run
    at once."""
    with cloudburst.local(executors=2, nodes=2, host=random_loopback_host()) as connection:
        yield connection


def test_the_examples_are_found():
    assert {path.stem for path in EXAMPLES} >= {"gossip_average", "prediction_serving", "retwis"}


@pytest.mark.timeout(EXAMPLE_TIMEOUT + 60)
@pytest.mark.parametrize("example", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_example_runs_and_passes_its_check(cluster, example, tmp_path):
    result = subprocess.run(
        [sys.executable, str(example), "--scheduler", cluster.scheduler],
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT,
        check=False,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    lines = result.stdout.strip().splitlines()
    assert lines, output
    assert lines[-1].startswith(f"{example.stem}: OK"), output
    # Examples delete their DAGs, which unpins their functions: the next one finds the executors free.
    assert not cluster.status().dags, output
