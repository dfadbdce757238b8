"""Driving pages whose Content-Security-Policy forbids eval (the playground, the exported page).

Playwright's `page.wait_for_function` evaluates its predicate with eval inside the page, which
such a policy blocks; `page.evaluate` goes through the DevTools protocol, outside it. So these
helpers poll `page.evaluate` instead, and the pages are tested under their real policy.
"""

from __future__ import annotations

from conftest import wait_until


def wait_js(page, expression: str, timeout: float = 60.0):
    """Poll the JavaScript `expression` in `page` until it is truthy (returned), or fail after `timeout` s."""
    return wait_until(lambda: page.evaluate(expression), timeout=timeout, interval=0.05, what=expression)
