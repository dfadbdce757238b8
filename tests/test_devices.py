"""cuDNN eligibility for every model the CLI can build, precision and XLA settings, `textgen info`."""

from __future__ import annotations

import itertools
import json
import platform

import keras
import pytest
import typer
from typer.testing import CliRunner

from textgen import checkpoints, devices
from textgen.cli import OneLineErrors
from textgen.cli.info import register
from textgen.config import PRESETS, ModelConfig
from textgen.errors import ConfigError
from textgen.training.model import build_model

VOCAB = 65
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
COMPUTE = {"float32": "float32", "mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}


def keras_accepts(layer) -> bool:
    """Keras' own argument test before it calls cuDNN (TensorFlow backend), plus inner_loop's."""
    from keras.src.backend.tensorflow.rnn import _do_lstm_arguments_support_cudnn

    return (layer.use_cudnn in ("auto", True) and not layer.recurrent_dropout
            and _do_lstm_arguments_support_cudnn(layer.activation, layer.recurrent_activation,
                                                 layer.unroll, layer.use_bias))


def lstms(model):
    return [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.LSTM)]


def cli_combinations():
    """Every preset, alone and with --layers 1 / 3, with --dropout 0 / 0.3, in every precision."""
    for size, options in PRESETS.items():
        for num_layers in sorted({options["num_layers"], 1, 3}):
            for dropout, precision in itertools.product((0.0, 0.3), PRECISIONS):
                yield pytest.param(dict(options, num_layers=num_layers, dropout=dropout), precision,
                                   id=f"{size}-layers{num_layers}-dropout{dropout}-{precision}")


@pytest.mark.slow
@pytest.mark.parametrize("options,precision", list(cli_combinations()))
def test_every_cli_model_is_cudnn_eligible(options, precision):
    with devices.precision.precision_scope(precision):
        model = build_model(ModelConfig(vocab_size=VOCAB, **options), batch_size=64, seq_len=100)
    report = devices.cudnn.cudnn_report(model)
    assert [r["layer"] for r in report] == [f"lstm_{i}/lstm" for i in range(options["num_layers"])]
    assert all(r["eligible"] and r["reasons"] == [] for r in report), report
    assert all(keras_accepts(layer) for layer in lstms(model))
    assert devices.cudnn.cudnn_warnings(report) == []
    # Dropout is a layer of its own between LSTMs, never an LSTM argument.
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert len(dropouts) == (options["num_layers"] if options["dropout"] else 0)
    assert all(layer.dropout == 0 and layer.recurrent_dropout == 0 for layer in lstms(model))
    # Mixed precision computes the LSTMs in float16 / bfloat16 but keeps logits (so softmax and loss)
    # and every variable float32.
    assert model.output.dtype == "float32"
    assert all(layer.compute_dtype == COMPUTE[precision] for layer in lstms(model))
    assert all(variable.dtype == "float32" for variable in model.trainable_variables)
    assert keras.mixed_precision.global_policy().name == "float32", "precision_scope must restore"


def lstm_model(mask_zero=False, **lstm_options):
    inputs = keras.Input(batch_shape=(2, 5), dtype="int32")
    x = keras.layers.Embedding(VOCAB, 4, mask_zero=mask_zero, name="embedding")(inputs)
    x = keras.layers.LSTM(3, return_sequences=True, name="lstm", **lstm_options)(x)
    return keras.Model(inputs, keras.layers.Dense(VOCAB)(x))


@pytest.mark.parametrize("options,expected", [
    (dict(recurrent_dropout=0.2), "recurrent_dropout=0.2"),
    (dict(activation="relu"), "activation=relu"),
    (dict(recurrent_activation="hard_sigmoid"), "recurrent_activation=hard_sigmoid"),
    (dict(activation=lambda x: keras.ops.tanh(x)), "activation=<lambda>"),  # tanh's values, not tanh
    (dict(unroll=True), "unroll=True"),
    (dict(use_bias=False), "use_bias=False"),
    (dict(use_cudnn=False), "use_cudnn=False"),
    (dict(mask_zero=True), "mask from embedding"),
])
def test_checker_catches_each_breaker(options, expected):
    model = lstm_model(**options)
    [report] = devices.cudnn.cudnn_report(model)
    assert not report["eligible"]
    assert len(report["reasons"]) == 1 and expected in report["reasons"][0], report["reasons"]
    if "mask_zero" not in options:
        assert not keras_accepts(lstms(model)[0]), "the checker must agree with Keras"
    [warning] = devices.cudnn.cudnn_warnings([report])
    assert "lstm" in warning and expected in warning


