"""Pictures of what a model does: the error gallery, the confusion matrix, training curves.

matplotlib and torchvision are imported inside the functions, so scripts that never plot
do not pay for them. Figures are built with matplotlib.figure.Figure and its Agg canvas,
never pyplot: no global backend is switched and nothing opens a window. Every file is
written atomically (captchakit.files.atomic_path).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from captchakit.files import atomic_path

SCALE = 2  # screen pixels per image pixel in the gallery
DPI = 100
GALLERY_COLUMNS = 6
BAND = 40  # image pixels of text under each gallery image (two lines)
GAP = 6  # image pixels between gallery cells
MARK = "#d62728"  # wrong characters, as read
TRUE_MARK = "#1a7f37"  # the characters they should have been
MAX_CLASSES = 40  # confusion.png draws every class up to this many, past it only the confused ones


def _figure(width_in: float, height_in: float, **kwargs):
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=DPI, **kwargs)


def _save(fig, path) -> None:
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, facecolor="white")


def _cells(images: np.ndarray, columns: int):
    """(k, H, W) grey or (k, H, W, 3) colour uint8 -> one grid image, (H', W') or (H', W', 3),
    with a white text band under each captcha."""
    import torch
    from torchvision.utils import make_grid

    k, h, w = images.shape[:3]
    pixels = torch.from_numpy(np.ascontiguousarray(images)).float() / 255.0
    x = torch.ones(k, 1 if images.ndim == 3 else 3, h + BAND, w)
    x[:, :, :h] = pixels[:, None] if images.ndim == 3 else pixels.permute(0, 3, 1, 2)
    grid = make_grid(x, nrow=columns, padding=GAP, pad_value=1.0)  # (3, rows*(h+BAND+GAP)+GAP, ...)
    return grid[0].numpy() if images.ndim == 3 else grid.permute(1, 2, 0).numpy()


def _aligned(analysis, row: int) -> list[tuple[str, str, bool]]:
    """(true char, read char, wrong) per position; '_' stands for a missing character."""
    pad, charset = analysis.codec.pad, analysis.codec.charset
    out = []
    for t, g in zip(analysis.truth[row].tolist(), analysis.guess[row].tolist(), strict=True):
        if t == pad and g == pad:
            continue
        out.append(("_" if t == pad else charset[t], "_" if g == pad else charset[g], t != g))
    return out


def error_gallery(path, images: np.ndarray, analysis, rows: list[int], result) -> int:
    """errors.png: misread captchas with their true and read text, wrong characters marked.

    `images` (k, H, W) or (k, H, W, 3) are the captchas of `rows` as the model saw them. Returns k.
    """
    total, n = len(analysis.errors), len(analysis.truth)
    if not rows:
        fig = _figure(6, 1.2)
        fig.text(0.5, 0.5, f"no misread captchas: all {n:,} read right", ha="center", va="center", fontsize=14)
        _save(fig, path)
        return 0
    k, h, w = images.shape[:3]
    columns = min(GALLERY_COLUMNS, k)
    grid = _cells(images, columns)
    gh, gw = grid.shape[:2]
    title_in = 0.7
    fig = _figure(max(gw * SCALE / DPI, 5.5), gh * SCALE / DPI + title_in)
    ax = fig.add_axes((0, 0, 1, 1 - title_in / fig.get_figheight()))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xlim(-0.5, gw - 0.5)
    ax.set_axis_off()
    shown = f"all {k}" if k == total else f"the {k} most confident"
    fig.suptitle(
        f"{total:,} of {n:,} captchas misread; {shown}, most confident first\ntrue text above, text read below; wrong characters in colour",
        fontsize=11,
        y=1 - 0.08 / fig.get_figheight(),
        va="top",
    )
    # Character slots in image pixels: fixed steps, so a monospace font lines both texts up.
    fontsize = 16
    step = fontsize * 0.62 / 72 * DPI / SCALE
    for cell, row in enumerate(rows):
        x0 = GAP + (cell % columns) * (w + GAP)
        y0 = GAP + (cell // columns) * (h + BAND + GAP) + h
        _cell_text(ax, x0, y0, w, step, fontsize, _aligned(analysis, row), result.predictions[row][3])
    _save(fig, path)
    return k


def _cell_text(ax, x0: float, y0: float, w: int, step: float, fontsize: int, chars, confidence: float) -> None:
    lines = ((y0 + BAND * 0.3, "true", 0, TRUE_MARK), (y0 + BAND * 0.75, "read", 1, MARK))
    start = x0 + 2 + 5 * step
    for y, name, side, colour in lines:
        ax.text(x0 + 2, y, name, fontsize=fontsize - 3, color="0.45", family="monospace", va="center")
        for p, triple in enumerate(chars):
            wrong = triple[2]
            ax.text(
                start + (p + 0.5) * step,
                y,
                triple[side],
                fontsize=fontsize,
                family="monospace",
                ha="center",
                va="center",
                color=colour if wrong else "black",
                fontweight="bold" if wrong else "normal",
            )
    ax.text(x0 + w - 2, y0 + BAND * 0.75, f"{confidence:.0%}", fontsize=fontsize - 3, color="0.3", ha="right", va="center")


def confusion_figure(path, analysis) -> None:
    """confusion.png: how often each true character (row) was read as each other one (column).

    The diagonal (read right) is left blank so that the mistakes carry the colour scale; each
    row's accuracy is written on the right. Past MAX_CLASSES classes only those in some
    confusion are drawn.
    """
    from matplotlib.ticker import MaxNLocator

    matrix = analysis.matrix
    k = len(matrix)
    off = matrix * (1 - np.eye(k, dtype=matrix.dtype))
    keep = np.arange(k)
    if k > MAX_CLASSES:
        keep = np.flatnonzero(off.sum(0) + off.sum(1)) if off.any() else keep[:MAX_CLASSES]
    m, names = off[np.ix_(keep, keep)], [analysis.class_name(int(i)).strip("()") for i in keep]
    size = 2.5 + 0.3 * len(keep)
    fig = _figure(size + 1.6, size, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_equal(m, 0), cmap="OrRd", vmin=0, vmax=max(int(m.max()), 1), interpolation="nearest")
    for i, j in zip(*np.nonzero(m), strict=True):
        dark = m[i, j] > 0.6 * m.max()
        ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ticks = np.arange(len(keep))
    _label_axes(ax, ticks, names)
    totals = matrix[keep].sum(1)
    right = [f"{matrix[i, i] / t:.0%}" if t else "" for i, t in zip(keep, totals, strict=True)]
    twin = ax.secondary_yaxis("right")
    twin.set_yticks(ticks, right, fontsize=8)
    twin.set_ylabel("share read right")
    bar = fig.colorbar(image, ax=ax, shrink=0.6, pad=0.02, label="times read as")
    bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"character confusions: {int(off.sum()):,} wrong of {int(matrix.sum()):,} positions (diagonal left out)", fontsize=12)
    _save(fig, path)


def _label_axes(ax, ticks, names: list[str]) -> None:
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_ticks(ticks, names, fontsize=9, family="monospace")
        axis.set_ticks(ticks[:-1] + 0.5, minor=True)
    ax.tick_params(top=True, labeltop=True)
    ax.tick_params(which="minor", length=0)
    ax.grid(which="minor", color="0.9", linewidth=0.5)
    ax.set_ylabel("true character")
    ax.set_xlabel("read as")


def write_curves(rows: list[dict], path) -> None:
    """curves.png from history.csv rows: losses and validation accuracy against epochs."""
    if not rows:
        return
    epochs = [int(r["epoch"]) for r in rows]

    def col(name: str) -> list[float]:
        return [float(r[name]) for r in rows]

    fig = _figure(11, 4.2)
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, col("train_loss"), "o-", label="train (label-smoothed)")
    loss_ax.plot(epochs, col("val_loss"), "o-", label="validation")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy per character", title="loss")
    accuracy, chars = col("val_accuracy"), col("val_char_accuracy")
    acc_ax.plot(epochs, [100 * a for a in accuracy], "o-", label="whole captcha")
    acc_ax.plot(epochs, [100 * a for a in chars], "o-", label="characters")
    best = int(np.argmax(accuracy))
    below = accuracy[best] > 0.85  # keep the label inside the axes
    acc_ax.annotate(
        f"best {accuracy[best]:.1%}",
        (epochs[best], 100 * accuracy[best]),
        textcoords="offset points",
        xytext=(0, -14 if below else 9),
        ha="center",
        va="top" if below else "bottom",
    )
    acc_ax.set(xlabel="epoch", ylabel="%", ylim=(0, 101), title="validation accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
        ax.set_xlim(0.5, max(epochs[-1], 2) + 0.5)
        ax.xaxis.get_major_locator().set_params(integer=True)
    run = Path(path).parent.name.removesuffix("_run")
    fig.suptitle(f"training of {run}: {len(rows)} epoch(s), {float(rows[-1]['elapsed_s']) / 60:.1f} min")
    fig.tight_layout()
    _save(fig, path)
