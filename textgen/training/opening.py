"""Setting up a training run: create or reopen its directory, lock it, and build its trainer.

`open_run` is the entry point of `textgen train`: a new run records its resolved configs,
vocabulary, corpus and versions in `run.json`; a resumed run reads them back and applies
the resume rules of `textgen.config`. The loop itself is `textgen.training.loop.Trainer`.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from textgen import checkpoints, devices, files
from textgen.backend import quiet_import_keras
from textgen.config import ModelConfig, TrainConfig, resumed_configs
from textgen.corpus import PreparedCorpus
from textgen.defaults import choose_defaults
from textgen.errors import CheckpointError, ConfigError
from textgen.training import distribute
from textgen.training.loop import Trainer, TrainingCallbacks
from textgen.training.model import training_speed

__all__ = ["Trainer", "TrainingCallbacks", "TrainConfig", "open_run"]

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
                       "encoding": corpus.encoding, "characters": corpus.num_chars},
            "versions": files.versions(keras.backend.backend(), installed_only=True),
        }
    if not chief:
        ckpt = None
        if resume:
            model_config, config = resumed_configs(directory.name, info, corpus.vocab, given_model, given_train)
            if checkpoints.list_checkpoints(directory):
                ckpt = checkpoints.latest(directory, use_previous=use_previous)
        return Trainer(directory, model_config, config, corpus,
                       callbacks=callbacks or TrainingCallbacks(), resume=ckpt, chosen=chosen)
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    lock = checkpoints.RunLock(directory).acquire()
    try:
        ckpt = None
        if resume:
            model_config, config = resumed_configs(directory.name, info, corpus.vocab, given_model, given_train)
            checkpoints.clean_temporaries(directory)
            # A run stopped before its first checkpoint restarts from step 0 with its own config.
            if checkpoints.list_checkpoints(directory):
                ckpt = checkpoints.latest(directory, use_previous=use_previous)
            info["training"] = asdict(config)
            info["updated"] = time.time()
        trainer = Trainer(directory, model_config, config, corpus,
                          callbacks=callbacks or TrainingCallbacks(), resume=ckpt, chosen=chosen)
        checkpoints.write_run_file(directory, info)
    except BaseException:
        lock.release()
        if created and not any(directory.iterdir()):
            directory.rmdir()  # nothing was written: leave no empty run behind
        raise
    trainer.lock = lock
    return trainer
