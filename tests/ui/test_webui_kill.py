"""The task page's kill button, end to end: Chromium clicks it, the master forwards
KILL_CONTAINER to the agent (``POST /master/kill-task``), the task ends and the page shows it."""

from __future__ import annotations

import pytest

from butte.testing.require import require_module

pytestmark = pytest.mark.integration

expect = require_module("playwright.sync_api").expect


def test_kill_button_kills_the_task(ui_cluster, page, screenshot):
    ui_cluster.run_task("doomed", "sleep 600")
    task_id = ui_cluster.wait_task("doomed", timeout=60)
    page.goto(f"{ui_cluster.url}/#/tasks/{task_id}")
    button = page.locator("#task-kill")
    expect(button).to_be_visible()
    page.on("dialog", lambda dialog: dialog.accept())
    with page.expect_response("**/master/kill-task", timeout=60000) as answer:
        button.click()
    assert answer.value.status == 200, answer.value.text()
    # (the page re-renders the task's facts on its updates, so the button's "kill sent"
    # note may be replaced at once by the ended task's facts: the history is what counts)
    history = page.locator('table[data-table="history"]')
    ended = history.locator('tr[data-state="TASK_KILLED"], tr[data-state="TASK_FAILED"]')
    expect(ended).to_have_count(1, timeout=60000)
    expect(page.locator("#task-kill")).to_have_count(0)  # an ended task has no kill button
    screenshot(page, "task-killed")
    (task,) = [t for t in ui_cluster.tasks() if t["id"] == task_id]
    assert task["state"] in ("TASK_KILLED", "TASK_FAILED")
