"""The web UI in a real headless Chromium (Debian's, driven by Playwright), over a real uvicorn
server and flows run by the test: loading pages, clicking through, filtering, watching a running
flow update without a reload, a 10,000-task graph, and signing in.

One browser serves the whole module; each test gets a fresh browser context (no shared cookies)
and its own SQLite database (browser tests stay on SQLite to keep time; the pages' queries run on
both backends in test_ui_pages.py). Screenshots of each page land in the test's ``tmp_path``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vivace import flow, get_run_logger, task
from vivace.runners import ConcurrentTaskRunner
from vivace.settings import reset_settings
from vivace.store.queries import read_flow_runs
from vivace.store.writer import get_writer

TIMES = "\N{MULTIPLICATION SIGN}"  # the sign before a group's count in the UI
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
WAIT_MS = 15_000  # for what the page must show by itself (live updates poll every 1.5 s)

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (./scripts/test)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def database_url(vivace_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """SQLite only here (overrides the two-backend fixture for this module's tests)."""
    url = f"sqlite:///{vivace_home / 'ui.db'}"
    monkeypatch.setenv("VIVACE_DATABASE_URL", url)
    monkeypatch.setenv("VIVACE_LOGGING_CONSOLE", "false")
    reset_settings()
    return url


class Page:
    """A browser tab on the test server that fails the test on a script error, a CSP violation
    or a style, script or fetch that fails (an error page itself, a 400 or 404 the test asked
    for, is not a failure)."""

    def __init__(self, browser: Any, base_url: str, shots: Path) -> None:
        self.context = browser.new_context(
            base_url=base_url, viewport={"width": 1280, "height": 900}
        )
        self.tab = self.context.new_page()
        self.tab.set_default_timeout(WAIT_MS)
        self.errors: list[str] = []
        self.tab.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        self.tab.on("console", self._console)
        self.tab.on("response", self._response)
        self.shots = shots
        self.shot_count = 0

    def _console(self, message: Any) -> None:
        # A document answered with 4xx also logs "Failed to load resource"; _response judges.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(f"console: {message.text}")

    def _response(self, response: Any) -> None:
        if response.status >= 400 and response.request.resource_type != "document":
            self.errors.append(f"{response.status} for {response.url}")

    def open(self, path: str) -> Any:
        response = self.tab.goto(path)
        return response

    def screenshot(self, name: str) -> Path:
        self.shot_count += 1
        path = self.shots / f"{self.shot_count:02d}-{name}.png"
        self.tab.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 5_000, f"screenshot {path} looks empty"
        return path


@pytest.fixture
def page(browser: Any, live_server: str, tmp_path: Path) -> Iterator[Page]:
    tab = Page(browser, live_server, tmp_path)
    yield tab
    tab.context.close()
    assert tab.errors == [], "the browser reported errors"


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


# -- flows the tests run ------------------------------------------------------------------------


@task
def square(x: int) -> int:
    return x * x


@task
def total(values: list[int]) -> int:
    get_run_logger().info("summing %d squares", len(values))
    return sum(values)


@task
def explode() -> None:
    raise RuntimeError("the reactor overheated")


@flow(name="ui-browser-sums", task_runner=ConcurrentTaskRunner())
def sums(n: int = 30) -> int:
    get_run_logger().info("squaring %d numbers", n)
    return total.submit(square.map(range(n))).result()


@flow(name="ui-browser-broken")
def broken() -> None:
    explode()


@flow(name="ui-browser-huge")
def huge(n: int) -> int:
    return total.submit(square.map(range(n))).result()


def run_sums_and_broken() -> None:
    sums()
    with pytest.raises(RuntimeError):
        broken()
    get_writer().flush()


def only_run(database_url: str, flow_name: str) -> Any:
    runs, _ = read_flow_runs(database_url, flow_name=flow_name)
    assert len(runs) == 1, runs
    return runs[0]


# -- tests --------------------------------------------------------------------------------------


def test_every_page_loads_and_looks_right(page: Page, database_url: str) -> None:
    run_sums_and_broken()
    run = only_run(database_url, "ui-browser-sums")

    assert page.open("/").status == 200
    expect(page.tab.locator("h1")).to_have_text("Dashboard")
    expect(page.tab.locator("#attention")).to_contain_text("ui-browser-broken")
    assert page.tab.locator("svg.chart rect.fill-COMPLETED").count() >= 1
    page.screenshot("dashboard")

    assert page.open("/flows").status == 200
    expect(page.tab.locator("table.flows")).to_contain_text("ui-browser-sums")
    page.screenshot("flows")

    assert page.open("/flow-runs").status == 200
    expect(page.tab.locator("table.runs tbody tr")).to_have_count(2)
    page.screenshot("flow-runs")

    assert page.open(f"/flow-runs/{run.id}").status == 200
    expect(page.tab.locator("h1 .state")).to_have_text("Completed")
    expect(page.tab.locator("svg.gantt .gantt-group")).to_contain_text(f"square {TIMES}30")
    expect(page.tab.locator("svg.graph .node-group .node-count")).to_have_text("30 task runs")
    expect(page.tab.locator("#log-lines")).to_contain_text("squaring 30 numbers")
    page.screenshot("flow-run")

    assert page.open("/flow-runs/00000000-0000-0000-0000-000000000000").status == 404
    expect(page.tab.locator(".error-message")).to_contain_text("not found")
    assert page.open("/flow-runs?state=SOMEDAY").status == 400
    expect(page.tab.locator(".error-message")).to_contain_text("is not a state type")
    page.screenshot("bad-filter")


def test_click_from_the_list_to_a_run_to_a_task_and_its_upstream(
    page: Page, database_url: str
) -> None:
    run_sums_and_broken()
    run = only_run(database_url, "ui-browser-sums")

    page.open("/flow-runs")
    page.tab.get_by_role("link", name=run.name, exact=True).click()
    page.tab.wait_for_url(f"**/flow-runs/{run.id}")
    expect(page.tab.locator("h1")).to_contain_text(run.name)

    page.tab.locator("table.tasks").get_by_role("link", name="total-0", exact=True).click()
    page.tab.wait_for_url("**/task-runs/*")
    expect(page.tab.locator("h1")).to_contain_text("total-0")
    expect(page.tab.locator("#logs")).to_contain_text("summing 30 squares")
    expect(page.tab.locator("#inputs .upstream-link")).to_have_count(30)
    page.screenshot("task-run")

    page.tab.locator("#inputs").get_by_role("link", name="square-7", exact=True).click()
    expect(page.tab.locator("h1")).to_contain_text("square-7")
    expect(page.tab.locator(".crumbs")).to_contain_text(run.name)
    page.tab.locator(".crumbs").get_by_role("link", name=run.name).click()
    page.tab.wait_for_url(f"**/flow-runs/{run.id}")


def test_filter_the_list_by_state(page: Page, database_url: str) -> None:
    run_sums_and_broken()
    failed = only_run(database_url, "ui-browser-broken")
    completed = only_run(database_url, "ui-browser-sums")

    page.open("/flow-runs")
    page.tab.get_by_role("checkbox", name="Failed").check()
    page.tab.get_by_role("button", name="Apply").click()
    page.tab.wait_for_url("**/flow-runs?*state=FAILED*")
    rows = page.tab.locator("table.runs tbody tr")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text(failed.name)
    expect(page.tab.get_by_role("checkbox", name="Failed")).to_be_checked()
    page.screenshot("filtered")

    # The state chips filter too: from "failed only" to "completed only".
    page.tab.locator(".state-filter a.chip.state-COMPLETED").click()
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text(completed.name)


def test_a_running_flow_updates_without_a_reload(page: Page, database_url: str) -> None:
    page_open, say_more, release = threading.Event(), threading.Event(), threading.Event()

    @task
    def hold() -> str:
        logger = get_run_logger()
        logger.info("holding until released")
        page_open.set()
        assert say_more.wait(30), "the test never asked for more"
        logger.warning("a line written while the page is open")
        assert release.wait(30), "the test never released the task"
        return "released"

    @flow(name="ui-browser-live")
    def held() -> str:
        return hold()

    runner = threading.Thread(target=held, name="ui-live-flow")
    runner.start()
    try:
        assert page_open.wait(20), "the held task never started"
        get_writer().flush()
        run = only_run(database_url, "ui-browser-live")

        page.open(f"/flow-runs/{run.id}")
        badge = page.tab.locator("h1 .state")
        expect(badge).to_have_text("Running")
        expect(page.tab.locator("#log-lines")).to_contain_text("holding until released")
        page.tab.evaluate("window.loadedOnce = 'yes'")  # gone if the page reloads
        expect(page.tab.locator("[data-live=status]")).to_contain_text("Live")
        page.screenshot("running")

        say_more.set()
        expect(page.tab.locator("#log-lines")).to_contain_text(
            "a line written while the page is open"
        )
        expect(page.tab.locator("#log-lines tr.level-WARNING")).to_have_count(1)

        release.set()
        expect(badge).to_have_text("Completed")
        expect(page.tab.locator("[data-live-section=summary]")).to_contain_text("Completed")
        expect(page.tab.locator("table.tasks")).to_contain_text("Completed")
        expect(page.tab.locator("[data-live=status]")).to_contain_text("live updates ended")
        assert page.tab.evaluate("window.loadedOnce") == "yes", "the page was reloaded"
        page.screenshot("completed")
    finally:
        say_more.set()
        release.set()
        runner.join(30)

    # Each line once: the tail resumes after the last line it showed.
    lines = page.tab.locator("#log-lines tr").all_inner_texts()
    assert len(lines) == len(set(lines))

    # Stopped for good: no request after the final answer.
    requests: list[str] = []
    page.tab.on("request", lambda request: requests.append(request.url))
    time.sleep(2)
    assert requests == []


def test_a_10000_task_mapped_run_draws_one_group_node(page: Page, database_url: str) -> None:
    huge(10_000)
    get_writer().flush()
    run = only_run(database_url, "ui-browser-huge")

    started = time.perf_counter()
    assert page.open(f"/flow-runs/{run.id}").status == 200
    group = page.tab.locator("svg.graph .node-group")
    expect(group).to_have_count(1)
    expect(group.locator(".node-count")).to_have_text("10,000 task runs")
    expect(page.tab.locator("svg.graph .edge-count")).to_have_text(f"{TIMES}10,000")
    expect(page.tab.locator("svg.graph g.node")).to_have_count(2)  # the square group and total-0
    expect(page.tab.locator("svg.gantt .gantt-row")).to_have_count(2)
    expect(page.tab.locator("table.tasks tbody tr")).to_have_count(50)  # one page of the table
    page.screenshot("huge-run")
    print(f"10,000-task run page loaded in {time.perf_counter() - started:.2f} s")

    # The group node leads to the table filtered to that task.
    group.click()
    page.tab.wait_for_url("**task_name=square*")
    expect(page.tab.locator("table.tasks tbody tr").first).to_contain_text("square-")


def test_sign_in_with_a_key_when_keys_exist(page: Page, database_url: str) -> None:
    from vivace.store.api_keys import create_api_key

    run_sums_and_broken()
    _, key = create_api_key(database_url, "ui-browser", "read")

    page.open("/flow-runs?state=FAILED")
    page.tab.wait_for_url("**/signin?next=*")
    expect(page.tab.locator("h1")).to_have_text("Sign in")
    page.screenshot("signin")

    page.tab.get_by_label("API key").fill("vvc_not-a-real-key")
    page.tab.get_by_role("button", name="Sign in").click()
    expect(page.tab.locator(".form-error")).to_contain_text("not valid")

    page.tab.get_by_label("API key").fill(key)
    page.tab.get_by_role("button", name="Sign in").click()
    page.tab.wait_for_url("**/flow-runs?state=FAILED")
    expect(page.tab.locator("table.runs tbody tr")).to_have_count(1)
    (cookie,) = page.context.cookies()
    assert cookie["name"] == "vivace_api_key"
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert page.tab.evaluate("document.cookie") == ""  # scripts cannot read the key

    page.tab.get_by_role("link", name="Sign out").click()
    page.tab.wait_for_url("**/signin")
    assert page.context.cookies() == []
    page.open("/")
    page.tab.wait_for_url("**/signin?next=*")
