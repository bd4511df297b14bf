"""A PNG grid of originals and their destructed copies, N x N grid drawn (Fig. 3 of the paper)."""

import numpy as np
from PIL import Image, ImageDraw

from dcl_keras.data import pipeline


def rcm_grid(
    split, *, image_size, resize_size, n, k, num_images=4, seed=0, rotation=15.0, margin=4, resampling="pillow"
):
    """A PIL image: one row per example, the original on the left, its destructed copy on the right.

    The images come from the real training pipeline (same augmentation and
    RCM as in training), so the picture shows exactly what the model sees.
    """
    ds = pipeline.train_batches(
        split,
        seed=seed,
        batch_size=1,
        image_size=image_size,
        resize_size=resize_size,
        rotation=rotation,
        resampling=resampling,
        n=n,
        k=k,
    )
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
