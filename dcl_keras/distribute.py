"""Multi-device and multi-host training: one config field, `train.distribution`.

* "none": one device.
* "mirrored" (TensorFlow backend): tf.distribute.MirroredStrategy over the
  devices of one host.
* "tpu" (TensorFlow backend): tf.distribute.TPUStrategy for `train.tpu`
  (a TPU name or grpc:// address). Not testable on the project's machines.
* "data_parallel" (JAX backend): keras.distribution.DataParallel over
  jax.devices(), on one host or, with several processes, across hosts through
  jax.distributed (the same command on every host, with its process id).

`input.batch_size` is always the global batch. With several processes each
one decodes and augments only its share of every global batch (see
`train_stream.train_batches`), so the input work per host falls as hosts are added. Several TF workers
(MultiWorkerMirroredStrategy) do not work with Keras 3 `fit` (a PerReplica
conversion error, keras-team/keras#20585): use "data_parallel" on JAX.
"""

import contextlib
import dataclasses
import os

import keras

from dcl_keras.config import DISTRIBUTIONS, ConfigError


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Where this process stands: its id, the process count, and the coordinator's address."""

    process_id: int = 0
    num_processes: int = 1
    coordinator_address: str | None = None

    @property
    def is_chief(self):
        return self.process_id == 0

    @classmethod
    def from_env(cls, coordinator_address=None, num_processes=None, process_id=None):
        """Flags first, then JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID."""
        env = os.environ
        address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS") or None
        count = num_processes if num_processes is not None else int(env.get("JAX_NUM_PROCESSES", "1"))
        index = process_id if process_id is not None else int(env.get("JAX_PROCESS_ID", "0"))
        if count < 1 or not 0 <= index < count:
            raise ConfigError(
                f"Process id must be in [0, num_processes). Received: process_id={index}, num_processes={count}"
            )
        if count > 1 and not address:
            raise ConfigError(
                "Several processes need the coordinator's host:port (--coordinator_address or "
                f"JAX_COORDINATOR_ADDRESS). Received: num_processes={count}, coordinator_address=None"
            )
        return cls(index, count, address)


def setup(name, cluster=Cluster(), tpu=""):
    """Prepares the distribution and returns the scope to build and compile the model in.

    Call before any computation (jax.distributed must start first).
    """
    backend = keras.backend.backend()
    if name not in DISTRIBUTIONS:
        raise ConfigError(f"Config field `train.distribution`: expected one of {DISTRIBUTIONS}. Received: {name!r}")
    if name == "multi_worker_mirrored":
        raise ConfigError(
            "Config field `train.distribution`: TF's MultiWorkerMirroredStrategy does not work with Keras 3 fit "
            "(keras-team/keras#20585). For several hosts use the JAX backend: --backend=jax "
            "--config.train.distribution=data_parallel --coordinator_address=HOST:PORT --num_processes=N "
            "--process_id=I on every host. Received: train.distribution='multi_worker_mirrored'"
        )
    if cluster.num_processes > 1 and name != "data_parallel":
        raise ConfigError(
            "Several processes need train.distribution='data_parallel' on the JAX backend. "
            f"Received: train.distribution={name!r}, num_processes={cluster.num_processes}"
        )
    if name in ("mirrored", "tpu") and backend != "tensorflow":
        raise ConfigError(f"train.distribution={name!r} needs the TensorFlow backend. Received: backend={backend!r}")
    if name == "data_parallel" and backend != "jax":
        raise ConfigError(f"train.distribution='data_parallel' needs the JAX backend. Received: backend={backend!r}")

    if name == "none":
        return contextlib.nullcontext()
    if name == "mirrored":
        import tensorflow as tf

        # All GPUs; without GPUs, all logical CPU devices (one, unless configured otherwise).
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices]).scope()
    if name == "tpu":
        import tensorflow as tf

        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or None)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver).scope()
    import jax

    if cluster.num_processes > 1:
        # CPU hosts need a collectives implementation; GPUs and TPUs ignore this.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=cluster.coordinator_address,
            num_processes=cluster.num_processes,
            process_id=cluster.process_id,
        )
    # Each process builds only its own slice of every global batch (`train_stream.train_batches(process_index=...)`),
    # so Keras must not shard the stream again (its default reads the whole global batch on every process).
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=jax.devices(), auto_shard_dataset=cluster.num_processes == 1)
    )
    return contextlib.nullcontext()
