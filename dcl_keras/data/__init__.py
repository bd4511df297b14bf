"""Input side of DCL: readers, augmentation, RCM and paired batches (TensorFlow)."""
