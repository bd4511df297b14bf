"""The keyed counter hash: reproducible random draws for augmentation, shuffling and RCM (TensorFlow).

A key is a uint32 folded from integers, e.g. (seed, epoch, example position),
and a salt per use (`dcl_keras.contract`); `hash_uniform(key, count)` turns it
into `count` uniform floats. Only xor, shift and multiply on uint32 are used, so
the numbers are bit-identical in eager mode, inside `tf.data`, under
`jit_compile=True`, on any device, and in the keras.ops mirror that the device
RCM uses (`dcl_keras.models.region_confusion`). TF's stateless random ops give
different streams with and without XLA, which is why they are not used here.
"""

import tensorflow as tf

from dcl_keras import contract


def _u32(value):
    return tf.constant(value, tf.uint32)


def hash_uint32(x):
    """Mixes a uint32 tensor elementwise (the lowbias32 finalizer)."""
    s1, s2, s3 = contract.HASH_SHIFTS
    x = tf.cast(x, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, _u32(s1)))
    x = x * _u32(contract.HASH_MUL_1)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, _u32(s2)))
    x = x * _u32(contract.HASH_MUL_2)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, _u32(s3)))


def combine_keys(*parts):
    """Folds integers (Python ints or integer tensors) into one uint32 key, or elementwise into keys [B]."""
    key = _u32(contract.KEY_INIT)
    for part in parts:
        part = tf.cast(tf.cast(part, tf.int64) % (1 << 32), tf.uint32)
        key = hash_uint32(tf.bitwise.bitwise_xor(key * _u32(contract.GOLDEN), part))
    return key


def hash_uniform(key, count):
    """float32 draws in [0, 1) from uint32 keys, identical on every device: [count] for a key, [..., count] for keys."""
    counters = tf.cast(tf.range(count, dtype=tf.int32), tf.uint32) * _u32(contract.GOLDEN)
    mixed = hash_uint32(tf.cast(key, tf.uint32)[..., None])  # [..., 1]: a scalar key broadcasts to [count].
    bits = hash_uint32(tf.bitwise.bitwise_xor(mixed, counters) + _u32(1))
    shift = 32 - contract.UNIFORM_BITS
    return tf.cast(tf.bitwise.right_shift(bits, _u32(shift)), tf.float32) * (1.0 / (1 << contract.UNIFORM_BITS))


def shuffle_seed(key):
    """The int32 [2] seed of TF's stateless shuffle for a uint32 `key` (an epoch's order key)."""
    return tf.bitcast(tf.stack([key, combine_keys(key, contract.SHUFFLE_SEED_SALT)]), tf.int32)
