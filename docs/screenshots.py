"""Redraw docs/drift-report.png: the drift report the monitor job logs (``drift_report.html``)
for a period of text of another kind, so the README shows what a flagged period looks like.

The same data as the monitor job's integration test: the test models' real pipeline and its
reference rows (``tests.models``), and its answers to 400 short product reviews and French
sentences (``tests.integration.test_monitor_job.other_texts``), laid out as the prediction log
holds them. No tracking server: ``pipelines.drift_report.write`` makes the page, a headless
Chromium draws it.

    .venv/bin/python docs/screenshots.py [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import joblib
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.sentiment_model import SentimentModel  # noqa: E402
from monitoring import reference  # noqa: E402
from pipelines import drift_report  # noqa: E402
from tests.integration.test_monitor_job import other_texts  # noqa: E402
from tests.models import fitted_pipeline_path, reference_paths  # noqa: E402

ROWS = 400
# Each column's histograms are 2D canvases: drawn once each has painted pixels.
PAINTED = """(count) => {
    const canvases = [...document.querySelectorAll("canvas")];
    return canvases.length >= count && canvases.every((c) => {
        const pixels = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        return pixels.some((value, i) => i % 4 === 3 && value > 0);
    });
}"""
WIDTH, HEIGHT = 1280, 1000
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]  # fmt: skip


def period_rows(texts: list[str]) -> pd.DataFrame:
    """The model's answers as the prediction log keeps them: no text, only its length."""
    pipeline = joblib.load(fitted_pipeline_path())
    answers = SentimentModel(pipeline).predict(None, pd.DataFrame({"text": texts}))
    return pd.DataFrame(
        {
            "sentiment": answers["sentiment"],
            "confidence": answers["confidence"].astype(float),
            "text_length": [len(text) for text in texts],
            "known_term_ratio": answers["known_term_ratio"].astype(float),
        }
    )


def drift_page(folder: Path) -> tuple[Path, dict[str, float]]:
    rows = pd.read_csv(reference_paths()[reference.REFERENCE_ROWS])
    page = folder / "drift_report.html"
    return page, drift_report.write(rows, period_rows(other_texts(ROWS)), page)


def screenshot(page: Path, out: Path, chromium: str, charts: int) -> None:
    """The summary and the per-column table once the two histograms of each of ``charts``
    columns are drawn; the page is self-contained, and any request for an outside address is
    refused and reported."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        outside = []
        tab.route(
            lambda url: not url.startswith(("file:", "data:", "blob:")),
            lambda route: (outside.append(route.request.url), route.abort()),
        )
        tab.goto(page.as_uri(), wait_until="load")
        tab.get_by_text("Drifted Columns").first.wait_for(timeout=60_000)
        tab.wait_for_function(PAINTED, arg=2 * charts, timeout=60_000)
        # The page is the summary and the table, nothing below: all of it, to the table's end.
        tab.screenshot(path=str(out), full_page=True)
        browser.close()
    if outside:
        print(f"the page asked for {len(outside)} outside address(es): {outside[:3]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "drift-report.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        page, metrics = drift_page(Path(tmp))
        print({name: round(value, 4) for name, value in sorted(metrics.items())})
        charts = sum(name.startswith("evidently_psi_") for name in metrics)
        screenshot(page, args.out, args.chromium, charts)
    print(f"{args.out}: {args.out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
