"""The dashboard page in headless Chromium, against a fake cluster that changes with every poll."""

import pytest
from browser import open_page, screenshot, wait_for_polls
from dashboard_fakes import DAGS, DemoSource

from cloudburst.cluster.local import random_loopback_host
from cloudburst.management.dashboard import DashboardServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

EXECUTOR_ROW = '[data-testid="executor-row"]'
REQUEST_ROW = '[data-testid="request-row"]'
TRACE_HOP = '[data-testid="trace-hop"]'


def serve(source):
    server = DashboardServer(source, random_loopback_host(), 0)
    server.start()
    return server


@pytest.fixture
def source():
    return DemoSource(history=3, executors_every=1, max_executors=4)


@pytest.fixture
def server(source):
    server = serve(source)
    yield server
    server.close()


def chart_points(page, dag):
    return int(page.get_attribute(f'[data-testid="dag-chart"][data-dag="{dag}"]', "data-points"))


def test_page_follows_the_cluster_and_traces_a_request(browser, server, source, tmp_path):
    with open_page(browser, server.url) as page:
        page.wait_for_selector(EXECUTOR_ROW)
        assert page.text_content("#status") == "live"
        assert page.text_content("#sum-nodes") == "3"
        assert page.text_content("#sum-autoscale") == "on"
        assert page.locator('[data-testid="node-card"][data-state="draining"]').count() == 1
        assert page.locator('[data-testid="node-card"][data-node="127.0.0.2"] [data-kind="gpu"]').count() == 1

        # The source adds an executor and a series point per poll: the page must follow without a reload.
        rows = page.locator(EXECUTOR_ROW).count()
        points = chart_points(page, "pipeline")
        marker = page.evaluate("() => (window.__loadedOnce = true)")
        wait_for_polls(page, 2)
        assert page.locator(EXECUTOR_ROW).count() > rows
        assert chart_points(page, "pipeline") > points >= 3
        assert page.evaluate("() => window.__loadedOnce") is marker
        assert page.locator('[data-testid="dag-chart"][data-dag="recommend"] path.line-p99').count() == 1
        assert page.text_content("#sum-executors") == str(page.locator(EXECUTOR_ROW).count())

        request_id = source.trace_ids()[-2]
        dag = source.trace_view(request_id)["name"]
        page.click(f'{REQUEST_ROW}[data-request-id="{request_id}"]')
        page.wait_for_selector(TRACE_HOP)
        hops = page.locator(TRACE_HOP)
        assert hops.count() == source.hops_of(request_id)
        assert hops.first.get_attribute("data-role") == "scheduler"
        assert [hops.nth(i).get_attribute("data-function") for i in range(1, hops.count())] == DAGS[dag]
        assert page.input_value('[data-testid="trace-input"]') == request_id
        assert page.text_content('[data-testid="trace-table"]').count("hit") >= 1
        assert "miss" in page.text_content('[data-testid="trace-table"]')
        assert "lww " in page.text_content('[data-testid="trace-table"]')
        assert page.locator(f'{REQUEST_ROW}.selected[data-request-id="{request_id}"]').count() == 1

        # Each hop's bar starts where the previous one ended, or later: the waterfall is ordered in time.
        lefts = [hops.nth(i).locator(".wf-bar").bounding_box()["x"] for i in range(hops.count())]
        assert lefts == sorted(lefts)

        # The selection and the trace survive the next polls.
        wait_for_polls(page, 2)
        assert page.locator(TRACE_HOP).count() == source.hops_of(request_id)
        assert page.locator(f'{REQUEST_ROW}.selected[data-request-id="{request_id}"]').count() == 1

        screenshot(page, tmp_path / "dashboard.png")


