"""The deployments pages in a real headless Chromium: from the list to a deployment, to one of
its runs and back, with no script error or CSP violation on the way.

The browser, the tab that records errors and the SQLite-only database come from
test_ui_browser.py (its fixtures, imported), so both modules drive the browser alike.
"""

from __future__ import annotations

import test_ui_browser as browser_tests
from test_ui_browser import Page, expect

from vivace.engine.states import StateType
from vivace.store.database import get_engine, transaction
from vivace.store.deployments import DeploymentSpec, create_deployment_run, save_deployment
from vivace.store.run_control import transition_flow_run

# test_ui_browser's fixtures, under the names the test asks for.
browser = browser_tests.browser
database_url = browser_tests.database_url
page = browser_tests.page
pytestmark = browser_tests.pytestmark


def test_from_the_deployments_list_to_a_run_and_back(page: Page, database_url: str) -> None:
    record = save_deployment(
        database_url,
        DeploymentSpec(
            name="nightly-etl",
            flow_name="etl",
            entrypoint="flows/etl.py:etl",
            storage={"url": "/srv/code/nightly-etl"},
            parameter_schema={
                "type": "object",
                "properties": {"day": {"type": "string"}, "rows": {"type": "integer"}},
                "required": ["day"],
            },
            parameters={"rows": 5},
        ),
    )
    done, _ = create_deployment_run(database_url, record, parameters={"day": "mon"}, name="mon")
    create_deployment_run(database_url, record, parameters={"day": "tue"}, name="tue")
    with transaction(get_engine(database_url)) as conn:
        transition_flow_run(
            conn,
            done.id,
            StateType.COMPLETED,
            "Completed",
            None,
            allowed_from=[StateType.SCHEDULED],
        )

    assert page.open("/deployments").status == 200
    page.tab.get_by_role("link", name="nightly-etl", exact=True).click()
    page.tab.wait_for_url(f"**/deployments/{record.id}")
    expect(page.tab.locator("h1")).to_contain_text("nightly-etl")
    expect(page.tab.locator("pre.command")).to_have_text(
        "vivace deployment run nightly-etl --param day=VALUE"
    )
    expect(page.tab.locator("table.parameters tbody tr")).to_have_count(2)
    expect(page.tab.locator("#runs span.state-COMPLETED")).to_have_text("Completed")
    page.screenshot("deployment")

    page.tab.locator("#runs").get_by_role("link", name="mon", exact=True).click()
    page.tab.wait_for_url(f"**/flow-runs/{done.id}")
    expect(page.tab.locator("h1")).to_contain_text("mon")
    page.screenshot("deployment-run")

    page.tab.locator("a.deployment-link").click()
    page.tab.wait_for_url(f"**/deployments/{record.id}")
    page.tab.get_by_role("link", name="Work queues", exact=True).click()
    expect(page.tab.locator("#queues")).to_contain_text("default")
    page.screenshot("work-queues")
