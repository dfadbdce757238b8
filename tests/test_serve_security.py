"""The server's edges against a real `textgen serve`: Host header, key before body, slow and many
connections, forwarded headers, the access log, the docs and the key file.

Slow clients are real sockets that trickle bytes; the servers run with timeouts of 2 s
(`--header-timeout`, `--body-timeout`) so that the tests are quick.
"""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from helpers import Server, assert_one_line_error, invoke, wait_until

pytestmark = pytest.mark.slow
KEY = "file-key-123"
SHORT = ("--header-timeout", "2", "--body-timeout", "2")


@pytest.fixture(scope="module")
def open_server(tiny_run):
    s = Server(tiny_run.checkpoints, "--allowed-host", "my.example", "--max-length", "1000000", *SHORT)
    yield s
    assert s.stop() == 0, s.log()


@pytest.fixture(scope="module")
def keyed(tiny_run, tmp_path_factory):
    key_file = tmp_path_factory.mktemp("key") / "key.txt"
    key_file.write_text(KEY + "\n", encoding="utf-8")
    s = Server(tiny_run.checkpoints, "--api-key-file", key_file, "--forwarded-allow-ips", "127.0.0.1", *SHORT)
    yield s
    assert s.stop() == 0, s.log()


def _connect(server, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def _read_all(sock) -> bytes:
    """Everything until the server closes the connection (or the socket's timeout)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            return data
        if not chunk:
            return data
        data += chunk


# ----------------------------------------------------------------------------- Host header (DNS rebinding)


def test_a_foreign_host_header_is_400_and_loopback_names_pass(open_server):
    url = open_server.url + "/v1/models"
    for host in ("evil.example", "evil.example:80", "127.0.0.1.evil.example", "localhost.evil.example"):
        answer = httpx.get(url, headers={"Host": host}, timeout=10)
        assert answer.status_code == 400, (host, answer.text)
        assert answer.json()["error"]["code"] == "invalid_host" and "--allowed-host" in answer.json()["error"]["message"]
    for host in (f"localhost:{open_server.port}", "127.0.0.1", f"[::1]:{open_server.port}", "MY.example", "my.example."):
        assert httpx.get(url, headers={"Host": host}, timeout=10).status_code == 200, host
    # Even /health and the page: a rebinding page learns nothing.
    assert httpx.get(open_server.url + "/health", headers={"Host": "evil.example"}, timeout=10).status_code == 400


# ----------------------------------------------------------------------------- the key before the body


def test_the_key_is_checked_before_any_body_is_read(keyed):
    sock = _connect(keyed, timeout=5)
    started = time.monotonic()
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 900000\r\n\r\n{")  # 1 byte of the 900,000 announced
    head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 401"), head
    assert time.monotonic() - started < 2  # answered from the headers, not after a body timeout
    sock.close()
    headers = {"Authorization": f"Bearer {KEY}"}
    answer = httpx.post(keyed.url + "/v1/completions", headers=headers, timeout=30,
                        json={"model": "tiny", "prompt": "O", "max_tokens": 5})
    assert answer.status_code == 200 and len(answer.json()["choices"][0]["text"]) == 5


def test_docs_need_no_cdn_and_their_data_needs_the_key(keyed):
    assert httpx.get(keyed.url + "/openapi.json", timeout=10).status_code == 401
    spec = httpx.get(keyed.url + "/openapi.json", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()
    assert "/v1/completions" in spec["paths"]
    assert httpx.get(keyed.url + "/redoc", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).status_code == 404
    page = httpx.get(keyed.url + "/docs", timeout=10)
    script = httpx.get(keyed.url + "/static/docs.js", timeout=10)
    assert page.status_code == 200 and script.status_code == 200
    for text in (page.text, script.text):
        assert "://" not in text  # no other origin named anywhere
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"


# ----------------------------------------------------------------------------- slow and many connections


def _trickle(server, data: bytes, every: float):
    """Send `data` one byte every `every` seconds until the server answers or closes:
    (what it sent back, bytes sent, seconds)."""
    sock = _connect(server, timeout=every)
    started, sent, answer = time.monotonic(), 0, b""
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            break
        sent += 1
        try:
            answer = sock.recv(65536)
            break  # an answer, or b"" for a close
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
    sock.close()
    return answer, sent, time.monotonic() - started


def test_headers_sent_a_byte_at_a_time_are_cut_off(open_server):
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: " + b"s" * 60 + b"\r\n\r\n"
    answer, sent, seconds = _trickle(open_server, request, every=0.25)  # would take 21 s to finish
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert sent < len(request) and 1.5 <= seconds <= 6, (sent, seconds)


def test_a_silent_connection_and_a_slow_body_are_closed(open_server, keyed):
    silent = _connect(open_server)
    started = time.monotonic()
    assert _read_all(silent).startswith(b"HTTP/1.1 408")
    assert 1.5 <= time.monotonic() - started <= 6
    slow_body = _connect(keyed)
    slow_body.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + KEY.encode() +
                      b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\"")
    started = time.monotonic()
    assert _read_all(slow_body) == b""  # closed: the route saw the client gone, nothing was answered
    assert 1.5 <= time.monotonic() - started <= 6


def test_a_long_response_outlives_the_request_timeouts(open_server):
    body = {"model": "tiny", "prompt": "O", "max_tokens": 1_000_000, "stream": True}
    with httpx.stream("POST", open_server.url + "/v1/completions", json=body, timeout=30) as answer:
        started, received = time.monotonic(), 0
        for chunk in answer.iter_bytes():
            received += len(chunk)
            if time.monotonic() - started > 3:  # past both 2 s timeouts, still streaming
                break
            time.sleep(0.01)
    assert time.monotonic() - started > 3 and received > 1000


def test_connections_beyond_the_cap_get_503_at_once(tiny_run):
    s = Server(tiny_run.checkpoints, "--max-connections", "3", "--quiet")
    held = []
    try:
        wait_until(lambda: httpx.get(s.url + "/health", timeout=5).status_code == 200, timeout=10)

        def hold():  # a connection that a request on it proves open (a slot frees once the last client's closes)
            sock = _connect(s)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            if sock.recv(65536).startswith(b"HTTP/1.1 200"):
                return sock
            sock.close()
            return None

        held = [wait_until(hold, timeout=10, what="a free connection") for _ in range(3)]
        extra = _connect(s, timeout=5)
        answer = _read_all(extra)
        assert answer.startswith(b"HTTP/1.1 503") and b"too_many_connections" in answer, answer
        held.pop().close()
        wait_until(lambda: httpx.get(s.url + "/health", timeout=5).status_code == 200, timeout=10,
                   what="a connection once one is closed")
    finally:
        for sock in held:
            sock.close()
        assert s.stop() == 0, s.log()


# ----------------------------------------------------------------------------- forwarded headers and the log


def test_forwarded_for_is_believed_only_from_the_named_proxies(open_server, keyed):
    forwarded = {"X-Forwarded-For": "203.0.113.9"}
    assert httpx.get(open_server.url + "/health?plain", headers=forwarded, timeout=10).status_code == 200
    line = open_server.wait_log('"GET /health"')
    assert "203.0.113.9" not in line and '127.0.0.1 "GET /health"' in line
    assert httpx.get(keyed.url + "/health", headers=forwarded, timeout=10).status_code == 200
    assert '203.0.113.9 "GET /health"' in keyed.wait_log('203.0.113.9 "GET /health"')


def test_access_log_fields_escape_quotes_and_newlines(open_server):
    forged = '/x"y\n127.0.0.1 "GET /forged" 200 1.0ms'
    httpx.get(open_server.url + forged.replace('"', "%22").replace("\n", "%0A").replace(" ", "%20"), timeout=10)
    log = open_server.wait_log("/forged")
    assert not any(line.startswith('127.0.0.1 "GET /forged"') for line in log.splitlines())
    assert '127.0.0.1 "GET /x\\"y\\n127.0.0.1 \\"GET /forged\\" 200 1.0ms" 404' in log


# ----------------------------------------------------------------------------- the key from a file


def test_key_file_errors_are_one_line(tmp_path):
    assert_one_line_error(invoke("serve", "--api-key-file", tmp_path / "absent.txt"), "api_key_file")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    assert_one_line_error(invoke("serve", "--api-key-file", empty), "empty")
    both = invoke("serve", "--api-key", "x", "--api-key-file", empty)
    assert_one_line_error(both, "one way")
    assert_one_line_error(invoke("serve", "--allowed-host", "evil.example:80"), "--allowed-host")
    assert_one_line_error(invoke("serve", "--header-timeout", "0"), "--header-timeout")
