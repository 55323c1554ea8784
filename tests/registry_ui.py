"""A promotion made as a person makes it: in the MLflow UI, in Chromium, with a login.

The integration tests (`make up` with REGISTRY_AUTH=true) and the Compose tests share it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Error, sync_playwright

from model.names import ALIAS, MODEL_NAME

CHROMIUM = "/usr/bin/chromium"
SAVE = '[data-component-id="mlflow.edit-aliases-modal.save-button"]'


def promote_in_the_ui(
    tracking_uri: str,
    login: tuple[str, str],
    version: str,
    promoted: Callable[[], bool],
    screenshots: Path,
    attempts: int = 2,
) -> int:
    """Sign in, open the version's page, give it the alias, save; returns the attempts it took.

    The UI is MLflow's and loads slowly on two busy cores: an attempt that times out is
    started again on a fresh page (once by default), unless ``promoted()`` says the save went
    through. Each failed attempt leaves a screenshot in ``screenshots``."""
    username, password = login
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for attempt in range(1, attempts + 1):
                context = browser.new_context(
                    http_credentials={"username": username, "password": password}
                )
                context.set_default_timeout(90_000)
                page = context.new_page()
                try:
                    page.goto(f"{tracking_uri}/#/models/{MODEL_NAME}/versions/{version}")
                    page.get_by_title("Add aliases").or_(page.get_by_title("Edit aliases")).click()
                    alias = page.get_by_role("dialog").get_by_role("combobox")
                    alias.fill(ALIAS)
                    alias.press("Enter")
                    page.locator(SAVE).click()
                    page.get_by_role("dialog").wait_for(state="hidden")
                    return attempt
                except Error:
                    page.screenshot(path=str(screenshots / f"ui-promotion-{attempt}.png"))
                    if promoted():
                        return attempt
                    if attempt == attempts:
                        raise
                finally:
                    context.close()
        finally:
            browser.close()
    raise AssertionError("unreachable")
