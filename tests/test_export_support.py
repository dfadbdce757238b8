"""Shared by the export tests (no tests here): one tiny trained run, the text to teacher-force,
the numpy engine's reference log-probabilities, and the README's sampling loops."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from conftest import TINY_TEXT, run_cli

TINY_MODEL = ["--layers", "2", "--units", "16", "--embedding-dim", "8", "--dropout", "0", "--seq-len", "10",
              "--batch-size", "4", "--epochs", "3", "--learning-rate", "0.02"]
FORCED = (TINY_TEXT * 8)[:500]  # the 500 characters every format is teacher-forced with
PRIME = "ROMEO:"
GREEDY_LENGTH = 200
_TRAINED: dict = {}


def ok(result):
    assert result.returncode == 0, result.stderr
    return result


def trained_root(tmp_path_factory) -> Path:
    """A checkpoints directory with the run "tiny" (2x16), trained once per session through the
    real CLI. Tests must not modify it (copy it first)."""
    if "root" not in _TRAINED:
        base = tmp_path_factory.mktemp("export-run")
        corpus = base / "tiny.txt"
        corpus.write_text(TINY_TEXT * 60, encoding="utf-8")
        env = {"TEXTGEN_CACHE_DIR": str(base / "cache"), "TEXTGEN_CHECKPOINTS": str(base / "checkpoints")}
        ok(run_cli("train", corpus, "--run", "tiny", *TINY_MODEL, "--json", env=env))
        _TRAINED["root"] = base / "checkpoints"
        _TRAINED["env"] = env
    return _TRAINED["root"]


def export(root: Path, *args) -> dict:
    """`textgen export --run tiny ARGS --json` in a subprocess; returns its JSON."""
    result = ok(run_cli("export", "--checkpoints", root, "--run", "tiny", "--json", *args,
                        env={"TEXTGEN_CACHE_DIR": _TRAINED.get("env", {}).get("TEXTGEN_CACHE_DIR", "")}))
    return json.loads(result.stdout)


def vocab_of(root: Path) -> list:
    return json.loads((root / "tiny" / "run.json").read_text(encoding="utf-8"))["vocab"]


def log_softmax(logits) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    z = z - z.max()
    return z - math.log(np.exp(z).sum())


def engine_log_probs(engine, vocab: list, text: str = FORCED) -> np.ndarray:
    """(len(text), vocab) log-softmax of textgen's numpy engine after each character of `text`."""
    state = engine.initial_state(1)
    rows = [log_softmax(engine.step(np.array([vocab.index(ch)]), state)) for ch in text]
    return np.stack(rows)


def run_engine(root: Path):
    """The run's own numpy engine, loaded as `textgen sample` loads it."""
    from textgen.generation.loading import load_run

    return load_run(root / "tiny", "latest", threads=1)[2]


def greedy_sample(root: Path, prime: str = PRIME, length: int = GREEDY_LENGTH) -> str:
    """What `textgen sample --temperature 0` writes after `prime` (the continuation only)."""
    result = ok(run_cli("sample", "--checkpoints", root, "--run", "tiny", "--temperature", "0", "--prime", prime,
                        "--length", length, "--seed", 1, "--json"))
    return json.loads(result.stdout)["samples"][0]["text"]


SNIPPETS = Path(__file__).resolve().parents[1] / "docs" / "export-loops"


def run_snippet(name: str, temperature: float = 0.0, length: int = GREEDY_LENGTH) -> str:
    """Execute the README's sampling loop for one format (docs/export-loops/<name>.py) in
    the current directory, where the test wrote the export under the README's file name;
    returns its `text` (the prime and what it generated)."""
    source = (SNIPPETS / f"{name}.py").read_text(encoding="utf-8")
    assert len(source.strip().splitlines()) <= 24, f"the {name} loop should stay short"
    settings = "TEMPERATURE, LENGTH = 0.8, 200"
    assert settings in source and "print(text)" in source
    source = source.replace(settings, f"TEMPERATURE, LENGTH = {temperature!r}, {length!r}")
    source = source.replace("print(text)", "pass")
    namespace = {"__name__": "snippet"}
    exec(compile(source, f"{name}.py", "exec"), namespace)
    return namespace["text"]
