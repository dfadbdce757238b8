"""The README and the pages in docs/ agree with what they describe: the README's test command is
what .ci/run runs, every relative link (and its #anchor) of the README and the pages reaches a
file and a heading as a code host shows them, every page is in the site's navigation, and the
README stays a short front door. (`mkdocs build --strict`, run by .ci/run, checks the site.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The Markdown without its fenced code blocks (whose brackets are code, not links)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def anchors(page: Path) -> set[str]:
    """The #anchors of a page's headings as GitHub makes them (and mkdocs.yml's slugify too):
    lower case, punctuation other than hyphens dropped, each space a hyphen."""
    found = set()
    for line in prose(page.read_text(encoding="utf-8")).splitlines():
        if match := re.match(r"#{1,6} (.+)", line):
            title = match.group(1).replace("`", "").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def test_the_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = next(line for line in readme.splitlines() if line.startswith("python3 -m venv") and "pytest" in line)
    steps = [step.strip() for step in command.split("&&")]
    assert steps[:2] == ["python3 -m venv .venv", ". .venv/bin/activate"], steps
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    after_activate = ci[ci.index(". .venv/bin/activate") + 1:]
    assert [line for line in after_activate if line and not line.startswith("#")] == steps[2:]
    for page in PAGES:  # where a page repeats the command (Contributing), it is the same one
        repeated = [line for line in page.read_text(encoding="utf-8").splitlines()
                    if line.startswith("python3 -m venv") and "pytest" in line]
        assert all(line == command for line in repeated), f"{page.name} gives another test command"


@pytest.mark.parametrize("source", [ROOT / "README.md", *PAGES], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_reaches_its_file_and_heading(source):
    broken = []
    for target in LINK.findall(prose(source.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        file = (source.parent / path).resolve() if path else source
        if not file.exists():
            broken.append(f"{target} (no file {file.relative_to(ROOT)})")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no heading #{anchor} in {file.relative_to(ROOT)})")
    assert not broken, f"{source.relative_to(ROOT)}: broken links: {broken}"


def test_every_page_is_in_the_site_navigation():
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = config[config.index("\nnav:"):config.index("\ntheme:")]
    missing = [page.name for page in PAGES if f": {page.name}" not in nav]
    assert not missing, f"pages missing from mkdocs.yml's nav: {missing}"


def test_the_readme_stays_short_and_points_at_every_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250, "the README is the front door; the rest belongs in docs/"
    unlinked = [page.name for page in PAGES if page.name != "index.md" and f"(docs/{page.name}" not in readme]
    assert not unlinked, f"pages the README does not link: {unlinked}"


def test_the_demos_page_prints_what_textgen_perceptron_prints():
    """The output shown on docs/demos.md is the command's own (whitespace aside: the terminal
    wraps the long error line where the page does not)."""
    from helpers import invoke

    page = (DOCS / "demos.md").read_text(encoding="utf-8")
    shown = page[page.index("```\nRandom starting weights"):].split("\n```", 1)[0].removeprefix("```\n")
    result = invoke("perceptron")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert " ".join(result.stdout.split()) == " ".join(shown.split())


def test_the_readme_python_is_the_pages_python():
    """The README's Python (the API's quick start, the openai client) is copied from the pages, so
    the two cannot drift apart."""
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(encoding="utf-8"), re.M | re.S)
    pages = "\n".join(page.read_text(encoding="utf-8") for page in PAGES)
    assert blocks, "the README shows no Python"
    for block in blocks:
        assert f"```python\n{block}```" in pages, f"the README's Python is on no page:\n{block}"
