"""The dashboard of a real local cluster in headless Chromium: executors appear, a DAG's latency chart grows as
calls run, a request's trace opens from the list of requests, and a screenshot is saved.

``CLOUDBURST_DASHBOARD_SCREENSHOT=docs/images/dashboard.png`` saves the screenshot there too (the docs' picture).
"""

import os
import shutil
import threading
from pathlib import Path

import pytest
from browser import open_page, screenshot, wait_for_polls

from cloudburst.cluster.local import ClusterConfig, LocalCluster, random_loopback_host

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

EXECUTORS = 3
EXECUTOR_ROW = '[data-testid="executor-row"]'
DAG_CHART = '[data-testid="dag-chart"][data-dag="pipeline"]'
REQUEST_ROW = '[data-testid="request-row"]'
TRACE_HOP = '[data-testid="trace-hop"]'


def chart_points(page):
    return int(page.get_attribute(DAG_CHART, "data-points"))


def test_the_dashboard_follows_a_running_cluster(browser, tmp_path):
    config = ClusterConfig(host=random_loopback_host(), executors=EXECUTORS, data_dir=None, report_period=0.5)
    with LocalCluster(config) as cluster, open_page(browser, cluster.dashboard_url) as page:
        connection = cluster.connect(timeout=30)
        stop = threading.Event()
        try:
            # The executors show once they report (every report period).
            page.wait_for_function(f"() => document.querySelectorAll('{EXECUTOR_ROW}').length === {EXECUTORS}")
            assert page.locator(DAG_CHART).count() == 0

            connection.put_object("pipeline/scale", 3)
            connection.register(lambda lib, x: x + 1, "ingest")
            connection.register(lambda lib, x: x * lib.get("pipeline/scale"), "score")
            connection.register(lambda lib, x: {"score": x}, "publish")
            connection.register_dag(
                "pipeline", ["ingest", "score", "publish"], [("ingest", "score"), ("score", "publish")]
            )

            def load():
                index = 0
                while not stop.is_set():
                    call = connection.build_dag_call("pipeline", {"ingest": [index]})
                    assert connection.call_dag(call).result(30) == {"score": (index + 1) * 3}
                    index += 1
                    stop.wait(0.02)

            worker = threading.Thread(target=load, daemon=True)
            worker.start()
            page.wait_for_selector(DAG_CHART)
            first = chart_points(page)
            wait_for_polls(page, 3)
            assert chart_points(page) > first, "the latency chart did not grow while calls ran"
            assert page.locator(f"{DAG_CHART} path.line-p99").count() == 1
            stats = page.text_content('[data-testid="dag-card"][data-dag="pipeline"] .dag-stats')
            assert "calls/s" in stats
            assert "p99" in stats
            assert "ingest → score → publish" in page.text_content('[data-testid="dag-card"][data-dag="pipeline"]')
            # Each executor row names the function pinned there.
            pinned = " ".join(page.locator(EXECUTOR_ROW).all_text_contents())
            assert all(function in pinned for function in ("ingest", "score", "publish"))

            page.locator(REQUEST_ROW).first.click()
            page.wait_for_selector(TRACE_HOP)
            hops = page.locator(TRACE_HOP)
            page.wait_for_function(f"() => document.querySelectorAll('{TRACE_HOP}').length === 4")
            assert hops.first.get_attribute("data-role") == "client"  # placed under the DAG's lease
            assert [hops.nth(i).get_attribute("data-function") for i in range(1, 4)] == ["ingest", "score", "publish"]
            saved = screenshot(page, tmp_path / "dashboard.png")
            if os.environ.get("CLOUDBURST_DASHBOARD_SCREENSHOT"):
                shutil.copyfile(saved, Path(os.environ["CLOUDBURST_DASHBOARD_SCREENSHOT"]))
        finally:
            stop.set()
            connection.close()