def test_checker_passes_a_plain_lstm_and_finds_nested_ones():
    [report] = devices.cudnn.cudnn_report(lstm_model())
    assert report == {"layer": "lstm", "units": 3, "eligible": True, "reasons": []}


def fake_devices(monkeypatch, gpus: int):
    cpu = {"type": "CPU", "id": "CPU:0", "name": "cpu", "cores": 2, "memory_bytes": None}
    gpu = {"type": "GPU", "id": "GPU:0", "name": "gpu", "memory_bytes": None, "compute_capability": "9.0"}
    monkeypatch.setattr(devices, "list_devices", lambda: [cpu] + [gpu] * gpus)


def test_mixed_precision_refused_without_gpu(monkeypatch):
    fake_devices(monkeypatch, 0)
    with pytest.raises(ConfigError) as caught:
        devices.precision.check_mixed_precision()
    message = str(caught.value)
    assert "\n" not in message and "needs a GPU" in message and "Received: mixed_precision=True" in message
    fake_devices(monkeypatch, 1)
    devices.precision.check_mixed_precision()  # a GPU: accepted


def test_mixed_precision_on_this_machine_follows_its_devices():
    if devices.gpu_available():
        devices.precision.check_mixed_precision()
    else:
        with pytest.raises(ConfigError, match="needs a GPU"):
            devices.precision.check_mixed_precision()


def test_native_bfloat16_is_read_from_the_cpu_flags():
    assert devices.native_bfloat16({"avx2", "fma", "avx512f"}) is None, "AVX2 / AVX-512 alone emulate bfloat16"
    assert devices.native_bfloat16({"avx512f", "avx512_bf16"}) == "AVX-512 BF16"
    assert devices.native_bfloat16({"amx_bf16", "avx512_bf16", "amx_tile"}) == "AMX-BF16 and AVX-512 BF16"
    flags = devices.cpu_flags()
    if platform.system() == "Linux":
        assert "sse2" in flags or "fp" in flags, "read from /proc/cpuinfo"
    assert devices.native_bfloat16() == devices.native_bfloat16(flags)


