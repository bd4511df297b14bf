"""DCL model side: backbones, heads, the three-output model (keras.ops only)."""
