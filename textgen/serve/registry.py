"""The served runs: loaded once in the background, then reloaded when training saves anew.

A run name is resolved to a directory once, at start (`find_run`, which checks the name);
requests only look names up in `models`, so no request value ever reaches a file path.

Hot reload: every `reload_seconds` each run's newest checkpoint directory is compared with
the one served. A new one is verified (its manifest's SHA-256s) and loaded into a NEW
session handed to the run's scheduler; requests in flight finish on their old session. A
damaged checkpoint is never served: the previous one stays, and the log says so once (any
TextgenError or OSError while loading is one log line per checkpoint).

The registry also gives each scheduler its way back after a failed engine loop (`_last_good`:
the checkpoint it served, else the newest one that loads) and says for /health which models
do not step, in a few words and without paths (`health`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from textgen import checkpoints, summary
from textgen.errors import CheckpointError, ConfigError, TextgenError
from textgen.serve import failures
from textgen.serve.jobs import Ledger
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
    error: str | None = None                       # why it is not loaded yet (may name paths: the log's words)
    waiting: str = "loading"                       # the same in a few words, for /health

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
        self.ledger = Ledger(settings.max_buffered)  # the server's unread output, shown in /metrics
        if metrics is not None:
            metrics.ledger = self.ledger
        self._fault_at_step = _fault_hook()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="reload", daemon=True)

    @property
    def ready(self) -> bool:
        return all(m.ready for m in self.models.values())

    def get(self, name: str) -> Served:
        served = self.models.get(name)
        if served is None:
            raise failures.ModelNotFound(name, list(self.models))
        if not served.ready:
            raise failures.ModelLoading()
        return served

    def health(self) -> dict:
        """Each model's state for /health: None while it steps, else why not, in a few words."""
        return {name: (served.scheduler.health() if served.ready else served.waiting)
                for name, served in self.models.items()}

    def detail(self) -> dict:
        """The log's words (which may name paths) for each model that has something to say."""
        said = {name: (served.scheduler.restart_failure if served.ready else None) or served.error
                for name, served in self.models.items()}
        return {name: text for name, text in said.items() if text}

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
        try:
            found = checkpoints.list_checkpoints(served.directory)
        except OSError as e:  # the run directory became unreadable: say so once, keep what is served
            reason = f"Run {served.name!r} cannot be read: {e.strerror or e}"
            if served.error != reason:
                served.error = reason
                log.warning("%s", reason)
            return
        if not found:
            if served.error is None:
                served.error = f"Run {served.name!r} has no checkpoint yet; waiting for one."
                served.waiting = "no checkpoint yet"
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
        except (TextgenError, OSError) as e:
            if not newest.exists():  # pruned by the trainer while we read it: a newer one is there
                return
            self._refused(served, newest.name, str(e))
            return
        except Exception:  # a bug in loading: its traceback once per checkpoint, not every second
            self._told.add((served.name, newest.name))
            log.exception("Not loading %s/%s (a bug)", served.name, newest.name)
            served.error, served.waiting = "loading failed (a bug; see the server log)", "its checkpoint failed to load"
            return
        served.error = None
        if served.scheduler is None:
            served.info, served.chars = info, frozenset(info["vocab"])
            served.scheduler = Scheduler(served.name, version, self.settings, self.outbox, self.metrics, self.ledger,
                                         restart=lambda checkpoint: self._last_good(served, checkpoint),
                                         fault_at_step=self._fault_at_step)
            served.scheduler.start()
            log.info("Loaded %s: %s (step %d) in %.2f s", served.name, newest.name, version.step,
                     time.monotonic() - started)
        elif info["vocab"] != served.info["vocab"]:
            version.session.close()
            self._told.add((served.name, newest.name))
            log.warning("Not loading %s/%s: its vocabulary differs from the served one", served.name, newest.name)
        else:
            served.scheduler.swap(version)

    def _refused(self, served: Served, checkpoint: str, reason: str) -> None:
        self._told.add((served.name, checkpoint))
        keeping = f"; still serving {served.scheduler.version.checkpoint}" if served.ready else ""
        log.warning("Not loading %s/%s: %s%s", served.name, checkpoint, reason, keeping)
        served.error = reason
        if not served.ready:
            served.waiting = "its newest checkpoint could not be loaded (see the server log)"

    def _last_good(self, served: Served, checkpoint: str) -> Version:
        """A fresh session on `checkpoint` (the one served when the engine failed), or else on the
        newest checkpoint that loads with the served vocabulary. Called by the engine thread."""
        names = [checkpoint] + [p.name for p in reversed(checkpoints.list_checkpoints(served.directory))
                                if p.name != checkpoint]
        reasons = []
        for name in names:
            try:
                version, info = self._load(served, name)
            except (TextgenError, OSError) as e:
                reasons.append(f"{name}: {e}")
                continue
            if info["vocab"] == served.info["vocab"]:
                return version
            version.session.close()
            reasons.append(f"{name}: its vocabulary differs from the served one")
        raise CheckpointError(f"No checkpoint of {served.name!r} loads: {'; '.join(reasons) or 'none left'}")

    def _load(self, served: Served, checkpoint: str):
        from textgen.generation.loading import load_run, start_id
        from textgen.generation.session import SamplingSession

        info, ckpt, engine = load_run(served.directory, which=checkpoint)
        session = SamplingSession(engine, info["vocab"], start_id(info["vocab"]),
                                  capacity=min(self.settings.max_streams, 64))
        return Version(session, ckpt.step, ckpt.path.name, ckpt.state), info


def _fault_hook() -> int | None:
    """TEXTGEN_SERVE_FAULT_AT_STEP=N (a test hook, read once at start): each model's engine loop
    raises once after its N-th step, to exercise the recovery path (serve/scheduler.py)."""
    value = os.environ.get("TEXTGEN_SERVE_FAULT_AT_STEP")
    if value is None:
        return None
    if not value.isdigit():
        raise ConfigError(f"TEXTGEN_SERVE_FAULT_AT_STEP must be a step number. Received: {value!r}")
    log.warning("TEXTGEN_SERVE_FAULT_AT_STEP=%s: the engine loops will fail once on purpose (a test hook)", value)
    return int(value)
