"""The seeds' pictures: loss curves, latent scatter, 2-D manifold, per-class sample grid."""
from __future__ import annotations

from statistics import NormalDist

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def tile(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(rows*cols, H, W) -> one (rows*H, cols*W) mosaic; missing cells stay black."""
    h, w = images.shape[1:3]
    out = np.zeros((rows * h, cols * w), dtype=images.dtype)
    for i, img in enumerate(images[: rows * cols]):
        r, c = divmod(i, cols)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = img
    return out


def save_image(mosaic: np.ndarray, path: str, title: str | None = None, cmap="gray"):
    fig = plt.figure(figsize=(mosaic.shape[1] / 56 + 0.5, mosaic.shape[0] / 56 + (0.8 if title else 0.5)))
    plt.imshow(mosaic, cmap=cmap, vmin=0, vmax=255)
    plt.axis("off")
    if title:
        plt.title(title)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def loss_curves(history: dict, path: str):
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    for ax, key in zip(axes, ("loss", "reconstruction_loss", "kl_loss")):
        ax.plot(history.get(key, []), label="train")
        if f"val_{key}" in history:
            ax.plot(history[f"val_{key}"], label="validation")
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def project_2d(z: np.ndarray) -> tuple[np.ndarray, str]:
    if z.shape[1] <= 2:
        return z[:, :2], "z"
    centred = z - z.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T, "PCA of z"


def latent_scatter(z: np.ndarray, labels: np.ndarray, path: str, title="latent space (encoded means)"):
    xy, axis = project_2d(z)
    fig = plt.figure(figsize=(7, 6))
    unl = labels < 0
    if unl.any():
        plt.scatter(xy[unl, 0], xy[unl, 1], s=2, c="lightgray", label="unlabeled")
    sc = plt.scatter(xy[~unl, 0], xy[~unl, 1], s=2, c=labels[~unl], cmap="tab10", vmin=-0.5, vmax=9.5)
    plt.colorbar(sc, ticks=range(10), label="class")
    plt.xlabel(f"{axis} [0]")
    plt.ylabel(f"{axis} [1]")
    plt.title(title)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def class_means_plane(z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, str]:
    """z projected onto the plane that best spans the class means (PCA of the means): a high-dimensional VAE
    latent's own leading PCA axes mix the classes into one blob. Falls back to project_2d below 3 classes."""
    classes = np.unique(labels[labels >= 0])
    if z.shape[1] <= 2 or len(classes) < 3:
        return project_2d(z)
    centred = z - z.mean(axis=0)
    means = np.stack([centred[labels == c].mean(axis=0) for c in classes])
    _, _, vt = np.linalg.svd(means - means.mean(axis=0), full_matrices=False)
    return centred @ vt[:2].T, "class-means plane of z"


def latent_class_panels(z: np.ndarray, labels: np.ndarray, path: str, title: str, cols: int = 4):
    """All codes coloured by class with a legend, then one small panel per class: that class in colour over
    every other code in grey, on shared axes. Unlabeled codes (-1) are grey everywhere."""
    xy, axis = class_means_plane(z, labels)
    classes = [int(c) for c in np.unique(labels[labels >= 0])]
    panels = [None, *classes] if classes else [None]
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.5 * rows + 0.5), sharex=True, sharey=True,
                             squeeze=False)
    colour = {c: plt.cm.tab10(c % 10) for c in classes}
    for ax, c in zip(axes.flat, panels):
        if c is None:
            ax.scatter(xy[labels < 0, 0], xy[labels < 0, 1], s=1, color="lightgray")
            for k in classes:
                ax.scatter(xy[labels == k, 0], xy[labels == k, 1], s=1, color=colour[k], label=str(k))
            ax.set_title("all classes" if classes else "unlabeled", fontsize=11)
        else:
            ax.scatter(xy[labels != c, 0], xy[labels != c, 1], s=1, color="lightgray")
            ax.scatter(xy[labels == c, 0], xy[labels == c, 1], s=2, color=colour[c])
            ax.set_title(f"class {c} ({int((labels == c).sum()):,})", fontsize=11)
        ax.tick_params(labelsize=8)
    spare = list(axes.flat)[len(panels):]
    for ax in spare:
        ax.axis("off")
    if classes:  # in a spare cell when there is one, so it hides no points
        (spare[0] if spare else axes.flat[0]).legend(*axes.flat[0].get_legend_handles_labels(), title="class",
                                                     fontsize=9, markerscale=6, ncol=2, loc="center")
    fig.supxlabel(f"{axis} [0]", fontsize=10)
    fig.supylabel(f"{axis} [1]", fontsize=10)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def manifold_grid(decode, path: str, n: int = 20):
    """Decode a grid over the 5%..95% quantiles of N(0, 1) in each of 2 latent dims (seeds 001/004)."""
    q = np.array([NormalDist().inv_cdf(p) for p in np.linspace(0.05, 0.95, n)], dtype=np.float32)
    zz = np.stack(np.meshgrid(q, q[::-1]), axis=-1).reshape(-1, 2)
    save_image(tile(decode(zz), n, n), path, "latent manifold (2-D)")


def class_grid(images: np.ndarray, labels: np.ndarray, per_class: int, path: str, title: str) -> list[int]:
    """Save a mosaic with a row per label (ascending; -1 = unlabeled), the first `per_class` images of each, short
    rows padded black. The title is `title` followed by the row names. Returns the labels, one per row."""
    classes = sorted(set(np.asarray(labels).tolist()))
    rows = [images[labels == c][:per_class] for c in classes]
    cells = np.zeros((len(classes) * per_class,) + images.shape[1:], np.uint8)
    for r, picked in enumerate(rows):
        cells[r * per_class:r * per_class + len(picked)] = picked
    names = ", ".join("unlabeled" if c < 0 else str(c) for c in classes)
    save_image(tile(cells, len(classes), per_class), path, title + names)
    return classes
