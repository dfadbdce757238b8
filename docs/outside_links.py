"""A mkdocs hook (mkdocs.yml `hooks`): a page's link to a file outside docs/, such as
`[`benchmarks/README.md`](../benchmarks/README.md)`, works where the repository is read as files
(a code host) but has no page on the site, where `mkdocs build --strict` would call it broken.
On the site such a link shows its text alone; every other link is checked as usual."""

from __future__ import annotations

import re

OUTSIDE = re.compile(r"\[([^\]]+)\]\((?:\.\./)+[^)#\s]+(?:#[^)\s]*)?\)")


def on_page_markdown(markdown: str, **kwargs) -> str:
    return OUTSIDE.sub(r"\1", markdown)
