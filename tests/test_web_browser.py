"""The tracker's web UI in a real browser: Debian's Chromium driven by Playwright (no browser download).

Each page is screenshot into ``test-artifacts/screenshots/`` (gitignored);
``docs/screenshots/`` holds copies for the README. The tracker runs in a
thread of its own (``tests/web_helpers.py``) and is fed over the real
protocol while the browser looks.
"""

from __future__ import annotations

import pathlib
import tempfile
from collections.abc import Iterator

import pytest

from tests.procs import ROOT
from tests.system import program
from tests.tracker_client_helper import make_manifest
from tests.web_helpers import TrackerThread

playwright_api = pytest.importorskip("playwright.sync_api")

SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
#: Chromium's switches for a quiet, sandbox-free headless run that reaches nothing but loopback.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
#: Milliseconds a page may take to show what it should (generous: a loaded 2-core machine).
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = program("chromium")
    with tempfile.TemporaryDirectory(prefix="chunkswarm-chromium-") as profile, playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=True, args=CHROMIUM_ARGS, viewport={"width": 1100, "height": 760}
        )
        context.set_default_timeout(WAIT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    page = browser.new_page()  # type: ignore[attr-defined]
    yield page
    page.close()


@pytest.fixture
def tracker() -> Iterator[TrackerThread]:
    with TrackerThread() as running:
        yield running


def screenshot(page: object, name: str) -> pathlib.Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    return path


def test_a_search_finds_a_published_file_and_shows_its_holders(page: object, tracker: TrackerThread) -> None:
    song = make_manifest("Holiday Song.ogg", chunks=12)
    tracker.seed(song, 7001)
    tracker.seed(song, 7002, chunks=[(0, 5)])
    tracker.seed(make_manifest("unrelated.txt"), 7003)
    page.goto(tracker.url)  # type: ignore[attr-defined]
    page.fill("input[name=q]", "holiday")  # type: ignore[attr-defined]
    page.press("input[name=q]", "Enter")  # type: ignore[attr-defined]
    results = page.locator("section.result")  # type: ignore[attr-defined]
    playwright_api.expect(results).to_have_count(1)
    playwright_api.expect(results.locator("h2")).to_have_text("Holiday Song.ogg")
    holders = results.locator("tr.holder")
    playwright_api.expect(holders).to_have_count(2)
    text = results.inner_text()
    assert "127.0.0.1:7001" in text and "127.0.0.1:7002" in text and "5 of 12 chunks" in text
    assert f"chunkswarm get --tracker 127.0.0.1:{tracker.running.port} {song.hex_id}" in text  # type: ignore[union-attr]
    screenshot(page, "search")


def test_the_stats_page_shows_a_peer_that_joins_after_it_was_opened(page: object, tracker: TrackerThread) -> None:
    tracker.seed(make_manifest("a.bin"), 7001)
    page.goto(tracker.url + "?q=a.bin")  # type: ignore[attr-defined]  # a search, for the log
    page.goto(tracker.url + "stats")  # type: ignore[attr-defined]
    playwright_api.expect(page.locator("tr.peer")).to_have_count(1)  # type: ignore[attr-defined]
    page.evaluate("window.notReloaded = true")  # type: ignore[attr-defined]
    tracker.join(7002)
    playwright_api.expect(page.locator("tr.peer")).to_have_count(2)  # type: ignore[attr-defined]
    assert "127.0.0.1:7002" in page.locator("#peers").inner_text()  # type: ignore[attr-defined]
    assert page.evaluate("window.notReloaded") is True  # type: ignore[attr-defined]
    screenshot(page, "stats")


def test_the_file_page_draws_its_chunk_availability(page: object, tracker: TrackerThread) -> None:
    manifest = make_manifest("dataset.tar", chunks=40)
    tracker.seed(manifest, 7001, chunks=[(0, 30)])
    tracker.seed(manifest, 7002, chunks=[(10, 20)])
    page.goto(f"{tracker.url}files/{manifest.hex_id}")  # type: ignore[attr-defined]
    cells = page.locator("#availability .cell")  # type: ignore[attr-defined]
    playwright_api.expect(cells).to_have_count(40)
    colours = cells.evaluate_all("cells => cells.map(cell => getComputedStyle(cell).backgroundColor)")
    # Chunks 10-19 have two holders, 0-9 and 20-29 one, 30-39 none: three shades, drawn in the right places.
    assert len({colours[0], colours[10], colours[35]}) == 3
    assert colours[0] == colours[25] and colours[10] == colours[19] and colours[30] == colours[39]
    box = cells.first.bounding_box()
    assert box is not None and box["width"] > 5 and box["height"] > 5  # drawn, not only in the markup
    screenshot(page, "file")
    page.set_viewport_size({"width": 390, "height": 800})  # type: ignore[attr-defined]
    screenshot(page, "file-phone")


def test_a_file_name_with_markup_is_shown_as_text(page: object, tracker: TrackerThread) -> None:
    name = "<img src=x onerror=\"document.title='pwned'\"><b>bold<b>"
    tracker.seed(make_manifest(name), 7001)
    page.goto(tracker.url + "?q=img")  # type: ignore[attr-defined]
    heading = page.locator("section.result h2")  # type: ignore[attr-defined]
    playwright_api.expect(heading).to_have_text(name)
    assert page.locator("main img").count() == 0 and page.locator("main b").count() == 0  # type: ignore[attr-defined]
    assert "pwned" not in page.title()  # type: ignore[attr-defined]
    page.goto(tracker.url + "stats")  # type: ignore[attr-defined]
    playwright_api.expect(page.locator("#searches")).to_contain_text("img")  # type: ignore[attr-defined]
    assert "pwned" not in page.title()  # type: ignore[attr-defined]
