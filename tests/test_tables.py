"""Tables and labels (`textgen train --jsonl FILE --text-field F --label-field L`, `--csv FILE
--text-column C --label-column L`, `textgen sample --label X`) on small JSONL and CSV files
written here: one document per record, primed by its label."""

from __future__ import annotations

import csv
import json
import random
import re

import pytest
from helpers import TINY_SIZE, assert_one_line_error, invoke

from textgen import tables
from textgen.documents import BOUNDARY
from textgen.errors import ConfigError
from textgen.tables import LABEL_END, Table

REVIEWS = {"good": ["I loved this film.", "A wonderful story.", "Great acting, happy ending."],
           "bad": ["Boring and too long.", "The worst plot.", "I fell asleep."]}


def write_jsonl(path, copies=4, extra=()):
    """`copies` rounds of the six reviews as JSON Lines ({"id", "review", "stars"}), then `extra` lines."""
    lines = [json.dumps({"id": i, "review": text, "stars": label})
             for i in range(copies) for label, texts in REVIEWS.items() for text in texts]
    path.write_text("\n".join([*lines, *extra]) + "\n", encoding="utf-8")
    return path


def decoded(prepared) -> str:
    return "".join(prepared.vocab[i] for i in prepared.ids())


def test_each_record_is_a_document_after_its_label(tmp_path):
    extra = ['{"review": "has \\u001e inside", "stars": "good"}', '{"review": "", "stars": "bad"}', "",
             '{"review": "Ещё раз!", "stars": 5}']
    prepared = tables.prepare_table(Table(write_jsonl(tmp_path / "r.jsonl", copies=1, extra=extra), "jsonl",
                                          "review", "stars"))
    expected = [f"{label}{LABEL_END}{text}" for label, texts in REVIEWS.items() for text in texts] + \
        [f"5{LABEL_END}Ещё раз!"]
    assert decoded(prepared) == BOUNDARY + "".join(doc + BOUNDARY for doc in expected)
    record = prepared.documents
    assert record["count"] == 7 and record["labels"] == {"bad": 3, "good": 3, "5": 1} and record["more_labels"] == 0
    assert record["format"] == "jsonl" and record["text_field"] == "review" and record["label_field"] == "stars"
    assert record["skipped"] == {"control characters": 1, "empty": 1}
    unlabelled = tables.prepare_table(Table(tmp_path / "r.jsonl", "jsonl", "review"))
    assert decoded(unlabelled).split(BOUNDARY)[1:3] == REVIEWS["good"][:2] and "labels" not in unlabelled.documents


def test_a_csv_is_streamed_row_by_row(tmp_path):
    path = tmp_path / "r.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["stars", "review"])
        writer.writerow(["good", "Two lines,\r\nquoted."])
        writer.writerow(["bad", "x" * 200_000])  # longer than the csv module's default field limit
    prepared = tables.prepare_table(Table(path, "csv", "review", "stars"), chunk_bytes=1000)
    assert decoded(prepared) == (f"{BOUNDARY}good{LABEL_END}Two lines,\nquoted.{BOUNDARY}"
                                 f"bad{LABEL_END}{'x' * 200_000}{BOUNDARY}")
    assert prepared.documents["labels"] == {"bad": 1, "good": 1}