def test_mixed_bfloat16_only_where_the_cpu_computes_it(monkeypatch):
    fake_devices(monkeypatch, 0)
    monkeypatch.setattr(devices, "cpu_flags", lambda: {"avx2", "fma"})
    with pytest.raises(ConfigError) as caught:
        devices.precision.check_mixed_precision("mixed_bfloat16")
    message = str(caught.value)
    assert "\n" not in message and "would emulate it" in message and "Received: precision='mixed_bfloat16'" in message
    monkeypatch.setattr(devices, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    devices.precision.check_mixed_precision("mixed_bfloat16")  # native, training on the CPU: accepted
    fake_devices(monkeypatch, 1)
    with pytest.raises(ConfigError, match="on a GPU use --mixed-precision"):
        devices.precision.check_mixed_precision("mixed_bfloat16")


def test_precision_names_are_checked():
    with pytest.raises(ConfigError, match="Received: precision='float16'"):
        devices.precision.apply_precision("float16")
    assert keras.mixed_precision.global_policy().name == "float32"


def test_jit_settings():
    model = lstm_model()
    assert devices.xla.jit_compile_value(None, model) == "auto"
    assert devices.xla.jit_compile_value(False, model) is False
    supported, note = devices.xla.jit_supported(model)
    assert supported and note  # CPU TensorFlow (or JAX): XLA can compile the LSTM
    assert devices.xla.jit_compile_value(True, model) is True
    lstms(model)[0].supports_jit = False  # what Keras sets for a cuDNN LSTM on a TensorFlow GPU
    assert devices.xla.jit_supported(model)[0] is False
    with pytest.raises(ConfigError, match="--jit is not possible here: layers lstm cannot"):
        devices.xla.jit_compile_value(True, model)


def test_versions_and_devices_describe_this_machine():
    versions = devices.versions()
    assert versions["backend"] == keras.backend.backend() == "tensorflow"
    assert versions["keras"] == keras.__version__
    import tensorflow as tf

    assert versions["tensorflow"] == tf.__version__
    listed = devices.list_devices()
    assert listed[0]["type"] == "CPU" and listed[0]["cores"] >= 1
    assert [d["id"] for d in listed if d["type"] == "GPU"] == [
        f"GPU:{i}" for i in range(len(tf.config.list_physical_devices("GPU")))]


# ----------------------------------------------------------------------------- textgen info


@pytest.fixture
def app():
    app = typer.Typer(cls=OneLineErrors, add_completion=False)
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps `info` a subcommand
    return app


def invoke(app, *args):
    return CliRunner().invoke(app, list(args))


def test_info_json_reports_defaults(app):
    result = invoke(app, "info", "--json")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, "--json prints one JSON object and nothing else on stdout"
    report = json.loads(lines[0])
    assert report["backend"] == "tensorflow" and report["versions"]["keras"] == keras.__version__
    assert report["devices"][0]["type"] == "CPU"
    assert report["model"] == {"source": "defaults", "precision": "float32"}
    from textgen.training.model import ModelConfig

    layers = ModelConfig(vocab_size=2).num_layers
    assert [r["layer"] for r in report["cudnn"]["layers"]] == [f"lstm_{i}/lstm" for i in range(layers)]
    assert report["cudnn"]["eligible"] is True
    assert report["cudnn"]["used"] is devices.cudnn.cudnn_available()
    assert report["mixed_precision"]["available"] is report["gpu"]
    # bfloat16 follows the CPU's own flags: used by default only where it is native and no GPU is seen.
    assert report["bfloat16"]["native"] == devices.native_bfloat16()
    assert report["bfloat16"]["default"] is (report["bfloat16"]["native"] is not None and not report["gpu"])
    assert {f["feature"] for f in report["tensorflow_only"]} == {"tf.distribute", "TensorBoard"}
    from textgen.generation import kernel

    assert report["sampling_step"]["kind"] == ("compiled" if kernel.load() is not None else "numpy")
    human = invoke(app, "info")
    assert f"sampling step: {report['sampling_step']['kind']}" in human.stdout


def test_info_reports_a_runs_layers(app, tmp_path):
    root = tmp_path / "checkpoints"  # TEXTGEN_CHECKPOINTS points here (conftest)
    directory = checkpoints.run_dir(root, "deep")
    directory.mkdir(parents=True)
    checkpoints.write_run_file(directory, {
        "name": "deep", "model": ModelConfig(vocab_size=30, units=8, embedding_dim=4, num_layers=3,
                                             dropout=0.3).to_dict(),
        "training": {"batch_size": 4, "seq_len": 16}, "vocab": [chr(97 + i) for i in range(30)],
    })
    result = invoke(app, "info", "--run", "deep", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"]["source"] == "run deep"
    assert [r["units"] for r in report["cudnn"]["layers"]] == [8, 8, 8]
    human = invoke(app, "info", "--run", "deep")
    assert human.exit_code == 0, human.output
    assert "lstm_2/lstm" in human.stdout and "cuDNN" in human.stdout


def test_info_unknown_run_is_one_line_error(app):
    result = invoke(app, "info", "--run", "missing")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        result.stderr.strip()] and result.stderr.startswith("Error: Unknown run 'missing'")


def test_info_help_has_an_example(app):
    result = invoke(app, "info", "--help")
    assert result.exit_code == 0 and "Example:" in result.output and "--json" in result.output


@pytest.mark.slow
def test_a_model_trained_in_mixed_bfloat16_learns_and_samples_with_the_numpy_engine():
    """The mixed_bfloat16 path end to end (emulated on a CPU without BF16, so tiny): the carried
    LSTM state, the loss and every variable stay float32, the loss falls, and the float32 numpy
    engine reads the weights and agrees with Keras to bfloat16's precision."""
    import numpy as np

    from textgen.config import TrainConfig
    from textgen.generation.engine import LSTMEngine
    from textgen.training.model import build_training_model
    from textgen.training.variables import trainable_arrays

    config = ModelConfig(vocab_size=6, embedding_dim=8, units=16, num_layers=2)
    model = build_training_model(config, TrainConfig(batch_size=4, seq_len=8, precision="mixed_bfloat16",
                                                     learning_rate=0.02))
    assert keras.mixed_precision.global_policy().name == "float32", "the policy is scoped to the build"
    assert all(layer.compute_dtype == "bfloat16" for layer in lstms(model))
    text = np.tile(np.arange(6, dtype=np.int32), 20)
    x = np.stack([np.roll(text, -i)[:8] for i in range(4)])
    y = np.stack([np.roll(text, -i - 1)[:8] for i in range(4)])
    losses = [float(model.train_on_batch(x, y, return_dict=True)["loss"]) for _ in range(40)]
    assert all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0], losses
    assert all(variable.dtype == "float32" for variable in model.variables if "seed_generator" not in variable.path)
    # The numpy engine, float32 from the same weights, predicts the cycle as the network does.
    engine = LSTMEngine(trainable_arrays(model), config.num_layers, threads=1)
    state = engine.initial_state(1)
    predicted = [int(np.argmax(engine.step(np.array([i % 6]), state)[0])) for i in range(12)]
    assert predicted[6:] == [1, 2, 3, 4, 5, 0], "once in the cycle, the next character is certain"
