"""The page at `GET /`, in a real headless Chromium against a real gateway and model.

One gateway for the module, with API keys on and its own alias (so promoting here moves
nothing the other modules serve). Set SAVE_SCREENSHOTS=1 to write docs/page.png.
"""

from __future__ import annotations

import csv as csv_module
import os
import secrets
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from mlflow import MlflowClient
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from gateway.api.page import CSP
from tests.gateways import Gateway, gateway
from tests.models import NAME, register_version
from tests.servers import ROOT

ALIAS = "page"
KEY = secrets.token_urlsafe(24)
KEY_STORE = "sentiment-gateway-api-key"
CHROMIUM = "/usr/bin/chromium"
POSITIVE = "This movie was absolutely amazing! The acting was superb."
NEGATIVE = "Terrible movie. Waste of time. Disappointing and boring."
TAGS = {"test_accuracy": "0.84", "test_f1": "0.83"}


@pytest.fixture(scope="module")
def page_gateway(tmp_path_factory, tracking_uri) -> Gateway:
    version = register_version(tracking_uri, tags=TAGS)
    MlflowClient(tracking_uri).set_registered_model_alias(NAME, ALIAS, version)
    with gateway(
        tmp_path_factory.mktemp("page-gateway"),
        tracking_uri,
        GATEWAY_MODEL_ALIAS=ALIAS,
        GATEWAY_API_KEYS=KEY,
    ) as gw:
        gw.http.headers["Authorization"] = f"Bearer {KEY}"
        gw.wait_for(lambda: gw.serving(f"v{version}"), timeout=120)
        gw.version = f"v{version}"
        yield gw


@pytest.fixture(scope="module")
def browser() -> Browser:
    assert Path(CHROMIUM).exists(), "the page tests need Debian's chromium: make install"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


class Watched:
    """A browser tab and what it did: console errors, uncaught exceptions, every request."""

    def __init__(self, context: BrowserContext):
        self.context, self.errors, self.urls = context, [], []
        context.on("request", lambda request: self.urls.append(request.url))
        self.page: Page = context.new_page()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def leaving_the_machine(self) -> list[str]:
        hosts = {urlsplit(url.removeprefix("blob:")).hostname for url in self.urls}
        return sorted(host for host in hosts if host != "127.0.0.1")


@pytest.fixture
def tab(browser, page_gateway):
    """A fresh tab that already holds the API key, as after entering it once."""
    context = browser.new_context(viewport={"width": 1200, "height": 900}, accept_downloads=True)
    context.add_init_script(f"sessionStorage.setItem({KEY_STORE!r}, {KEY!r})")
    watched = Watched(context)
    watched.page.goto(page_gateway.url + "/")
    expect(watched.page.locator("#model-version")).to_have_text(page_gateway.version)
    yield watched
    context.close()


def analyze(page: Page, text: str, keyboard: bool = False) -> None:
    page.fill("#review", text)
    if keyboard:
        page.press("#review", "Control+Enter")
    else:
        page.click("#analyze")


def test_root_gives_browsers_the_page_and_clients_the_summary(page_gateway):
    url = page_gateway.url
    summary = {"service": "sentiment gateway", "docs": "/docs", "health": "/health"}
    for accept in (None, "*/*", "application/json", "text/html;q=0.5, application/json"):
        answer = httpx.get(url + "/", headers={"Accept": accept} if accept else {})
        assert answer.status_code == 200, accept
        assert answer.json() == summary, accept
    browser_accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    html = httpx.get(url + "/", headers={"Accept": browser_accept})
    assert html.status_code == 200
    assert html.headers["content-type"].startswith("text/html")
    assert "<script" in html.text and "<script>" not in html.text and " style=" not in html.text
    # The page and its files load without a key (keys are on); the API still needs one.
    for path in ("/page/page.js", "/page/page.css", "/page/favicon.svg"):
        asset = httpx.get(url + path)
        assert asset.status_code == 200, path
        assert asset.headers["content-security-policy"] == CSP, path
    assert html.headers["content-security-policy"] == CSP
    assert "default-src 'none'" in CSP and "'unsafe-inline'" not in CSP
    assert httpx.get(url + "/info").status_code == 401


