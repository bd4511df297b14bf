"""Shared pieces of the experiment configs: argument parsing and the paper's datasets."""

from dcl_keras.config import base_config


def parse_arg(arg, **defaults):
    """Parses "key=value,key=value" config arguments over typed defaults.

    Example: parse_arg("backbone=vgg16,n=7", backbone="resnet50", n=7).
    """
    values = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in values:
            raise ValueError(
                f"Config argument {item!r}: expected key=value with key in {sorted(values)}. Received: arg={arg!r}"
            )
        kind = type(values[key])
        values[key] = value if kind is str else (value.lower() in ("1", "true", "yes") if kind is bool else kind(value))
    return values


def paper_config(source, gamma, n, backbone, root):
    """The paper's recipe (dcl-spec.md section 4) for one dataset and backbone."""
    c = base_config()
    c.data.source = source
    c.data.root = root
    c.rcm.n = n
    c.loss.gamma = gamma
    c.model.backbone = backbone
    c.model.weights = "imagenet"
    if n != 7 and c.input.image_size % n:
        c.input.image_size = 448 // n * n
    if n == 1:  # N = 1 leaves the image whole: DCL is the plain baseline (dcl-spec.md section 5).
        c.rcm.destructed = 0
        c.loss.beta = c.loss.gamma = 0.0
    return c
