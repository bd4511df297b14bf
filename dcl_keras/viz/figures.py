"""One matplotlib style for every picture of the project: report.html's plots, evaluation's PNGs, the CAM grids.

A picture is a `matplotlib.figure.Figure` on the Agg canvas, never pyplot:
no global state, no figure to close, nothing that needs a display, so it
is safe in a training process and in threads. The layout is matplotlib's
constrained layout, and every PNG is written at `DPI`.

    from dcl_keras.viz import figures
    figure, ax = figures.figure(7.0, 3.4)
    ax.plot([1, 2, 3])
    figures.save_png(figure, "curve.png")
"""

DPI = 100


def figure(width, height, rows=None, columns=None):
    """A Figure of `width` x `height` inches and its axes: one, or a [rows, columns] array of them.

    Args:
        width: float, inches.
        height: float, inches.
        rows: int or None, rows of a grid of axes (None: a single axes).
        columns: int, columns of that grid.
    """
    from matplotlib.figure import Figure

    drawing = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    if rows is None:
        return drawing, drawing.add_subplot()
    return drawing, drawing.subplots(rows, columns, squeeze=False)


def legend_outside(ax):
    """The legend right of the axes, clear of the curves."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def save_png(drawing, target):
    """Writes a Figure as PNG to `target`, a path or a binary file object."""
    drawing.savefig(target, format="png", dpi=DPI)