def test_trace_by_id_and_an_unknown_one(browser, server, source):
    with open_page(browser, server.url) as page:
        page.wait_for_selector(REQUEST_ROW)
        page.fill('[data-testid="trace-input"]', "no-such-request")
        page.click('[data-testid="trace-submit"]')
        message = page.locator('[data-testid="trace-message"]')
        message.filter(has_text="no trace of request").wait_for()
        assert "'no-such-request'" in message.text_content()
        assert page.locator(TRACE_HOP).count() == 0

        failed = source.trace_ids()[6]
        page.fill('[data-testid="trace-input"]', failed)
        page.press('[data-testid="trace-input"]', "Enter")
        page.wait_for_selector(TRACE_HOP)
        assert page.locator(f"{TRACE_HOP}.failed").count() == 1
        assert "KeyError" in page.text_content('[data-testid="trace-table"]')


def test_a_trace_link_opens_the_trace(browser, source):
    server = serve(source)
    try:
        request_id = source.trace_ids()[2]
        with open_page(browser, f"{server.url}#trace={request_id}") as page:
            page.wait_for_selector(TRACE_HOP)
            assert page.get_attribute('[data-testid="trace-summary"]', "data-request-id") == request_id
    finally:
        server.close()


def test_errors_expand_to_their_traceback(browser, server):
    with open_page(browser, server.url) as page:
        error = page.locator('[data-testid="error-row"]').first
        error.wait_for()
        traceback = error.locator("pre.traceback")
        assert not traceback.is_visible()
        error.locator("summary").click()
        assert traceback.is_visible()
        assert "Traceback (most recent call last)" in traceback.text_content()
        # Polls rebuild nothing that is open.
        wait_for_polls(page, 2)
        assert traceback.is_visible()


def test_page_rides_out_a_failing_source(browser, server, source):
    with open_page(browser, server.url) as page:
        page.wait_for_selector(EXECUTOR_ROW)
        source.fail_next = 2
        page.wait_for_selector('#status[data-state="down"]')
        assert "RuntimeError" in page.text_content("#status")
        assert page.locator(EXECUTOR_ROW).count() > 0
        page.wait_for_selector('#status[data-state="live"]')


class HostileSource:
    """Markup and nonsense in every field: the page must show it as text and keep working."""

    def __init__(self):
        self.script = "<img src=x onerror=\"document.body.dataset.pwned='1'\">"

    def cluster_view(self):
        text = self.script
        return {
            "generated_at": "yesterday",
            "autoscale": None,
            "schedulers": "not a list",
            "nodes": [
                {"address": text, "state": text, "cache": "broken", "executors": [{"tid": text, "kind": text}]},
                {"executors": None},
                "not a node",
            ],
            "functions": [{"name": text, "replicas": text, "calls_per_s": "fast", "p50_ms": None}],
            "dags": [{"name": text, "series": [{"t": "now"}, {"t": 1.0, "p50_ms": "x"}, None]}],
            "errors": [{"message": text, "traceback": text, "time": None}],
            "decisions": [{"kind": text, "reason": text}],
            "traces": [{"request_id": text, "hops": text, "ok": "maybe"}],
        }

    def trace_view(self, request_id):
        return {"request_id": request_id, "hops": [{"role": self.script, "start": "soon", "reads": [{"key": None}]}]}

    def metrics_text(self):
        return b""


def test_hostile_data_is_shown_as_text(browser):
    source = HostileSource()
    server = serve(source)
    try:
        with open_page(browser, server.url) as page:
            wait_for_polls(page, 2)
            assert page.text_content('[data-testid="node-card"] .node-addr') == source.script
            assert page.locator("img[src=x]").count() == 0
            assert page.get_attribute('[data-testid="dag-chart"]', "data-points") == "1"
            page.click(REQUEST_ROW)
            page.wait_for_selector(TRACE_HOP)
            assert page.get_attribute(TRACE_HOP, "data-role") == source.script
            wait_for_polls(page, 1)
            assert page.evaluate("() => document.body.dataset.pwned") is None
            assert page.text_content("#status") == "live"
    finally:
        server.close()
