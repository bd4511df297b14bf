"""Pictures of where a model looks: CAM overlay grids and per-filter response scatters (Figs. 5, 6)."""

import numpy as np

from dcl_keras.viz import figures


def plot_cam_grid(images, titles, cams, path):
    """One row per image: the image, then each model's CAM over it.

    Args:
        images: uint8 [R, S, S, 3].
        titles: list of R row labels (e.g. the true class).
        cams: {model name: ([R, S, S] maps, [R] captions)}, in column order.
        path: the PNG to write (a file path or a binary file object).
    """
    columns = 1 + len(cams)
    fig, axes = figures.figure(2.4 * columns, 2.5 * len(images), len(images), columns)
    for row, image in enumerate(images):
        axes[row, 0].imshow(image)
        axes[row, 0].set_title(titles[row], fontsize=7)
        for col, (name, (maps, captions)) in enumerate(cams.items(), start=1):
            cam = maps[row] - maps[row].min()
            cam = cam / max(float(cam.max()), 1e-12)
            axes[row, col].imshow(image)
            axes[row, col].imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            peak = np.unravel_index(np.argmax(cam), cam.shape)
            axes[row, col].plot(peak[1], peak[0], "w+", markersize=8)
            axes[row, col].set_title(f"{name}\n{captions[row]}", fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle("Class activation maps of the true class (+: peak)", fontsize=9)
    figures.save_png(fig, path)


def plot_responses(responses, titles, path):
    """One scatter per image: r(I, c) against r(phi(I), c) per filter, coloured by delta_k when known."""
    fig, axes = figures.figure(4 * len(responses), 3.8, 1, len(responses))
    for ax, response, title in zip(axes[0], responses, titles, strict=True):
        x, y, delta = response["r_original"], response["r_destructed"], response["delta"]
        if delta is None:
            ax.scatter(x, y, s=6, c="tab:blue")
        else:
            limit = max(float(np.abs(delta).max()), 1e-12)
            points = ax.scatter(x, y, s=6, c=delta, cmap="coolwarm", vmin=-limit, vmax=limit)
            fig.colorbar(points, ax=ax, label="delta_k")
        low, high = min(x.min(), y.min()), max(x.max(), y.max())
        ax.plot([low, high], [low, high], "k--", linewidth=0.6)
        ax.set_xlabel("r(I, c)")
        ax.set_ylabel("r(phi(I), c)")
        ax.set_title(title, fontsize=8)
    figures.save_png(fig, path)
