"""Chat messages as plain text for a character model: the bridge from chat clients.

A template is plain text with `{role}`, `{Role}` or `{ROLE}` and `{content}`; each message
is rendered through it, then the template once more for the assistant, cut just before
`{content}`, which is where the model continues. What follows `{content}` in the template
(the default: a blank line) is the reply's stop string unless the request gives its own.

    "{ROLE}:\\n{content}\\n\\n"  ->  "USER:\\nHello\\n\\nASSISTANT:\\n"   (stop: "\\n\\n")
"""

from __future__ import annotations


def _fill(template: str, role: str, content: str) -> str:
    text = template.replace("{role}", role).replace("{Role}", role.capitalize()).replace("{ROLE}", role.upper())
    return text.replace("{content}", content)


def render(template: str, messages: list) -> str:
    """The prompt for `messages` (objects with `.role` and `.text()`), ending where the reply starts."""
    parts = [_fill(template, m.role, m.text()) for m in messages]
    before = template.split("{content}", 1)[0]
    parts.append(_fill(before, "assistant", ""))
    return "".join(parts)


def default_stop(template: str) -> list[str]:
    """What ends a reply by default: the template's text after `{content}` (when there is any)."""
    after = template.split("{content}", 1)[1]
    after = after.split("{", 1)[0] if "{" in after else after
    return [after] if after else []
