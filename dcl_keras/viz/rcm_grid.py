"""A PNG grid of originals and their destructed copies, N x N grid drawn (Fig. 3 of the paper)."""

import dataclasses

import numpy as np
from PIL import Image, ImageDraw

from dcl_keras.data import train_stream


def rcm_grid(split, spec, *, num_images=4, margin=4):
    """A PIL image: one row per example, the original on the left, its destructed copy on the right.

    The images come from the real training stream (same augmentation and RCM
    as in training), so the picture shows exactly what the model sees.

        grid = rcm_grid(splits.train, TrainSpec.from_config(config), num_images=6)

    Args:
        split: the training split (a FileSplit, TfdsSplit or RecordsSplit).
        spec: `specs.TrainSpec`, the run's stream: its seed, sizes,
            augmentation, decoding and RCM grid. The grid takes one example a
            batch, one original and one destructed copy of it, destroyed in
            the input pipeline (the device's RCM destroys alike), and read
            from the files (nothing is held in memory for a few images).
        num_images: int, rows (examples).
        margin: int, pixels around each cell.
    """
    spec = dataclasses.replace(spec, batch_size=1, originals=1, destructed=1, rcm_in_pipeline=True, cache_mb=0)
    image_size, n = spec.image_size, spec.n
    ds = train_stream.train_batches(split, spec)
    pairs = [images for images, _ in ds.take(num_images).as_numpy_iterator()]
    cell = image_size + margin
    canvas = Image.new("RGB", (2 * cell + margin, num_images * cell + margin), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    step = image_size / n
    for row, images in enumerate(pairs):
        for col, image in enumerate(images):
            x0, y0 = margin + col * cell, margin + row * cell
            canvas.paste(Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)), (x0, y0))
            for i in range(1, n):
                offset = round(i * step)
                draw.line([(x0 + offset, y0), (x0 + offset, y0 + image_size - 1)], fill=(255, 255, 0))
                draw.line([(x0, y0 + offset), (x0 + image_size - 1, y0 + offset)], fill=(255, 255, 0))
    return canvas
