"""The plots of report.html, each drawn in the project's one style (dcl_keras.viz.figures) and inlined as HTML."""

import numpy as np

from dcl_keras.report import page
from dcl_keras.viz import figures


def figure_html(figure, alt, caption=""):
    """A Figure as an inlined PNG in a <figure> (`caption` is HTML)."""
    return page.image(page.png_uri(lambda f: figures.save_png(figure, f)), alt, caption)


def curves(title, metrics, names, ylabel):
    """Each column `names` of metrics.csv over the epochs, its validation column dashed."""
    from matplotlib.ticker import MaxNLocator

    figure, ax = figures.figure(7.0, 3.4)
    epochs = metrics["epoch"]
    marker = "o" if len(epochs) < 30 else None
    for i, name in enumerate(names):
        color = f"C{i % 10}"
        ax.plot(epochs, metrics[name], color=color, marker=marker, markersize=3, label=name)
        if f"val_{name}" in metrics and not np.all(np.isnan(metrics[f"val_{name}"])):
            valid = ~np.isnan(metrics[f"val_{name}"])
            ax.plot(
                epochs[valid],
                metrics[f"val_{name}"][valid],
                "--",
                color=color,
                marker=marker,
                markersize=3,
                label=f"val {name}",
            )
    ax.set_title(title, fontsize=10)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    figures.legend_outside(ax)
    return figure_html(figure, title)


def learning_rate(epochs, rates, head_multiplier, caption):
    """The backbone's learning rate over the epochs, and the heads' (dashed) when they run at another rate."""
    figure, ax = figures.figure(7.0, 3.4)
    ax.plot(epochs, rates, color="C3", label="backbone")
    if head_multiplier != 1:
        ax.plot(epochs, rates * head_multiplier, "--", color="C4", label="heads")
    ax.set_ylim(bottom=0)
    figures.legend_outside(ax)
    ax.set_title("Learning rate", fontsize=10)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    return figure_html(figure, "Learning rate", caption)


def attribute_accuracy(attributes):
    """Bars of the accuracy per attribute next to its chance level ({name: {"accuracy", "chance"}})."""
    figure, ax = figures.figure(2.6 + 1.1 * len(attributes), 2.8)
    x = np.arange(len(attributes))
    ax.bar(x - 0.2, [a["accuracy"] for a in attributes.values()], 0.4, label="accuracy")
    ax.bar(x + 0.2, [a["chance"] for a in attributes.values()], 0.4, color="#afb8c1", label="chance")
    ax.set_xticks(x, list(attributes))
    ax.set_ylim(0, 1)
    figures.legend_outside(ax)
    ax.set_title("Per-attribute accuracy", fontsize=10)
    return figure_html(figure, "Per-attribute accuracy")


def sweep_points(metric, rows, summary):
    """Each seed of each grid point as a point (its seed written beside it), then the point's mean +- std."""
    points = list(summary)
    figure, ax = figures.figure(max(5.5, 1.3 * len(points) + 2.6), 3.6)
    labels = {"seeds": "seeds (number: the seed)", "mean": "mean +- sample std"}  # Each in the legend once.
    for i, point in enumerate(points):
        seeds = [(row["seed"], row[metric]) for row in rows if row["point"] == point and metric in row]
        x = i - 0.1 + (np.linspace(-0.12, 0.12, len(seeds)) if len(seeds) > 1 else np.zeros(len(seeds)))
        if seeds:
            ax.scatter(
                x, [value for _, value in seeds], s=16, color="#6e7781", zorder=3, label=labels.pop("seeds", None)
            )
        for at, (seed, value) in zip(x, seeds, strict=True):
            ax.annotate(str(seed), (at, value), xytext=(3, 2), textcoords="offset points", fontsize=6)
        if metric in summary[point]["stats"]:
            mean, std, _ = summary[point]["stats"][metric]
            ax.errorbar(
                i + 0.18, mean, yerr=std or 0, fmt="o", color="C0", capsize=4, zorder=4, label=labels.pop("mean", None)
            )
    slanted = max(map(len, points)) > 12
    ax.set_xticks(range(len(points)), points, rotation=20 if slanted else 0, ha="right" if slanted else "center")
    ax.set_xlim(-0.6, len(points) - 0.4)
    ax.set_ylabel(metric)
    ax.set_title(metric, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    figures.legend_outside(ax)
    return figure_html(figure, f"{metric} per grid point")
