"""The Python API (`import textgen`): the CLI's text, scores and errors through functions.

Sampling is compared with `textgen sample --json` run as a real subprocess on the same run and
seed, scoring with `textgen evaluate --json`; errors are the CLI's one-line messages.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import TINY_TEXT, ok, run_cli

import textgen
from textgen.errors import CheckpointError, ConfigError, CorpusError, TextgenError


@pytest.fixture(scope="module")
def model(tiny_run):
    return textgen.load("tiny", checkpoints=tiny_run.checkpoints)


def cli_samples(tiny_run, *args) -> list:
    result = ok(run_cli("sample", "--checkpoints", tiny_run.checkpoints, "--run", "tiny", "--json", *args))
    return [s["text"] for s in json.loads(result.stdout)["samples"]]


def test_import_textgen_imports_no_tensorflow_keras_or_numpy():
    code = ("import sys, textgen; textgen.Run; textgen.Model; textgen.load; textgen.TextgenError; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'numpy', 'jax')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert textgen.__version__ and set(textgen.__all__) >= {"train", "load", "runs", "Run", "Model", "TextgenError"}
    assert textgen.TextgenError is TextgenError


def test_loading_and_sampling_import_no_tensorflow(tiny_run):
    code = (f"import sys, textgen; m = textgen.load('tiny', checkpoints={str(tiny_run.checkpoints)!r}); "
            "m.sample(length=20, seed=1); m.score('ROMEO: But soft'); m.next_chars('ROM'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_sample_is_the_clis_text(tiny_run, model):
    assert model.sample("ROMEO:", length=120, temperature=0.9, seed=11) == \
        cli_samples(tiny_run, "--prime", "ROMEO:", "--length", "120", "--temperature", "0.9", "--seed", "11")[0]
    settings = ["--length", "80", "--temperature", "1.2", "--top-k", "5", "--top-p", "0.9", "--seed", "3",
                "--num-samples", "3", "--stop", "JULIET"]
    texts = model.sample(length=80, temperature=1.2, top_k=5, top_p=0.9, seed=3, n=3, stop="JULIET")
    assert isinstance(texts, list) and texts == cli_samples(tiny_run, *settings)
    assert all("JULIET" not in t for t in texts)


def test_stream_joins_to_sample_and_seed_repeats(model):
    pieces = list(model.stream("ROMEO:", length=150, temperature=1.0, seed=5))
    assert len(pieces) > 1 and "".join(pieces) == model.sample("ROMEO:", length=150, temperature=1.0, seed=5)
    assert model.sample(length=40, seed=9) == model.sample(length=40, seed=9)
    assert len(model.sample(length=40)) == 40  # no seed: a random one


@pytest.mark.slow
def test_score_is_the_clis_evaluate(tiny_run, model, tmp_path):
    text = TINY_TEXT * 3
    (tmp_path / "held.txt").write_text(text, encoding="utf-8")
    cli = json.loads(ok(run_cli("evaluate", tmp_path / "held.txt", "--checkpoints", tiny_run.checkpoints,
                                "--run", "tiny", "--json")).stdout)
    ours = model.score(text)
    assert ours["scored"] == cli["scored"] and ours["characters"] == cli["characters"]
    assert ours["nats_per_char"] == pytest.approx(cli["nats_per_char"], rel=1e-5)
    assert ours["bits_per_char"] == pytest.approx(cli["bits_per_char"], rel=1e-5)


def test_next_chars_is_a_sorted_distribution(model):
    dist = model.next_chars("ROMEO")
    assert set(dist) == set(model.vocab) and sum(dist.values()) == pytest.approx(1.0, abs=1e-6)
    probs = list(dist.values())
    assert probs == sorted(probs, reverse=True)
    assert list(model.next_chars("ROMEO", top=3)) == list(dist)[:3]
    greedy = model.sample("ROMEO", length=1, temperature=0)
    assert greedy == list(dist)[0]


def test_checkpoints_by_name_and_step(tiny_run):
    run = textgen.Run.open("tiny", checkpoints=tiny_run.checkpoints)
    assert run.latest == 250 and run.best is not None and run.checkpoints[-1] == "ckpt-00000250"
    assert textgen.load("tiny", checkpoints=tiny_run.checkpoints, checkpoint=250).step == 250
    assert textgen.load("tiny", checkpoints=tiny_run.checkpoints, checkpoint="best").step == run.best
    with pytest.raises(CheckpointError, match="has no checkpoint 'ckpt-00000007'"):
        textgen.load("tiny", checkpoints=tiny_run.checkpoints, checkpoint=7)
    with pytest.raises(CheckpointError, match="has no checkpoint 'newest'"):
        textgen.load("tiny", checkpoints=tiny_run.checkpoints, checkpoint="newest")
    with pytest.raises(ConfigError, match="checkpoint must be"):
        textgen.load("tiny", checkpoints=tiny_run.checkpoints, checkpoint=2.5)


def test_run_reads_its_directory(tiny_run):
    [run] = textgen.runs(tiny_run.checkpoints)
    assert run.name == "tiny" and run.directory == tiny_run.run
    assert run.config["model"]["units"] == 16 and run.corpus["characters"] == len(TINY_TEXT) * 60
    assert "patience" in run.chosen or run.chosen == {} or all("reason" in c for c in run.chosen.values())
    assert [r["step"] for r in run.history] == [50, 100, 150, 200, 250]
    assert run.model().step == 250
    assert textgen.runs(tiny_run.checkpoints / "nowhere") == []


def test_mistakes_are_the_clis_one_line_errors(tiny_run, model, tmp_path):
    cases = [
        (lambda: textgen.load("nope", checkpoints=tiny_run.checkpoints), CheckpointError, "Unknown run 'nope'"),
        (lambda: textgen.load(checkpoints=tmp_path / "empty"), CheckpointError, "No trained runs"),
        (lambda: model.sample(temperature=-1), ConfigError, "temperature must be a finite number >= 0"),
        (lambda: model.sample(temperature="hot"), ConfigError, "temperature must be a number"),
        (lambda: model.sample(top_p=1.5), ConfigError, "top_p must be in (0, 1]"),
        (lambda: model.sample(top_p="0.5"), ConfigError, "top_p must be in (0, 1]"),
        (lambda: model.sample(seed="1"), ConfigError, "seed must be an integer"),
        (lambda: model.next_chars("R", top=0), ConfigError, "top must be a positive integer"),
        (lambda: model.sample(length=0), ConfigError, "length must be a positive integer"),
        (lambda: model.sample(n=0), ConfigError, "n must be a positive integer"),
        (lambda: model.sample("ROMEO ☃"), CorpusError, "☃"),
        (lambda: model.score("R"), CorpusError, "at least 2 characters"),
        (lambda: textgen.train("x\ny", checkpoints=tmp_path, colour="red"), ConfigError,
         "Unknown training option 'colour'"),
        (lambda: textgen.train("x\ny", checkpoints=tmp_path, size="huge"), ConfigError, "size must be one of"),
        (lambda: textgen.train("no_such_file.txt", checkpoints=tmp_path), CorpusError, "Corpus file not found"),
        (lambda: textgen.train("nosuchcorpus", checkpoints=tmp_path), CorpusError, "No such file or named corpus"),
        (lambda: textgen.train("  ", checkpoints=tmp_path), CorpusError, "Corpus text is empty"),
        (lambda: textgen.train(3, checkpoints=tmp_path), ConfigError, "corpus must be a path"),
    ]
    for call, kind, fragment in cases:
        with pytest.raises(kind) as caught:
            call()
        assert fragment in str(caught.value) and "\n" not in str(caught.value), (fragment, caught.value)
    result = run_cli("sample", "--checkpoints", tiny_run.checkpoints, "--run", "tiny", "--temperature", "-1")
    with pytest.raises(ConfigError) as caught:
        model.sample(temperature=-1)
    assert f"Error: {caught.value}" == result.stderr.strip()


def test_cards_escape_run_text(tiny_run, tmp_path):
    copy = tiny_run.copy(tmp_path / "ckpts")
    info = json.loads((copy / "tiny" / "run.json").read_text(encoding="utf-8"))
    info["corpus"]["name"] = "<script>alert(1)</script>"
    (copy / "tiny" / "run.json").write_text(json.dumps(info), encoding="utf-8")
    run = textgen.Run.open("tiny", checkpoints=copy)
    page = run._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<svg" in page and "<polyline" in page and "val bpc" in page
    model = run.model()
    card = model._repr_html_()
    assert "<script>" not in card and "<pre" in card and "textgen.Model tiny" in card
    from textgen.api.cards import card as make_card

    shown = make_card("<b>x</b>", "<i>", {"size": "1x16", "parameters": 1, "corpus": "c", "step": 1,
                                          "val_bpc": None, "best_val_bpc": None}, sample="<script>x</script>")
    assert "<script>" not in shown and "&lt;b&gt;x&lt;/b&gt;" in shown and "&lt;script&gt;x" in shown


def test_card_curve_is_labelled_and_the_run_card_drops_the_stop_reasons_loss_in_nats():
    from textgen.api.cards import curve_svg, run_card

    svg = curve_svg([(10, 4.8), (30, float("nan")), (50, 4.414)])  # a non-finite point is left out
    assert "max 4.800" in svg and "step 10" in svg and ">50</text>" in svg and ">4.414</text>" in svg
    assert curve_svg([(10, 4.8)]) == ""
    figures = {"size": "2x16", "parameters": 10, "corpus": "c", "step": 50, "val_bpc": 4.4137,
               "best_val_bpc": 4.4137, "curve": [(10, 4.8), (50, 4.4137)]}
    shown = run_card("r", "time limit reached: 30 s (best 3.0594 at step 50)", figures)
    assert "time limit reached: 30 s</span>" in shown and "3.0594" not in shown and "4.4137 (best 4.4137)" in shown
    assert 'text-align:left' in shown  # Jupyter's right-aligned table cells lose to the card's own style


@pytest.mark.slow
def test_train_on_a_str_then_sample_and_resume(tmp_path):
    text = TINY_TEXT * 20
    run = textgen.train(text, run="api", checkpoints=tmp_path / "ckpts", layers=1, units=8, embedding_dim=4,
                        dropout=0.0, seq_len=10, batch_size=4, epochs=1, eval_every=40, progress=False)
    assert run.name == "api" and run.summary["stopped"] == "finished"
    assert run.corpus["name"].startswith("text-") and run.corpus["characters"] == len(text)
    assert run.latest == run.summary["step"] and [r["step"] for r in run.history][0] == 40
    assert run.model().sample(length=30, seed=1) == textgen.load("api", checkpoints=tmp_path / "ckpts").sample(
        length=30, seed=1)
    again = textgen.train(text, run="again", checkpoints=tmp_path / "ckpts", layers=1, units=8, embedding_dim=4,
                          dropout=0.0, seq_len=10, batch_size=4, epochs=1, progress=False, lines=True)
    assert again.corpus["source"] == run.corpus["source"]  # the same text: the same file
    assert again.corpus["lines"] is True and "lines" not in run.corpus
    with pytest.raises(CheckpointError, match="already exists"):
        textgen.train(text, run="api", checkpoints=tmp_path / "ckpts", progress=False)
    resumed = run.resume(epochs=2, progress=False)
    assert resumed.latest == 2 * run.summary["step"] and resumed.summary["stopped"] == "finished"


def test_export_and_history_frame(model, tiny_run, tmp_path):
    result = model.export("html", tmp_path / "tiny.html")
    assert result["checkpoint"] == model.checkpoint and (tmp_path / "tiny.html").stat().st_size == result["bytes"]
    with pytest.raises(ConfigError, match="already exists"):
        model.export("html", tmp_path / "tiny.html")
    with pytest.raises(ConfigError, match="--format must be one of"):
        model.export("pdf", tmp_path / "tiny.pdf")
    run = textgen.Run.open("tiny", checkpoints=tiny_run.checkpoints)
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(textgen.TextgenError, match="needs pandas"):
            run.history_frame()
    else:
        assert list(run.history_frame()["step"]) == [r["step"] for r in run.history]


INTERRUPTED = """
import json, sys, textgen
run = textgen.train(sys.argv[1], run="stopped", checkpoints=sys.argv[2], layers=1, units=8, embedding_dim=4,
                    dropout=0.0, seq_len=10, batch_size=4, epochs=10000, progress=False)
