"""Training on several devices or hosts with TensorFlow's `tf.distribute`.

`--strategy`:
- `one-device`: no tf.distribute; `model.train_on_batch` on whatever device Keras picks.
- `mirrored`: `tf.distribute.MirroredStrategy` over every local GPU (or, without a GPU, every
  logical CPU device: `TEXTGEN_CPU_REPLICAS=N` splits the CPU into N, for trying it out).
- `multi-worker`: `tf.distribute.MultiWorkerMirroredStrategy`, configured by the standard
  `TF_CONFIG` environment variable. Only the chief writes checkpoints.
- `auto` (default): `mirrored` when more than one GPU is visible, else `one-device`.

Both paths run the same step function, Keras' own `model.train_step`: `train_on_batch`
calls it on one device; under a strategy it runs once per replica through `strategy.run` on
that replica's rows of the global batch (Keras 3's `fit` cannot run under
MultiWorkerMirroredStrategy, keras-team/keras#20585, so textgen never uses `fit` there).
Replica r gets streams [r*b, (r+1)*b) of the global batch of B = R*b streams, the same rows
every step, so the carried LSTM state stays with its stream (see `CarriedLSTM`), and the
gradient is the mean over the global batch: the same update as one device with batch B.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from textgen import devices
from textgen.errors import ConfigError, positive_int

STRATEGIES = ("auto", "one-device", "mirrored", "multi-worker")
CPU_REPLICAS_ENV = "TEXTGEN_CPU_REPLICAS"


@dataclass
class Distribution:
    """The strategy a process trains under (`strategy` is None for one device)."""

    name: str
    strategy: object | None = None
    replicas: int = 1
    is_chief: bool = True
    worker: str = "chief"

    def scope(self):
        import contextlib

        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def describe(self) -> str:
        if self.strategy is None:
            return "one device"
        return f"{self.name}, {self.replicas} replicas" + ("" if self.is_chief else f" ({self.worker})")

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.replicas:
            raise ConfigError(
                f"--batch-size must be a multiple of the {self.replicas} replicas of --strategy "
                f"{self.name}, so that every replica runs the same number of streams. "
                f"Received: batch_size={batch_size}"
            )

    def step_function(self, model):
        """A callable (x, y) -> mean training loss over the global batch, for one update."""
        if self.strategy is None:
            return lambda x, y: float(model.train_on_batch(x, y, return_dict=True)["loss"])
        import tensorflow as tf

        strategy, replicas = self.strategy, self.replicas

        @tf.function
        def distributed_step(batch):
            logs = strategy.run(model.train_step, args=(batch,))
            return strategy.reduce(tf.distribute.ReduceOp.MEAN, logs["loss"], axis=None)

        def step(x, y):
            rows = len(x) // replicas

            def replica_rows(context):
                r = context.replica_id_in_sync_group
                return (tf.constant(x[r * rows:(r + 1) * rows]), tf.constant(y[r * rows:(r + 1) * rows]))

            model.reset_metrics()  # the loss of this step only, as train_on_batch reports it
            return float(distributed_step(strategy.experimental_distribute_values_from_function(replica_rows)))

        return step

    def agree(self, stop: bool) -> bool:
        """Multi-worker: stop only together (a time limit or a signal seen by any worker)."""
        return self.mean(1.0 if stop else 0.0) > 0

    def mean(self, value: float) -> float:
        """Multi-worker: the mean of every worker's value, the same number on all of them."""
        if self.name != "multi-worker":
            return value
        import tensorflow as tf

        values = self.strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(float(value), tf.float64))
        return float(self.strategy.reduce(tf.distribute.ReduceOp.MEAN, values, axis=None))


_CURRENT: Distribution | None = None


def setup(name: str) -> Distribution:
    """Create the process's strategy (once: TensorFlow allows one per process)."""
    global _CURRENT
    if name not in STRATEGIES:
        raise ConfigError(f"--strategy must be one of {', '.join(STRATEGIES)}. Received: strategy={name!r}")
    if _CURRENT is not None and (_CURRENT.name == name or name == "auto"):
        return _CURRENT
    backend = devices.backend()
    if backend != "tensorflow":
        if name in ("mirrored", "multi-worker"):
            raise ConfigError(
                f"--strategy {name} uses tf.distribute and needs KERAS_BACKEND=tensorflow; the "
                f"{backend} backend trains on one device. Received: strategy={name!r}"
            )
        return Distribution("one-device")
    import tensorflow as tf

    cpu_replicas = _cpu_replicas()
    if cpu_replicas > 1 and _CURRENT is None:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
        except RuntimeError:
            pass  # TensorFlow already started (in-process tests): keep the devices it has
    # Physical, not logical, devices: listing logical ones starts TensorFlow's runtime, after
    # which MultiWorkerMirroredStrategy can no longer configure its collective ops.
    if name == "auto":
        name = "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "one-device"
    if _CURRENT is not None:
        if _CURRENT.name != name:
            raise ConfigError(
                f"This process already trains with --strategy {_CURRENT.name}; TensorFlow allows one "
                f"strategy per process. Received: strategy={name!r}"
            )
        return _CURRENT
    if name == "one-device":
        return Distribution("one-device")
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        names = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(names)
        _CURRENT = Distribution(name, strategy, strategy.num_replicas_in_sync)
        return _CURRENT
    cluster = _tf_config()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    task = cluster.get("task", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    has_chief = bool(cluster.get("cluster", {}).get("chief"))
    chief = kind == "chief" or (kind == "worker" and index == 0 and not has_chief)
    _CURRENT = Distribution(name, strategy, strategy.num_replicas_in_sync, chief, f"{kind} {index}")
    return _CURRENT


def _cpu_replicas() -> int:
    value = os.environ.get(CPU_REPLICAS_ENV, "")
    if not value:
        return 1
    try:
        count = int(value)
    except ValueError:
        count = value  # positive_int names the text it received
    return positive_int(CPU_REPLICAS_ENV, count)


def _tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ConfigError(
            "--strategy multi-worker reads the cluster from the TF_CONFIG environment variable, "
            "which is not set; see the README's \"GPUs and clusters\" section."
        )
    try:
        cluster = json.loads(raw)
        workers = cluster["cluster"]
        assert isinstance(workers, dict) and workers
    except (ValueError, KeyError, TypeError, AssertionError):
        raise ConfigError(
            'TF_CONFIG is not valid: expected JSON like {"cluster": {"worker": ["host1:port", '
            f'"host2:port"]}}, "task": {{"type": "worker", "index": 0}}}}. Received: {raw[:200]!r}'
        ) from None
    return cluster

