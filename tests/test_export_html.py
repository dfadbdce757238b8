"""The html export: one offline page, opened from file:// in headless Chromium with every
network request blocked, agrees with the numpy engine and with `textgen sample`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import FORCED, GREEDY_LENGTH, PRIME, export, forced_log_probs, greedy_sample, run_engine

pytestmark = pytest.mark.slow  # trains a run, starts subprocesses and a browser


class Page:
    """One tab on an exported file; any request that is not the file itself is aborted and recorded."""

    def __init__(self, browser, path: Path, fragment: str = "", viewport=(1280, 800)):
        self.page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        self.url = path.resolve().as_uri()
        self.requests, self.errors = [], []
        self.page.route("**/*", self._route)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(self.url + fragment)

    def _route(self, route):
        if route.request.url.split("#")[0] == self.url:
            route.continue_()
        else:
            self.requests.append(route.request.url)
            route.abort()

    def wait_done(self):
        # A selector, not wait_for_function: the page's CSP forbids the eval that polling a function needs.
        self.page.wait_for_selector("body[data-state=done], body[data-state=error]", state="attached", timeout=60000)
        assert self.page.evaluate("document.body.dataset.state") == "done", self.page.inner_text("#status")
        return self.page.text_content("#output")

    def close(self):
        assert self.errors == [] and self.requests == [], (self.errors, self.requests)
        self.page.close()


@pytest.fixture(scope="module")
def pages(two_layer_run, tmp_path_factory):
    """The page in every precision, with the export's JSON."""
    directory = tmp_path_factory.mktemp("html")
    return {p: (directory / f"tiny-{p}.html", export(two_layer_run, "--format", "html", "--precision", p,
                                                      "--output", directory / f"tiny-{p}.html"))
            for p in ("float32", "float16", "int8")}


def dequantised_engine(two_layer_run, precision):
    from textgen.export.model_arrays import load, quantise, reference_engine

    _info, _ckpt, arrays = load(two_layer_run.run)
    return reference_engine(quantise(arrays, precision)[1])


def greedy(engine, vocab, prime=PRIME, length=GREEDY_LENGTH) -> str:
    state, text = engine.initial_state(1), ""
    for ch in prime:
        logits = engine.step(np.array([vocab.index(ch)]), state)
    for _ in range(length):
        next_id = int(np.argmax(logits[0]))
        text += vocab[next_id]
        logits = engine.step(np.array([next_id]), state)
    return text


def test_the_page_is_one_file_with_nothing_to_fetch(pages):
    text = pages["float32"][0].read_text(encoding="utf-8")
    for outside in ("http://", "https://", " src=", "<link", "import(", "fetch("):
        assert outside not in text, outside
    assert "default-src 'none'" in text  # its CSP forbids any fetch as well


def test_float32_page_log_probs_match_the_engine(browser, pages, two_layer_run):
    page = Page(browser, pages["float32"][0])
    rows = np.array(page.page.evaluate("(text) => window.textgen.model.score(text)", FORCED))
    diff = np.abs(rows - forced_log_probs(run_engine(two_layer_run), two_layer_run.vocab)).max()
    print(f"html float32: max |log p difference| over {len(FORCED)} characters: {diff:.3g}")
    assert rows.shape == (500, len(two_layer_run.vocab)) and diff <= 1e-4
    page.close()


@pytest.mark.parametrize("precision", ["float16", "int8"])
def test_quantised_pages_match_the_engine_on_their_dequantised_weights(browser, pages, two_layer_run, precision):
    path, result = pages[precision]
    engine = dequantised_engine(two_layer_run, precision)
    vocab = two_layer_run.vocab
    page = Page(browser, path)
    rows = np.array(page.page.evaluate("(text) => window.textgen.model.score(text)", FORCED))
    diff = np.abs(rows - forced_log_probs(engine, vocab)).max()
    print(f"html {precision}: max |log p difference| over {len(FORCED)} characters: {diff:.3g}; "
          f"bpc {result['bpc']['float32']:.4f} -> {result['bpc'][precision]:.4f} ({result['bpc']['change']:+.4f}); "
          f"{result['bytes']:,} bytes")
    assert diff <= 1e-4
    page.close()
    page = Page(browser, path, "#prime=ROMEO:&temperature=0&length=200&seed=1&autorun=1")
    assert page.wait_done() == PRIME + greedy(engine, vocab)
    page.close()
    assert result["bpc"]["characters"] > 100 and np.isfinite(result["bpc"]["change"])
    assert result["bpc"]["change"] == pytest.approx(result["bpc"][precision] - result["bpc"]["float32"])


