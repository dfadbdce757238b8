"""Setting up a training run: create or reopen its directory, lock it, and build its trainer.

`open_run` is the entry point of `textgen train`: a new run records its resolved configs,
vocabulary, corpus and versions in `run.json`; a resumed run reads them back and applies
the resume rules of `textgen.config`. The loop itself is `textgen.training.loop.Trainer`.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import asdict
from pathlib import Path

from textgen import checkpoints, devices, files
from textgen.backend import quiet_import_keras
from textgen.config import ModelConfig, TrainConfig, resumed_configs
from textgen.corpus import PreparedCorpus
from textgen.defaults import choose_defaults
from textgen.documents import corpus_split, validation_report
from textgen.errors import CheckpointError, ConfigError, CorpusError
from textgen.training import distribute
from textgen.training.batches import StreamBatches
from textgen.training.loop import Trainer, TrainingCallbacks
from textgen.training.model import build_training_model, training_speed

__all__ = ["Trainer", "TrainingCallbacks", "TrainConfig", "build_trainer", "open_run"]

keras = quiet_import_keras()


def _speed_probe(vocab_size: int, callbacks: TrainingCallbacks | None):
    """`choose_defaults`' speed: the training chars/s of a candidate model, measured (`model.training_speed`)."""

    def speed(model_options: dict, train_options: dict) -> float:
        config = TrainConfig(**train_options)
        if callbacks is not None:
            callbacks.on_probe(model_options, config)
        keras.utils.set_random_seed(config.seed)
        return training_speed(ModelConfig(vocab_size=vocab_size, **model_options).validate(), config)

    return speed


def build_trainer(directory: Path, model_config: ModelConfig, config: TrainConfig, corpus: PreparedCorpus,
                  callbacks: TrainingCallbacks | None = None, resume: checkpoints.Checkpoint | None = None,
                  chosen: dict | None = None) -> Trainer:
    """Check the configs against this machine, set up the distribution, build the model in its
    scope, and return the run's trainer (restored from `resume` if given)."""
    config.validate()
    model_config.validate()
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "--tensorboard needs the tensorboard package: pip install \"textgen[tensorboard]\" "
            "(or pip install tensorboard)."
        )
    ids = corpus.ids()
    split, val_start, validation = corpus_split(corpus, config.val_fraction)
    if split < 2:
        raise CorpusError(
            f"Corpus too short to split: {corpus.num_chars} characters with --val-fraction {config.val_fraction}"
        )
    batches = StreamBatches(ids, 0, split, config.batch_size, config.seq_len, config.seed)
    warnings = []
    if config.precision != "float32":
        try:
            devices.precision.check_mixed_precision(config.precision)
        except ConfigError as error:
            # A bfloat16 run resumed on a CPU without it still resumes exactly, only slower.
            if resume is None or config.precision != "mixed_bfloat16":
                raise
            warnings.append(f"{error} (resuming anyway: this run was started in mixed_bfloat16)")
    distribution = distribute.setup(config.strategy)
    distribution.check_batch(config.batch_size)
    keras.utils.set_random_seed(config.seed)
    with distribution.scope():
        model = build_training_model(model_config, config, distributed=distribution.strategy is not None)
        warnings += devices.cudnn.cudnn_warnings(devices.cudnn.cudnn_report(model))
    trainer = Trainer(directory, model_config, config, model, distribution, batches,
                      ids[val_start: val_start + config.eval_chars + 1], corpus.vocab,
                      callbacks=callbacks or TrainingCallbacks(), resume=resume, chosen=chosen or {},
                      warnings=warnings)
    trainer.validation = validation_report(corpus, val_start, validation) if corpus.documents else None
    return trainer


def documents_record(corpus: PreparedCorpus, train_options: dict) -> dict:
    """run.json's corpus fields of a run trained on documents: what was read (count, bytes, paths,
    skipped, the glob), and how validation was split ("whole documents" or "tail")."""
    if not corpus.documents:
        return {}
    val_fraction = train_options.get("val_fraction")
    _, _, validation = corpus_split(corpus, TrainConfig.val_fraction if val_fraction is None else val_fraction)
    return {"documents": corpus.documents, "validation": validation}


def check_same_documents(name: str, info: dict, corpus: PreparedCorpus) -> None:
    """A resumed documents run must read the same files with the same contents (its SHA-256)."""
    recorded = info.get("corpus") or {}
    if (recorded.get("documents") or corpus.documents) and recorded.get("sha256") != corpus.sha256:
        was = (recorded.get("documents") or {}).get("count", 0)
        raise CheckpointError(
            f"The documents differ from those run {name!r} was trained on ({was} documents then, "
            f"{(corpus.documents or {}).get('count', 0)} now, or their contents changed: the SHA-256 differs). "
            "Resume with the same files, or train a new run.")