def test_the_cache_follows_the_file_and_the_fields(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl")
    first = tables.prepare_table(Table(path, "jsonl", "review", "stars"))
    assert tables.prepare_table(Table(path, "jsonl", "review", "stars")).directory == first.directory
    assert tables.prepare_table(Table(path, "jsonl", "review")).directory != first.directory
    write_jsonl(path, copies=5)
    assert tables.prepare_table(Table(path, "jsonl", "review", "stars")).sha256 != first.sha256


@pytest.mark.parametrize(("args", "fragments"), [
    (["--jsonl", "{jsonl}", "--text-field", "text"], ["Record 1 of", "has no field 'text'", "'id', 'review', 'stars'"]),
    (["--jsonl", "{jsonl}", "--text-field", "review", "--label-field", "genre"], ["Record 1 of", "no field 'genre'"]),
    (["--jsonl", "{late}", "--text-field", "review"], ["Record 25 of", "no field 'review'"]),
    (["--jsonl", "{broken}", "--text-field", "review"], ["Record 25 of", "is not valid JSON"]),
    (["--jsonl", "{jsonl}"], ["--jsonl needs --text-field"]),
    (["--text-field", "review"], ["--text-field names a field of --jsonl FILE"]),
    (["--csv", "{csv}", "--label-field", "x"], ["--label-field names a field of --jsonl FILE"]),
    (["--jsonl", "{jsonl}", "--csv", "{csv}", "--text-field", "review"], ["Give --jsonl or --csv, not both"]),
    (["{jsonl}", "--jsonl", "{jsonl}", "--text-field", "review"], ["--jsonl FILE is the corpus", "a corpus path"]),
    (["--jsonl", "{missing}", "--text-field", "review"], ["--jsonl file not found", "missing.jsonl"]),
    (["--csv", "{csv}", "--text-column", "body"], ["has no column 'body'", "Received: columns 'stars', 'review'"]),
    (["--csv", "{short}", "--text-column", "review"], ["Record 2 of", "no column 'review'"]),
    (["--jsonl", "{empty}", "--text-field", "review"], ["No records with text in", "1 empty"]),
])
@pytest.mark.parametrize("command", ["train", "prepare"])
def test_bad_tables_are_one_line(tmp_path, args, fragments, command):
    files = {"jsonl": write_jsonl(tmp_path / "r.jsonl"), "missing": tmp_path / "missing.jsonl",
             "late": write_jsonl(tmp_path / "late.jsonl", extra=['{"text": "no review"}']),
             "broken": write_jsonl(tmp_path / "broken.jsonl", extra=['{"review": ']),
             "empty": tmp_path / "empty.jsonl", "csv": tmp_path / "r.csv", "short": tmp_path / "short.csv"}
    files["empty"].write_text('{"review": ""}\n', encoding="utf-8")
    files["csv"].write_text("stars,review\ngood,Fine.\n", encoding="utf-8")
    files["short"].write_text("stars,review\ngood,Fine.\nbad\n", encoding="utf-8")
    args = [arg.format(**files) for arg in args]
    assert_one_line_error(invoke(command, *args, *([*TINY_SIZE, "--epochs", 1] if command == "train" else [])),
                          *fragments)


def test_a_label_is_fed_before_the_prime_and_not_written():
    from helpers import random_weights

    from textgen.generation.engine import LSTMEngine
    from textgen.generation.session import SamplingSession, StreamSpec

    chars = [BOUNDARY, LABEL_END, "a", "b", "c", "d", "e"]
    engine = LSTMEngine(random_weights(units=16, scale=1.0), 2)

    def text(prime, lead=()):
        session = SamplingSession(engine, chars, start_id=0)
        session.lead = lead
        stream = session.add(StreamSpec(prime=prime, length=40, temperature=1.0, seed=3, index=1))
        while stream.finish_reason is None:
            session.step()
        return stream.text

    labelled = text("b", lead=tuple(tables.label_lead(
        {"corpus": {"documents": {"labels": {"a": 1}}}}, chars, "a")))
    assert labelled == text(f"{BOUNDARY}a{LABEL_END}b") != text("b")


@pytest.mark.slow
def test_train_on_labelled_records_and_sample_a_label(tmp_path):
    # a label that decides the text: the model must read the label it is primed with
    rng = random.Random(0)
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps({"answer": "yes!" if label == "good" else "no.", "mood": label}) + "\n"
                            for label in (rng.choice(["good", "bad"]) for _ in range(240))), encoding="utf-8")
    options = ["--checkpoints", tmp_path / "ck", "--run", "answers"]
    result = invoke("train", "--jsonl", path, "--text-field", "answer", "--label-field", "mood", *TINY_SIZE,
                    "--dropout", 0, "--seq-len", 16, "--batch-size", 8, "--epochs", 15, "--learning-rate", 0.02,
                    *options)
    assert result.exit_code == 0, result.output
    assert re.match(r"read 240 records, [\d,]+ bytes, [\d,]+ characters with the boundaries; "
                    r"labels (bad|good) \(\d+\), (bad|good) \(\d+\)\n", result.stderr), result.stderr
    assert "validation: 24 whole documents, " in result.stderr
    corpus = json.loads((tmp_path / "ck" / "answers" / "run.json").read_text(encoding="utf-8"))["corpus"]
    assert set(corpus["documents"]["labels"]) == {"bad", "good"} and corpus["validation"] == "whole documents"
    for label, answer in (("good", "yes!"), ("bad", "no.")):
        sampled = invoke("sample", "--checkpoints", tmp_path / "ck", "--label", label, "--length", 4,
                         "--temperature", 0, "--stop", BOUNDARY, "--json")
        assert sampled.exit_code == 0, sampled.output
        data = json.loads(sampled.stdout)
        assert data["label"] == label and data["samples"][0]["text"] == answer  # the label is read, not printed
    import textgen

    model = textgen.load("answers", checkpoints=tmp_path / "ck")
    assert model.sample(label="good", length=4, temperature=0, stop=BOUNDARY) == "yes!"  # the API, as the CLI
    assert model.sample(label="bad", length=12, temperature=0.5, seed=2, n=2) == [
        s["text"] for s in json.loads(invoke("sample", "--checkpoints", tmp_path / "ck", "--label", "bad", "--length",
                                             12, "--seed", 2, "--num-samples", 2, "--temperature", 0.5,
                                             "--json").stdout)["samples"]]
    with pytest.raises(textgen.TextgenError, match="Unknown label: run 'answers' knows"):
        model.sample(label="meh")
    assert_one_line_error(invoke("sample", "--checkpoints", tmp_path / "ck", "--label", "meh"),
                          "Unknown label: run 'answers' knows", "Received: label='meh'")
    assert_one_line_error(invoke("sample", "--checkpoints", tmp_path / "ck", "--label", "good", "--lines", 2),
                          "--label writes records, --lines lines")