def test_sizes_shrink_with_precision(pages):
    sizes = {p: pages[p][1]["bytes"] for p in pages}
    assert sizes["float32"] > sizes["float16"] > sizes["int8"]
    assert all(pages[p][1]["bytes"] == pages[p][0].stat().st_size for p in pages)
    assert "bpc" not in pages["float32"][1]


def test_greedy_link_writes_what_textgen_sample_writes(browser, pages, two_layer_run):
    page = Page(browser, pages["float32"][0], "#prime=ROMEO:&temperature=0&length=200&seed=1&autorun=1")
    text = page.wait_done()
    assert text == PRIME + greedy_sample(two_layer_run)
    assert page.page.input_value("#prime") == PRIME and page.page.input_value("#length") == "200"
    stats = page.page.evaluate("window.textgen.stats")
    assert stats["chars"] == 200 and stats["charsPerSecond"] > 0
    page.close()


def test_a_seed_gives_the_same_text_and_stop_strings_end_it(browser, pages):
    def sample(fragment):
        page = Page(browser, pages["float32"][0], fragment)
        text = page.wait_done()
        page.close()
        return text

    first = sample("#prime=J&temperature=1&length=300&seed=7&top_k=10&top_p=0.95&autorun=1")
    assert first == sample("#prime=J&temperature=1&length=300&seed=7&top_k=10&top_p=0.95&autorun=1")
    assert first != sample("#prime=J&temperature=1&length=300&seed=8&top_k=10&top_p=0.95&autorun=1")
    assert len(first) == 301
    stopped = sample("#prime=ROMEO:&temperature=0&length=200&seed=1&stop=the%20east&autorun=1")
    full = sample("#prime=ROMEO:&temperature=0&length=200&seed=1&autorun=1")
    assert "the east" in full[len(PRIME):]
    assert stopped == full[: full.index("the east", len(PRIME))]


def test_generate_stop_and_continue_from_the_form(browser, pages):
    page = Page(browser, pages["float32"][0])
    ui = page.page
    ui.fill("#prime", "JULIET:")
    ui.fill("#length", "40")
    ui.fill("#temperature", "0")
    ui.click("#generate")
    first = page.wait_done()
    assert first.startswith("JULIET:") and len(first) == len("JULIET:") + 40
    assert "temperature=0" in ui.evaluate("location.hash")  # the address reproduces the sample
    ui.click("#continue")
    assert page.wait_done().startswith(first) and len(ui.text_content("#output")) == len(first) + 40
    ui.fill("#length", "2000000")
    ui.click("#generate")
    ui.wait_for_selector("body[data-state=running]", state="attached")
    ui.click("#stop-button")
    assert len(page.wait_done()) < 2000000
    ui.fill("#prime", "ROMEO: §")
    ui.click("#generate")
    ui.wait_for_selector("body[data-state=error]", state="attached")
    assert "'§'" in ui.inner_text("#status") or '"§"' in ui.inner_text("#status")
    page.close()


def test_the_page_fits_a_phone_and_a_laptop(browser, pages, tmp_path):
    for width, height in ((1280, 800), (390, 844)):
        page = Page(browser, pages["float32"][0], "#prime=ROMEO:&temperature=0&length=300&autorun=1",
                    viewport=(width, height))
        page.wait_done()
        overflow = page.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"horizontal scroll at {width}px"
        page.page.screenshot(path=str(tmp_path / f"page-{width}.png"))
        page.close()
