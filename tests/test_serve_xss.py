"""A crafted run cannot run script in the playground: every field is text, and the CSP holds.

A copy of the tiny run gets `<img src=x onerror=...>` (and an SVG `onload`) in every string and
number of run.json and of each checkpoint's state.json that the loader accepts in its place (the
loader's own checks decide: history[].step and the other figures must be numbers, so a checkpoint
carrying the payload there is refused and never reaches the page, which is tested too), its
manifests re-sealed, and is served. Headless Chromium opens every view of the playground and the
API reference under the page's real Content-Security-Policy: the payload shows as text, no element
is parsed from it, no handler runs and the policy has nothing to block.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil

import httpx
import pytest
from helpers import Server, shown_character, wait_js

from textgen import run_checks
from textgen.errors import CheckpointError

pytestmark = pytest.mark.slow
PAYLOAD = '"><img src=x onerror="window.__xss=1"></title><svg onload="window.__xss=2">'


def _leaves(value, path=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, path + (i,))
    elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
        yield path


def _set(document, path, value):
    for key in path[:-1]:
        document = document[key]
    document[path[-1]] = value


def poison(document: dict, check) -> tuple[dict, list, list]:
    """(document with PAYLOAD in every leaf that `check` accepts it in, paths poisoned, paths refused)."""
    poisoned, accepted, refused = copy.deepcopy(document), [], []
    for path in _leaves(document):
        trial = copy.deepcopy(document)
        _set(trial, path, PAYLOAD)
        try:
            check(trial, "crafted")
        except CheckpointError:
            refused.append(path)
            continue
        _set(poisoned, path, PAYLOAD)
        accepted.append(path)
    check(poisoned, "crafted")
    return poisoned, accepted, refused


def write_state(checkpoint, state: dict) -> None:
    """Write state.json and re-seal the checkpoint's manifest (its SHA-256 and size)."""
    (checkpoint / "state.json").write_text(json.dumps(state), encoding="utf-8")
    manifest = json.loads((checkpoint / "manifest.json").read_text(encoding="utf-8"))
    data = (checkpoint / "state.json").read_bytes()
    manifest["files"]["state.json"] = hashlib.sha256(data).hexdigest()
    if "bytes" in manifest:
        manifest["bytes"]["state.json"] = len(data)
    (checkpoint / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def poison_run(run) -> dict:
    """Poison run.json and every checkpoint's state.json where the loader accepts it; what was poisoned."""
    info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    info, accepted, _ = poison(info, run_checks.check_run_info)
    (run / "run.json").write_text(json.dumps(info), encoding="utf-8")
    found = {"run.json": accepted}
    for checkpoint in sorted(p for p in run.iterdir() if (p / "state.json").is_file()):
        state = json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))
        state, found[checkpoint.name], refused = poison(state, run_checks.check_state)
        assert ("history", 0, "step") in refused  # the loader wants numbers there
        write_state(checkpoint, state)
    return found


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    root = tiny_run.copy(tmp_path_factory.mktemp("xss") / "checkpoints")
    poisoned = poison_run(root / "tiny")
    assert len(poisoned["run.json"]) > 30 and all(len(paths) >= 3 for paths in poisoned.values())
    s = Server(root, "--quiet", "--reload-seconds", "0.2")
    s.root = root
    yield s
    assert s.stop() == 0, s.log()


# Recorded from before the page's own script runs: any CSP violation, and whether a handler ran.
WATCH = """
window.__violations = [];
document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(e.violatedDirective));
"""
NOTHING_RAN = "[window.__xss === undefined, window.__violations, document.querySelectorAll('img, svg [onload], " \
              "[onerror], [onload]').length]"


def _open(browser, url):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.add_init_script(WATCH)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    return page, errors


def test_the_payload_reaches_the_page_through_the_api(server):
    run = httpx.get(server.url + "/v1/textgen/runs", timeout=10).json()["data"][0]
    assert run["config"]["training"]["seq_len"] == PAYLOAD and run["config"]["corpus"]["name"] == PAYLOAD
    assert sum(v == PAYLOAD for v in run["config"]["training"].values()) >= 15
    csp = httpx.get(server.url + "/", timeout=10).headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp


def test_every_view_shows_the_payload_as_text_and_runs_nothing(browser, server, tmp_path):
    page, errors = _open(browser, server.url + "/")
    wait_js(page, "document.querySelector('#model').options.length > 0")
    # A request string: the prompt comes back in the 400's message, shown as text.
    page.fill("#prompt", PAYLOAD)
    page.click("#generate")
    wait_js(page, "document.querySelector('#status').classList.contains('error')")
    assert PAYLOAD in page.text_content("#status")
    # Generated text, its probabilities and the alternatives on hover.
    page.fill("#prompt", "ROMEO:")
    page.fill("#length", "80")
    page.click("#generate")
    wait_js(page, "document.querySelector('#status').textContent.startsWith('Done')")
    shown_character(page, 10).hover()
    assert page.is_visible("#tip")
    page.click("#key-button")
    # The runs view: facts, curve, evaluations and configuration tables, all opened.
    page.click("#tab-runs")
    wait_js(page, "document.querySelectorAll('#runs details').length >= 2")
    for summary in page.locator("#runs details summary").all():
        summary.click()
    shown = page.evaluate("document.querySelector('#runs').innerText")
    config = httpx.get(server.url + "/v1/textgen/runs", timeout=10).json()["data"][0]["config"]
    sent = sum(v == PAYLOAD for group in config.values() for v in (group or {}).values())
    assert sent >= 15 and shown.count(PAYLOAD) == sent, shown[:2000]  # each one, as text
    assert page.locator(".history tr").count() >= 2  # the evaluations table is drawn
    page.screenshot(path=str(tmp_path / "runs-poisoned.png"))
    assert page.evaluate(NOTHING_RAN) == [True, [], 0]
    # The policy is really in force: an inline script added now does not run, and is reported.
    page.evaluate("() => { const s = document.createElement('script'); s.textContent = 'window.__inline = 1';"
                  " document.body.append(s); }")
    wait_js(page, "window.__violations.length > 0")
    assert page.evaluate("window.__inline") is None
    assert errors == []
    page.close()


def test_the_api_reference_is_local_and_plain_text(browser, server):
    page, errors = _open(browser, server.url + "/docs")
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.reload()
    wait_js(page, "document.querySelectorAll('#docs article').length >= 5")
    assert "/v1/completions" in page.inner_text("#docs")
    assert all(url.startswith(server.url) for url in requests), requests
    assert page.evaluate(NOTHING_RAN) == [True, [], 0] and errors == []
    page.close()


def test_a_checkpoint_with_the_payload_in_history_step_is_never_served(server):
    run = server.root / "tiny"
    newest = sorted(p for p in run.iterdir() if p.name.startswith("ckpt-"))[-1]
    crafted = run / ".tmp-crafted"
    shutil.copytree(newest, crafted)
    state = json.loads((crafted / "state.json").read_text(encoding="utf-8"))
    state["step"] += 1
    state["history"][0]["step"] = PAYLOAD
    write_state(crafted, state)
    name = f"ckpt-{state['step']:08d}"
    crafted.rename(run / name)
    server.wait_log(f"Not loading tiny/{name}", timeout=20)
    served = httpx.get(server.url + "/v1/textgen/runs", timeout=10).json()["data"][0]
    assert served["checkpoint"] == newest.name and PAYLOAD not in json.dumps(served["history"])
