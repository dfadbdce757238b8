"""The exported page against hostile links: its CSP lets only its own script run, `length` is
capped, and a 200,000-character `#prime=...&autorun=1` is read in slices that leave the tab
responsive (a timer keeps firing, Stop answers at once). Real headless Chromium, file:// page."""

from __future__ import annotations

import re
import time
from urllib.parse import quote

import pytest
from helpers import TINY_TEXT, export

pytestmark = pytest.mark.slow  # trains a run, exports it, drives a browser

LONG_PRIME = (TINY_TEXT * 1100)[:200_000]
# Installed before the page's own script: a 10 ms timer that records when it ran and what the page said.
HEARTBEAT = """
window.__beats = [];
(function beat() {
  const status = document.getElementById('status');
  window.__beats.push([performance.now(), status ? status.textContent : '']);
  setTimeout(beat, 10);
})();
"""


@pytest.fixture(scope="module")
def page_path(two_layer_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("limits") / "tiny.html"
    export(two_layer_run, "--format", "html", "--output", path)
    return path


def _open(browser, path, fragment=""):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.add_init_script(HEARTBEAT)
    page.goto(path.resolve().as_uri() + fragment)
    return page, errors


def _settled(page, timeout=120_000) -> str:
    page.wait_for_selector("body[data-state=done], body[data-state=error]", state="attached", timeout=timeout)
    return page.evaluate("document.body.dataset.state")


def test_the_csp_names_the_page_script_by_hash_and_nothing_else_runs(browser, page_path):
    text = page_path.read_text(encoding="utf-8")
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', text).group(1)
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy and "default-src 'none'" in policy
    assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]{44}';", policy)
    page, errors = _open(browser, page_path, "#prime=ROMEO:&temperature=0&length=50&autorun=1")
    assert _settled(page) == "done"  # the hashed script and style are the ones the browser runs
    assert page.evaluate("getComputedStyle(document.querySelector('.brand')).marginRight") != "0px"
    page.evaluate("() => { const s = document.createElement('script'); s.textContent = 'window.__inline = 1';"
                  " document.body.append(s); }")
    assert page.evaluate("window.__inline") is None and errors == []
    page.close()


@pytest.mark.parametrize("length", ["2000001", "1e9", "0"])
def test_a_length_past_the_cap_is_refused_in_one_line(browser, page_path, length):
    page, errors = _open(browser, page_path, f"#prime=R&length={length}&autorun=1")
    assert _settled(page) == "error"
    assert "Length must be an integer from 1 to 2,000,000" in page.inner_text("#status") and errors == []
    page.close()


def test_a_200000_character_prime_link_keeps_the_tab_responsive(browser, page_path):
    fragment = "#prime=" + quote(LONG_PRIME, safe="") + "&temperature=0&length=20&seed=1&autorun=1"
    page, errors = _open(browser, page_path, fragment)
    assert _settled(page) == "done"
    assert page.text_content("#output").startswith(LONG_PRIME) and len(page.text_content("#output")) == 200_020
    beats = page.evaluate("window.__beats")
    reading = [t for t, status in beats if status.startswith("Reading the prompt")]
    gaps = [b - a for a, b in zip(reading, reading[1:])]
    print(f"200,000-character prime: read over {reading[-1] - reading[0]:.0f} ms in {len(reading)} timer ticks, "
          f"longest gap {max(gaps):.0f} ms; longest gap over the page's life "
          f"{max(b[0] - a[0] for a, b in zip(beats, beats[1:])):.0f} ms")
    # The timer kept running while the prompt was read (slices of 25 ms; the bound leaves room for a
    # busy machine). Fed in one go, as before, the page showed no reading at all and froze meanwhile.
    assert len(reading) >= 5 and max(gaps) < 500
    assert errors == []
    page.close()
    # Stop while the prompt is being read: the click is handled at once, and nothing is left to continue.
    page, errors = _open(browser, page_path, fragment.replace("length=20", "length=2000000"))
    page.wait_for_selector("body[data-state=running]", state="attached", timeout=60_000)
    clicked = time.monotonic()
    page.click("#stop-button")
    assert _settled(page, timeout=5_000) == "done" and time.monotonic() - clicked < 2
    assert "ended by Stop" in page.inner_text("#status")
    assert page.evaluate("window.textgen.run.fed") < len(LONG_PRIME)  # it was still reading
    assert page.is_disabled("#continue") and errors == []
    page.close()
