"""The served runs: loaded once in the background, then reloaded when training saves anew.

A run name is resolved to a directory once, at start (`find_run`, which checks the name);
requests only look names up in `models`, so no request value ever reaches a file path.

Hot reload: every `reload_seconds` each run's newest checkpoint directory is compared with
the one served. A new one is verified (its manifest's SHA-256s) and loaded into a NEW
session handed to the run's scheduler; requests in flight finish on their old session. A
damaged checkpoint is never served: the previous one stays, and the log says so once.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from textgen import checkpoints, summary
from textgen.errors import CheckpointError
from textgen.serve import errors
from textgen.serve.scheduler import Scheduler, Version

log = logging.getLogger("textgen.serve")


@dataclass
class Served:
    """One run as the routes see it."""

    name: str
    directory: Path
    info: dict = field(default_factory=dict)       # run.json
    chars: frozenset = frozenset()
    scheduler: Scheduler | None = None
    error: str | None = None                       # why it is not loaded yet

    @property
    def ready(self) -> bool:
        return self.scheduler is not None

    def card(self) -> dict:
        """The /v1/models entry: the run and the checkpoint now served."""
        version = self.scheduler.version
        figures = summary.describe(self.info, version.state)
        return {"id": self.name, "object": "model", "created": int(self.info.get("created") or 0),
                "owned_by": "textgen", "vocab_size": figures["vocab_size"], "parameters": figures["parameters"],
                "checkpoint_step": version.step, "validation_bpc": figures["val_bpc"],
                "layers": int(figures["layers"] or 0), "units": int(figures["units"] or 0)}

    def details(self) -> dict:
        """The playground's runs view: configuration and the metrics history of the served checkpoint."""
        version = self.scheduler.version
        keep = ("step", "epoch", "train_loss", "val_loss", "val_bpc", "learning_rate", "chars_seen")
        history = [{k: r[k] for k in keep if k in r} for r in version.state.get("history", [])]
        return {**self.card(), "checkpoint": version.checkpoint, "config": {
            "model": self.info.get("model"), "training": self.info.get("training"),
            "corpus": {k: v for k, v in (self.info.get("corpus") or {}).items() if k != "source"}},
            "history": history}


class Registry:
    """Loads the runs named in the settings and keeps each on its newest good checkpoint."""

    def __init__(self, settings, outbox, metrics=None):
        self.settings, self.outbox, self.metrics = settings, outbox, metrics
        root = Path(settings.checkpoints)
        names = list(settings.runs) or [None]
        self.models: dict[str, Served] = {}
        for name in names:
            directory = checkpoints.find_run(root, name)
            self.models[directory.name] = Served(directory.name, directory)
        self._told: set = set()       # (run, checkpoint) pairs already reported as damaged
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="reload", daemon=True)

    @property
    def ready(self) -> bool:
        return all(m.ready for m in self.models.values())

    def get(self, name: str) -> Served:
        served = self.models.get(name)
        if served is None:
            raise errors.not_found_model(name, list(self.models))
        if not served.ready:
            raise errors.loading()
        return served

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop watching and stop the engine threads (in-flight streams end with 'shutdown')."""
        self._stop.set()
        for served in self.models.values():
            if served.scheduler is not None:
                served.scheduler.stop()

    def begin_shutdown(self) -> None:
        """From a signal handler: no locks, only flags the engine threads poll."""
        for served in self.models.values():
            if served.scheduler is not None:
                served.scheduler.closing = True

    # ----------------------------------------------------------------------------- reload thread

    def _watch(self) -> None:
        while not self._stop.is_set():
            for served in self.models.values():
                if self._stop.is_set():
                    return
                try:
                    self._refresh(served)
                except Exception:  # a bug must not stop the reloads of the other runs
                    log.exception("Reloading %s failed", served.name)
            self._stop.wait(self.settings.reload_seconds)

    def _refresh(self, served: Served) -> None:
        found = checkpoints.list_checkpoints(served.directory)
        if not found:
            if served.error is None:
                served.error = f"Run {served.name!r} has no checkpoint yet; waiting for one."
                log.warning("%s", served.error)
            return
        newest = found[-1]
        if served.ready and newest.name == served.scheduler.version.checkpoint:
            return
        if (served.name, newest.name) in self._told:
            return
        started = time.monotonic()
        try:
            version, info = self._load(served, newest.name)
        except (CheckpointError, OSError, ValueError, KeyError) as e:
            if not newest.exists():  # pruned by the trainer while we read it: a newer one is there
                return
            self._told.add((served.name, newest.name))
            keeping = f"; still serving {served.scheduler.version.checkpoint}" if served.ready else ""
            log.warning("Not loading %s/%s: %s%s", served.name, newest.name, e, keeping)
            served.error = str(e)
            return
        served.error = None
        if served.scheduler is None:
            served.info, served.chars = info, frozenset(info["vocab"])
            served.scheduler = Scheduler(served.name, version, self.settings.max_streams,
                                         self.settings.max_queue, self.outbox, self.metrics)
            served.scheduler.start()
            log.info("Loaded %s: %s (step %d) in %.2f s", served.name, newest.name, version.step,
                     time.monotonic() - started)
        elif info["vocab"] != served.info["vocab"]:
            self._told.add((served.name, newest.name))
            log.warning("Not loading %s/%s: its vocabulary differs from the served one", served.name, newest.name)
        else:
            served.scheduler.swap(version)

    def _load(self, served: Served, checkpoint: str):
        from textgen.generation.loading import load_run, start_id
        from textgen.generation.session import SamplingSession

        info, ckpt, engine = load_run(served.directory, which=checkpoint)
        session = SamplingSession(engine, info["vocab"], start_id(info["vocab"]),
                                  capacity=min(self.settings.max_streams, 64))
        return Version(session, ckpt.step, ckpt.path.name, ckpt.state), info
