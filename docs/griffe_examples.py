"""A griffe extension for the API reference (mkdocs.yml): textgen's docstrings title their examples
`Example:`, which the Google style reads as an admonition of Markdown (so `>>>` lines would become
quotes and `["units"]` a link); this renames that section to `Examples:`, which it renders as code."""

from __future__ import annotations

import re
from typing import Any

import griffe

EXAMPLE_TITLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = EXAMPLE_TITLE.sub(r"\1Examples:", obj.docstring.value)