def test_a_positive_and_a_negative_review_with_their_terms(tab, page_gateway):
    page = tab.page
    analyze(page, POSITIVE)
    expect(page.locator("#result-sentiment")).to_have_text("Positive")
    expect(page.locator("#result-version")).to_have_text(f"by {page_gateway.version}")
    assert page.locator("#result-text mark.term.pos").count() >= 1
    assert page.locator("#result-terms li").count() >= 3
    assert page.locator("#result-text").inner_text() == POSITIVE
    confidence = float(page.locator("#result-meter").evaluate("m => m.value"))
    assert 0.5 < confidence <= 1
    header = page.locator("header")
    expect(header.locator("#model-accuracy")).to_have_text("84.0 %")
    expect(header.locator("#model-status")).to_have_text("healthy")
    if os.environ.get("SAVE_SCREENSHOTS") == "1":
        page.screenshot(path=str(ROOT / "docs" / "page.png"), full_page=True)

    analyze(page, NEGATIVE, keyboard=True)
    expect(page.locator("#result-sentiment")).to_have_text("Negative")
    assert page.locator("#result-text mark.term.neg").count() >= 1
    assert page.locator("#result-text").inner_text() == NEGATIVE
    # Every control is labelled.
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
              .filter(c => !c.labels.length && !c.getAttribute('aria-label')).map(c => c.id)"""
    )
    assert unlabelled == []
    assert tab.errors == []
    assert tab.leaving_the_machine() == []


def test_errors_are_the_apis_and_keep_the_text(tab):
    page = tab.page
    analyze(page, "   ")
    expect(page.locator("#review-error")).to_have_text("Input text cannot be empty.")
    assert page.input_value("#review") == "   "
    long = "good " * 1001
    analyze(page, long)
    expect(page.locator("#review-error")).to_have_text(
        "Input text exceeds maximum length of 5000 characters."
    )
    assert page.input_value("#review") == long
    analyze(page, POSITIVE)
    expect(page.locator("#result-sentiment")).to_have_text("Positive")
    expect(page.locator("#review-error")).to_be_hidden()


def test_a_batch_file_gives_a_table_a_filter_and_a_download(tab, tmp_path):
    page = tab.page
    lines = [POSITIVE if i % 2 else NEGATIVE for i in range(19)] + ['He said "wow", twice']
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("\n".join(lines) + "\n")
    page.set_input_files("#batch-file", str(reviews))
    rows = page.locator("#batch-table tbody tr")
    expect(rows).to_have_count(20)
    assert rows.nth(19).locator("td.text").inner_text() == lines[19]
    sentiments = [rows.nth(i).locator("td").nth(2).inner_text() for i in range(20)]
    positive = sentiments.count("positive")
    assert 0 < positive < 20

    page.select_option("#batch-filter", "negative")
    expect(page.locator("#batch-table tbody tr:visible")).to_have_count(20 - positive)
    page.select_option("#batch-filter", "all")
    expect(page.locator("#batch-table tbody tr:visible")).to_have_count(20)
    with page.expect_download() as download:
        page.click("#batch-download")
    saved = tmp_path / "download.csv"
    download.value.save_as(saved)
    assert download.value.suggested_filename == "reviews-sentiment.csv"
    table = saved.read_text().splitlines()
    assert table[0] == "row,text,sentiment,confidence,no_known_terms,model_version"
    assert len(table) == 21
    assert table[20].startswith('20,"He said ""wow"", twice",')

    # Reviews that a spreadsheet would run as formulas are written as text.
    formulas = ['=HYPERLINK("http://example.com","x")', "+1 great", "-2 awful", "@SUM(A1)"]
    (tmp_path / "formulas.txt").write_text("\n".join(formulas) + "\n")
    page.set_input_files("#batch-file", str(tmp_path / "formulas.txt"))
    expect(rows).to_have_count(4)
    with page.expect_download() as download:
        page.click("#batch-download")
    download.value.save_as(tmp_path / "formulas.csv")
    with open(tmp_path / "formulas.csv", newline="") as file:
        cells = [row["text"] for row in csv_module.DictReader(file)]
    assert cells == [f"'{text}" for text in formulas]

    # A CSV's `review` column, with a quoted comma and line break inside a review.
    csv = tmp_path / "reviews.csv"
    csv.write_text(f'id,review\n1,"{POSITIVE}"\n2,"Bad, bad.\nBoring."\n')
    page.set_input_files("#batch-file", str(csv))
    expect(rows).to_have_count(2)
    assert rows.nth(1).locator("td.text").text_content() == "Bad, bad.\nBoring."

    # Dropped on the drop zone; and over 1,000 reviews, refused before anything is sent.
    page.evaluate(
        """() => {
            const files = new DataTransfer();
            files.items.add(new File(["Great.\\nAwful.\\nFine film.\\n"], "dropped.txt"));
            document.getElementById("drop").dispatchEvent(
                new DragEvent("drop", {dataTransfer: files, bubbles: true, cancelable: true}));
        }"""
    )
    expect(rows).to_have_count(3)
    many = tmp_path / "many.txt"
    many.write_text("A fine film.\n" * 1001)
    page.set_input_files("#batch-file", str(many))
    expect(page.locator("#batch-error")).to_have_text(
        "many.txt holds 1,001 reviews; at most 1,000 at a time."
    )
    expect(page.locator("#batch-result")).to_be_hidden()
    assert tab.errors == []
    assert tab.leaving_the_machine() == []


def test_with_api_keys_it_shows_the_401_then_works_once_the_key_is_entered(browser, page_gateway):
    context = browser.new_context()
    try:
        watched = Watched(context)
        page = watched.page
        page.goto(page_gateway.url + "/")
        expect(page.locator("#key-section")).to_be_visible()
        analyze(page, POSITIVE)
        expect(page.locator("#review-error")).to_have_text("Missing or invalid API key.")
        page.fill("#key-input", KEY)
        page.click("#key-save")
        # The refused analysis is done again with the key.
        expect(page.locator("#result-sentiment")).to_have_text("Positive")
        expect(page.locator("#key-section")).to_be_hidden()
        expect(page.locator("#model-accuracy")).to_have_text("84.0 %")
        assert page.evaluate(f"sessionStorage.getItem({KEY_STORE!r})") == KEY
        assert page.evaluate("localStorage.length") == 0
        assert watched.leaving_the_machine() == []
    finally:
        context.close()


def test_readable_at_phone_width(browser, page_gateway):
    context = browser.new_context(viewport={"width": 360, "height": 740})
    context.add_init_script(f"sessionStorage.setItem({KEY_STORE!r}, {KEY!r})")
    try:
        page = Watched(context).page
        page.goto(page_gateway.url + "/")
        analyze(page, POSITIVE + " " + "Superb" * 30)
        expect(page.locator("#result-sentiment")).to_have_text("Positive")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360
    finally:
        context.close()


def test_a_promotion_shows_without_a_reload(tab, page_gateway, tracking_uri):
    page = tab.page
    page.evaluate("window.loadedOnce = true")
    version = register_version(tracking_uri, tags={"test_accuracy": "0.86"}, sample=1)
    promoted = time.monotonic()
    MlflowClient(tracking_uri).set_registered_model_alias(NAME, ALIAS, version)
    expect(page.locator("#model-version")).to_have_text(f"v{version}", timeout=120_000)
    print(f"page showed v{version} {time.monotonic() - promoted:.1f}s after the promotion")
    expect(page.locator("#model-news")).to_have_text(
        f"Now serving v{version} (was {page_gateway.version})."
    )
    expect(page.locator("#model-accuracy")).to_have_text("86.0 %")
    assert page.evaluate("window.loadedOnce") is True
    assert tab.errors == []