print(json.dumps({"stopped": run.summary["stopped"], "step": run.summary["step"], "latest": run.latest}))
"""


@pytest.mark.slow
def test_ctrl_c_stops_training_with_a_checkpoint(tiny_corpus, tmp_path):
    import os
    import signal
    import time

    process = subprocess.Popen([sys.executable, "-c", INTERRUPTED, str(tiny_corpus), str(tmp_path / "ckpts")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TEXTGEN_CACHE_DIR": str(tmp_path / "cache")})
    run_file = tmp_path / "ckpts" / "stopped" / "run.json"
    deadline = time.time() + 120
    while not run_file.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
    time.sleep(3)  # into the training loop
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    result = json.loads(stdout)
    assert result["stopped"] == "SIGINT" and result["step"] > 0 and result["latest"] == result["step"]
    assert stderr == "" or "Traceback" not in stderr


def test_shaded_sample_is_the_sample_with_its_logprobs(model):
    for settings in ({"temperature": 1.0}, {"temperature": 0.8, "top_k": 4}, {"temperature": 1.0, "stop": "\n\n"}):
        shaded = model.shaded("ROMEO:", length=90, seed=4, **settings)
        assert shaded.text == model.sample("ROMEO:", length=90, seed=4, **settings), settings
        assert len(shaded.logprobs) == len(shaded.text) and all(lp <= 0 for lp in shaded.logprobs)
    page = shaded._repr_html_()
    assert page.count("<span") == len(shaded.text) and page.startswith('<pre class="textgen-shaded"')
    from textgen.api.cards import ShadedText

    assert "&lt;script&gt;" in ShadedText("<script>", ["<", "b"], [-0.1, -5.0])._repr_html_()
    assert "<script>" not in ShadedText("<script>", ["<", "b"], [-0.1, -5.0])._repr_html_()
    with pytest.raises(ConfigError, match="top_k must be"):
        model.shaded(top_k=0)


def test_textgen_train_takes_every_option_of_the_cli():
    import inspect

    from textgen.api.training import train
    from textgen.cli.train import train as cli_train
    from textgen.options import OPTION_NAMES

    own = {"corpus", "run", "checkpoints_dir", "resume", "use_previous", "encoding", "lines", "as_json", "time_limit",
           "glob", "jsonl", "text_field", "label_field", "csv", "text_column", "label_column"}
    cli = set(inspect.signature(cli_train).parameters)
    api = set(inspect.signature(train).parameters) - {"options", "progress", "checkpoints"}
    assert cli - own <= set(OPTION_NAMES), cli - own - set(OPTION_NAMES)
    assert own - {"as_json", "checkpoints_dir"} <= api
