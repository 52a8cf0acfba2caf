"""The web dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright): it loads, shows a
job this test submitted with its timeline, and an endpoint whose breaker a fault knob forced OPEN.

`make test` installs the browser (`make browser`); where none can be installed the test skips saying so.
STILLHOUSE_DASHBOARD_SCREENSHOT=docs/dashboard.png writes the page's screenshot there too.
"""
import json
import os
import shutil
import time
from pathlib import Path

import pytest
import requests

from stillhouse.config import get_settings

from .test_routing import endpoint_rows

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path():
    for candidate in (os.environ.get("STILLHOUSE_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture
def browser_page(tmp_path):
    executable = chromium_path()
    if executable is None:
        pytest.skip("no chromium browser: `make browser` installs Debian's chromium (apt-get, needs root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=executable, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 1100})
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def test_the_dashboard_shows_a_submitted_job_and_an_endpoint_forced_open(api, stack, faults, two_endpoints,
                                                                            browser_page):
    faults("west", down=True)
    # One job at a time until west's breaker opens (each failure is recorded before the next job is routed);
    # every job completes on east.
    jobs = []
    while endpoint_rows(api)["west"]["breaker"] == "CLOSED" and len(jobs) < 100:
        jobs.append(api.wait(api.submit("echo", {"text": "for the dashboard"}), timeout=60))
    assert endpoint_rows(api)["west"]["breaker"] == "OPEN"
    job = jobs[-1]
    assert job["status"] == "COMPLETED"

    page = browser_page
    page.goto(f"{stack.url}/dashboard")
    page.fill("#key", stack.dev_api_key)
    page.click("#login-form button")

    job_row = page.locator(f'#jobs tr[data-job="{job["id"]}"]')
    try:
        job_row.wait_for(timeout=20_000)
    except Exception as err:
        stats = api.get("/v1/stats")
        raise AssertionError(f"page error {page.locator('#error').text_content()!r}, "
                             f"updated {page.locator('#updated').text_content()!r}; /v1/stats {stats.status_code}: "
                             f"{stats.text[:1500]}") from err
    assert "COMPLETED" in job_row.inner_text()
    west = page.locator('#endpoints tr[data-endpoint="west"]')
    west.locator(".badge.OPEN").wait_for(timeout=20_000)
    assert "OPEN" in west.inner_text()
    assert "CLOSED" in page.locator('#endpoints tr[data-endpoint="east"]').inner_text()
    assert page.locator("#statuses").inner_text().count("COMPLETED") == 1
    assert "$" in page.locator("#cost").inner_text()

    job_row.click()  # the click-through: the job's timeline, event by event
    timeline = page.locator("#timeline")
    timeline.wait_for(state="visible", timeout=5_000)
    assert job["id"] in page.locator("#timeline-id").inner_text()
    assert [e["status"] for e in job["events"]] == page.locator("#timeline-events .badge").all_inner_texts()
    assert page.locator("#timeline-svg rect").count() == len(job["events"])

    if target := os.environ.get("STILLHOUSE_DASHBOARD_SCREENSHOT"):
        page.screenshot(path=target, full_page=True)


def test_the_dashboard_asks_again_for_a_key_that_is_refused(stack, browser_page):
    page = browser_page
    page.goto(f"{stack.url}/dashboard")
    page.fill("#key", "sh_not_a_key")
    page.click("#login-form button")
    page.locator("#login-error", has_text="refused").wait_for(timeout=10_000)
    assert page.locator("#app").is_hidden()
    assert get_settings().jobs_table  # the stack is still the one configured (no state leaked from the page)


def test_the_dashboard_lists_a_batch_with_its_progress(api, stack, browser_page):
    rows = "".join(json.dumps({"custom_id": f"d{i}", "method": "POST", "url": "/v1/chat/completions",
                               "body": {"model": "echo-a", "messages": [{"role": "user", "content": "hi"}]}}) + "\n"
                   for i in range(3))
    uploaded = requests.post(f"{stack.url}/v1/files", headers=api.headers, timeout=30, data={"purpose": "batch"},
                             files={"file": ("dash.jsonl", rows.encode(), "application/jsonl")}).json()
    batch = api.post("/v1/batches", {"input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions",
                                     "completion_window": "24h"}).json()
    deadline = time.monotonic() + 60
    while api.get(f"/v1/batches/{batch['id']}").json()["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    page = browser_page
    page.goto(f"{stack.url}/dashboard")
    page.fill("#key", stack.dev_api_key)
    page.click("#login-form button")
    row = page.locator("#batches tbody tr", has_text=batch["id"])
    row.wait_for(timeout=15_000)
    assert page.locator("#batches-panel").is_visible()
    assert "completed" in row.inner_text() and "3" in row.inner_text()
