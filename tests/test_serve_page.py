"""The playground in a real headless Chromium (Debian's, driven by Playwright for Python).

Type a prompt, Generate, watch the text grow, Stop (the server holds no stream after),
hover a character for its alternatives, open the runs view and see the validation curve.
Screenshots go to the test's directory; with TEXTGEN_UPDATE_SCREENSHOTS=1 also to docs/
(TEXTGEN_SCREENSHOT_CHECKPOINTS may name a better-trained checkpoints directory for them).
Under CI=true a missing Chromium or Playwright fails instead of skipping. The page runs under
its Content-Security-Policy, so waits poll `page.evaluate` (helpers.wait_js), never eval.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers import REPO, Server, page_generate, shown_character, wait_js, wait_until

pytestmark = pytest.mark.slow
LONG = 1_000_000  # never reached: the test stops the generation


@pytest.fixture(scope="module")
def server(tiny_run):
    root = Path(os.environ.get("TEXTGEN_SCREENSHOT_CHECKPOINTS") or tiny_run.checkpoints)
    s = Server(root, "--max-length", str(LONG), "--quiet")
    yield s
    assert s.stop() == 0, s.log()


def _shot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000
    if os.environ.get("TEXTGEN_UPDATE_SCREENSHOTS") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copy(path, REPO / "docs" / name)
    return path


def _text_length(page) -> int:
    return page.evaluate("Array.from(document.querySelectorAll('.sample .text')).reduce("
                         "(n, e) => n + e.textContent.length - e.querySelector('.prefix').textContent.length, 0)")


def test_generate_grows_text_and_stop_frees_the_server(browser, server, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(server.url + "/")
    wait_js(page, "document.querySelector('#model').options.length > 0")
    page.fill("#prompt", "ROMEO:")
    page.fill("#length", str(LONG))
    page.fill("#n", "2")
    page.fill("#seed", "42")
    page.click("#generate")
    wait_js(page, "document.querySelectorAll('.sample .text span[data-p]').length > 40")
    first = _text_length(page)
    wait_until(lambda: _text_length(page), lambda length: length > first, what="the text to grow as it streams")
    # Both streams are the server's, stepping or paused until the page reads (back-pressure:
    # on a slow machine the page may fall 256 KiB behind, and a paused stream leaves the batch).
    assert server.streams() == 2
    assert page.inner_text("#seed-used") == "42"
    page.click("#stop")
    server.wait_streams(0, timeout=3)
    assert "Stopped" in page.inner_text("#status")
    assert page.is_enabled("#continue")
    page.close()


def test_probabilities_alternatives_copy_and_screenshots(browser, server, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(server.url + "/")
    wait_js(page, "document.querySelector('#model').options.length > 0")
    page_generate(page, prompt="ROMEO:\n", length=600, n=2, seed=7, stops="")
    assert page.locator(".sample").count() == 2
    assert page.locator(".sample .finish").first.inner_text() == "length"
    shaded = page.locator(".sample .text span[data-p]")
    assert shaded.count() == 1200
    shown_character(page, 30).hover()
    assert page.is_visible("#tip") and page.locator("#tip tr").count() == 5
    page.click("#copy-curl")
    snippet = page.inner_text("#snippet")
    assert snippet.startswith("curl -N " + server.url + "/v1/completions") and '"seed":7' in snippet
    page.click("#copy-python")
    assert "from openai import OpenAI" in page.inner_text("#snippet")
    page.click("#continue")
    wait_js(page, "document.querySelector('#status').textContent.startsWith('Done')")
    assert page.locator(".sample .text .prefix").first.inner_text().startswith("ROMEO:\n")
    page.fill("#length", "600")
    page.click("#generate")
    wait_js(page, "document.querySelector('#status').textContent.startsWith('Done')")
    shown_character(page, 200).hover()
    _shot(page, tmp_path, "playground.png")
    page.click("#tab-runs")
    page.wait_for_selector("svg.curve path.val", state="attached")
    assert page.get_attribute("svg.curve path.val", "d").startswith("M")
    assert page.locator("svg.curve circle").count() >= 2  # one per evaluation (every 50 steps)
    _shot(page, tmp_path, "playground-runs.png")
    page.close()


def test_phone_width(browser, server, tmp_path):
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    page.goto(server.url + "/")
    wait_js(page, "document.querySelector('#model').options.length > 0")
    page_generate(page, prompt="JULIET:\n", length=300, n=1)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than the phone
    _shot(page, tmp_path, "playground-phone.png")
    page.close()