def check_same_lines(name: str, info: dict, corpus: PreparedCorpus) -> None:
    """A resumed run keeps how its text was read: by lines (--lines) or as running text."""
    was = bool((info.get("corpus") or {}).get("lines"))
    if was != bool(corpus.lines):
        how = ("with --lines (each line a document); resume it with --lines too" if was else
               "without --lines (running text), so resuming cannot make it a lines run; train a new run with "
               "textgen train FILE --lines --run NAME")
        raise ConfigError(f"Run {name!r} was trained {how}.")


def open_run(corpus: PreparedCorpus, corpus_name: str, root: Path, run: str | None,
             model_options: dict, train_options: dict, resume: bool,
             callbacks: TrainingCallbacks | None = None, use_previous: bool = False) -> Trainer:
    """Create a new run (or reopen one with `resume`), lock it, and return its trainer.

    `model_options` / `train_options` hold only the options the user gave (others None);
    a new run fills the rest with `choose_defaults` (recorded as `run.json["chosen"]`), a resumed
    run with its own recorded values.
    Nothing in an existing run changes unless every check passes.
    """
    root = Path(root)
    given_model = {k: v for k, v in model_options.items() if v is not None}
    given_train = {k: v for k, v in train_options.items() if v is not None}
    # The strategy first: TensorFlow must create it before anything else, and under
    # multi-worker only the chief touches the run directory (the others only read it).
    recorded_strategy, chosen = None, {}
    if resume:
        directory = checkpoints.find_run(root, run)
        info = checkpoints.read_run_file(directory)
        recorded_strategy = info["training"].get("strategy")
    chief = distribute.setup(given_train.get("strategy") or recorded_strategy or TrainConfig.strategy).is_chief
    if not resume:
        if not chief and run is None:
            raise ConfigError("--strategy multi-worker needs a --run name shared by every worker.")
        name = run or checkpoints.new_run_name(root)
        directory = checkpoints.run_dir(root, name)
        if chief and (directory / checkpoints.RUN_FILE).exists():
            raise CheckpointError(
                f"Run {name!r} already exists in {str(root)!r}. Pass --resume to continue it, "
                "or choose another --run name."
            )
        cpu_only = not devices.gpu_available()
        model_options, train_options, chosen = choose_defaults(
            given_model, given_train, corpus.num_chars, given_train.get("time_limit"),
            cpu_only=cpu_only, cpu_bfloat16=devices.native_bfloat16() if cpu_only else None,
            speed=_speed_probe(len(corpus.vocab), callbacks))
        model_config = ModelConfig(vocab_size=len(corpus.vocab), **model_options).validate()
        config = TrainConfig(**train_options).validate()
        info = {
            "name": directory.name,
            "created": time.time(),
            "model": model_config.to_dict(),
            "training": asdict(config),
            "chosen": chosen,
            "vocab": corpus.vocab,
            "corpus": {"name": corpus_name, "source": corpus.source, "sha256": corpus.sha256,
                       "encoding": corpus.encoding, "characters": corpus.num_chars,
                       **({"lines": True} if corpus.lines else {}), **documents_record(corpus, train_options)},
            "versions": files.versions(keras.backend.backend(), installed_only=True),
        }
    if not chief:
        ckpt = None
        if resume:
            model_config, config = resumed_configs(directory.name, info, corpus.vocab, given_model, given_train)
            if checkpoints.list_checkpoints(directory):
                ckpt = checkpoints.latest(directory, use_previous=use_previous)
        return build_trainer(directory, model_config, config, corpus, callbacks, ckpt, chosen)
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    lock = checkpoints.RunLock(directory).acquire()
    try:
        ckpt = None
        if resume:
            model_config, config = resumed_configs(directory.name, info, corpus.vocab, given_model, given_train)
            check_same_documents(directory.name, info, corpus)
            check_same_lines(directory.name, info, corpus)
            checkpoints.clean_temporaries(directory)
            # A run stopped before its first checkpoint restarts from step 0 with its own config.
            if checkpoints.list_checkpoints(directory):
                ckpt = checkpoints.latest(directory, use_previous=use_previous)
            info["training"] = asdict(config)
            info["updated"] = time.time()
        trainer = build_trainer(directory, model_config, config, corpus, callbacks, ckpt, chosen)
        checkpoints.write_run_file(directory, info)
    except BaseException:
        lock.release()
        if created and not any(directory.iterdir()):
            directory.rmdir()  # nothing was written: leave no empty run behind
        raise
    trainer.lock = lock
    return trainer