def test_a_run_without_labels_takes_no_label():
    with pytest.raises(Exception, match="--label needs a run trained with --label-field"):
        tables.label_lead({"name": "plain", "corpus": {"source": "x.txt"}}, list("abc"), "good")
    assert tables.label_lead({}, list("abc"), None) == []


def test_the_api_trains_on_a_table_and_resumes_it(tmp_path):
    import textgen

    path = write_jsonl(tmp_path / "reviews.jsonl", copies=2)
    run = textgen.train(jsonl=path, text_field="review", label_field="stars", run="api", checkpoints=tmp_path / "ck",
                        layers=1, units=16, embedding_dim=8, dropout=0, seq_len=16, batch_size=4, epochs=1,
                        progress=False)
    assert run.corpus["documents"]["labels"] == {"bad": 6, "good": 6} and run.corpus["validation"] == "whole documents"
    assert run.resume(epochs=2, progress=False).corpus["documents"]["count"] == 12  # the same file, read again
    with pytest.raises(textgen.TextgenError, match="--jsonl needs --text-field"):
        textgen.train(jsonl=path, progress=False)


@pytest.mark.parametrize("documents, fragment", [
    ({"labels": "good"}, "must map each label"),            # a string, where `in` would match substrings
    ({"labels": ["good"]}, "must map each label"),
    ({"labels": {"g\u00e9od": 1}}, "not in its vocabulary"),  # a label its vocabulary cannot write
    ("not an object", "has no labels"),
])
def test_a_crafted_label_record_is_one_clear_error(documents, fragment):
    info = {"name": "crafted", "corpus": {"documents": documents}}
    label = "g\u00e9od" if "vocabulary" in fragment else "good"
    with pytest.raises(ConfigError, match=fragment):
        tables.label_lead(info, [BOUNDARY, LABEL_END, *"godb"], label)
