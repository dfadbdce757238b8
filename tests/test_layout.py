"""The house shows its design: the module map (docs/contributing.md) names every module of the package,
no module passes 400 lines, and no two modules share a name (front-end command modules in
cli/ aside, which are named after their commands)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "textgen"


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def module_map() -> str:
    text = (ROOT / "docs" / "contributing.md").read_text(encoding="utf-8")
    lines = text[text.index("| module | its one job |"):].splitlines()
    return "\n".join(line for line in lines[: next((i for i, x in enumerate(lines) if not x.startswith("|")), None)])


def test_every_module_is_in_the_module_map():
    table = module_map()
    named = set(re.findall(r"`([\w./]+)`", table))
    unnamed = []
    for path in modules():
        relative = path.relative_to(ROOT).as_posix()
        if path.name in ("__init__.py", "__main__.py") and path.parent == PACKAGE:
            continue
        package = path.parent.relative_to(ROOT).as_posix() + "/"
        in_row = relative in named or (path.name in named and (package in named or package in table))
        if not in_row:
            unnamed.append(relative)
    assert not unnamed, f"modules missing from the module map in docs/contributing.md: {unnamed}"
    for name in named:
        if name.startswith("textgen/"):
            assert (ROOT / name).exists(), f"the module map names {name}, which does not exist"


def test_no_module_passes_400_lines():
    long = {p.relative_to(ROOT).as_posix(): n for p in modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"


def test_no_two_modules_share_a_name():
    seen: dict = {}
    for path in modules():
        if path.name in ("__init__.py", "__main__.py") or path.parent.name == "cli":
            continue
        seen.setdefault(path.name, []).append(path.relative_to(ROOT).as_posix())
    shared = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not shared, f"modules of one name: {shared}"


def test_a_missing_system_part_fails_under_ci_and_skips_elsewhere(monkeypatch):
    """`helpers.missing` is the one place a test may skip: on a laptop without the part; under
    CI=true the same call must fail the test instead."""
    import pytest
    from helpers import missing

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required under CI"):
        missing("chromium", "apt-get install chromium")
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        missing("chromium", "apt-get install chromium")
