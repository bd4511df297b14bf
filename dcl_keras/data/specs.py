"""Input specs: what the pipeline makes of an image, one object for evaluation and one for training.

In the spirit of keras-hub's `ImageConverter`: the sizes and the resampling
travel together, built once from a config or read off a trained model, and
callers never pass them one by one.

    spec = EvalSpec.from_model(saving.load_model("workdirs/demo/model.keras"))
    batches = pipeline.eval_batches(split, spec, batch_size=32)

    stream = train_stream.train_batches(split, TrainSpec.from_config(config), start_step=step)

Plain data: this module imports neither TensorFlow nor Keras, so any layer
can hold a spec.
"""

import dataclasses

from dcl_keras import contract


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """How an evaluation image becomes the model's input: resize, then centre crop.

    Evaluation, export, prediction, analysis and the report all preprocess
    through one spec (`augment.eval_preprocess`), so they see the same pixels.

    Args:
        image_size: int, the crop side in pixels (the model's input side).
        resize_size: int, the side the image is resized to before cropping.
        resampling: str, how the resize filters, one of
            `contract.RESAMPLING` ("pillow": the reference code's steps).
    """

    image_size: int
    resize_size: int
    resampling: str = "pillow"

    def __post_init__(self):
        if self.resampling not in contract.RESAMPLING:
            raise ValueError(
                f"`resampling` must be one of {contract.RESAMPLING}. Received: resampling={self.resampling!r}"
            )

    @classmethod
    def from_config(cls, config):
        """The spec of a config's `input` section (the run's own preprocessing)."""
        inputs = config.input
        return cls(int(inputs.image_size), int(inputs.resize_size), inputs.resampling)

    @classmethod
    def from_model(cls, model, resize_size=None):
        """The spec a trained model carries: its input side, and the resize a DCLModel records.

        A plain classifier (no `resize_size` attribute) resizes to its input
        side with the pillow resampling; `resize_size` overrides the model's.
        """
        image_size = int(model.input_shape[1])
        resize_size = int(resize_size or getattr(model, "resize_size", None) or image_size)
        return cls(image_size, resize_size, getattr(model, "resampling", None) or "pillow")


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """The DCL training stream's content, whole (`train_stream.train_batches`).

    What is left out is where a process stands in the stream: its first step
    and its share of every batch, the arguments of `train_batches`.

    Args:
        seed: int, the run's seed.
        batch_size: int, examples per global batch (images per batch is
            batch_size * (originals + destructed)).
        image_size, resize_size: crop side and resize side, pixels.
        rotation: float, max absolute rotation in degrees (0 disables).
        resampling: how the augmentation resamples, one of
            `contract.RESAMPLING` ("pillow": the reference code's steps).
        n, k: RCM grid and neighbourhood.
        originals, destructed: views per example (1:1 by default).
        bad_files: "skip" or "strict".
        rcm_in_pipeline: False leaves destruction and pairing to the device
            (`dcl_keras.models.region_confusion`): the stream then yields the
            augmented originals with their uint32 example keys, and the
            labels.
        reducing_gap: JPEG draft decoding (`pipeline.decode_image`); 0
            decodes every pixel.
        shuffle_buffer: encoded records in the shuffle buffer of TFDS and
            record splits.
        cache_mb: with the pillow resampling, a file split's images are
            decoded once and held in memory when they fit in this many MiB
            (`train_stream.decode_in_memory`), and augmented, destructed and
            paired a whole batch at a time (the same batches, a fraction of
            the work); 0 reads every file every epoch.
    """

    seed: int
    batch_size: int
    image_size: int
    resize_size: int
    rotation: float = 15.0
    resampling: str = "pillow"
    n: int = 7
    k: int = 2
    originals: int = 1
    destructed: int = 1
    bad_files: str = "skip"
    rcm_in_pipeline: bool = True
    reducing_gap: float = 0.0
    shuffle_buffer: int = 4096
    cache_mb: int = 0

    def __post_init__(self):
        contract.validate_rcm_args(self.n, self.k, self.image_size)
        contract.validate_ratio(self.originals, self.destructed)
        if self.resize_size < self.image_size:
            raise ValueError(
                f"`resize_size` must be >= `image_size` ({self.image_size}) so the crop fits. "
                f"Received: resize_size={self.resize_size}"
            )
        if self.bad_files not in contract.BAD_FILE_POLICIES:
            raise ValueError(
                f"`bad_files` must be one of {contract.BAD_FILE_POLICIES}. Received: bad_files={self.bad_files!r}"
            )
        EvalSpec(self.image_size, self.resize_size, self.resampling)  # Checks the resampling.

    @classmethod
    def from_config(cls, config):
        """The training stream a config asks for."""
        return cls(
            seed=config.seed,
            batch_size=config.input.batch_size,
            image_size=config.input.image_size,
            resize_size=config.input.resize_size,
            rotation=config.input.rotation,
            resampling=config.input.resampling,
            n=config.rcm.n,
            k=config.rcm.k,
            originals=config.rcm.originals,
            destructed=config.rcm.destructed,
            bad_files=config.data.bad_files,
            rcm_in_pipeline=config.rcm.placement == "pipeline",
            reducing_gap=config.input.jpeg_reducing_gap,
            shuffle_buffer=config.data.tfds_shuffle_buffer,
            cache_mb=config.input.cache_mb,
        )

    @property
    def eval_spec(self):
        """The evaluation spec of the same sizes and resampling (validation, the exported model)."""
        return EvalSpec(self.image_size, self.resize_size, self.resampling)
