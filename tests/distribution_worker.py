"""One training run for the distribution tests, in its own process.

    KERAS_BACKEND=... python tests/distribution_worker.py MODE WORKDIR DEMO_CACHE

MODE: "single" (one device), "mirrored" (TF, 2 logical CPUs) or "data_parallel"
(JAX; the test sets XLA_FLAGS for 2 host devices). Prints the final loss.
"""

import sys


def main(mode, workdir, cache):
    if mode == "mirrored":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from dcl_keras import training

    from distribution_config import config_for

    config = config_for(cache, "none" if mode == "single" else mode)
    training.train_and_evaluate(config, workdir)


if __name__ == "__main__":
    main(*sys.argv[1:4])
