"""Loading `.keras` files with every dcl_keras class registered."""

import keras


def load_model(path, compile=True):
    """Loads a `.keras` DCL model (with its optimizer state when compile=True)."""
    # Imported for their registration with keras.saving.
    from dcl_keras import losses, optim  # noqa: F401
    from dcl_keras.models import dcl, layers, region_confusion  # noqa: F401

    return keras.models.load_model(path, compile=compile)
