"""Report figures as PNG bytes (matplotlib ``Figure`` + Agg canvas; no pyplot, so no global state).

Volumes are ``(z, y, x)`` arrays with spacing given as ``(x, y, z)`` mm (the :class:`~imaging_pipelines.core.volume.Volume`
convention); axial panels show ``(y, x)``, coronal ``(z, x)`` and sagittal ``(z, y)`` with the slice axis
up, each with its physical aspect ratio. Rasters are ``(band, y, x)`` float arrays, NaN = nodata.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap, to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from imaging_pipelines.report.thumbnails import normalise

DPI = 90
LABEL_COLOURS = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6"]


def new_figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def label_colour(value: int) -> str:
    """A fixed colour per label / class value."""
    return LABEL_COLOURS[(int(value) - 1) % len(LABEL_COLOURS)]


def _planes(volume: np.ndarray, spacing: Sequence[float], index: Sequence[int]) -> list[tuple[str, np.ndarray, float, str]]:
    """(name, 2D slice, aspect = row mm / column mm, imshow origin) for axial, coronal, sagittal at ``index`` (z, y, x)."""
    sx, sy, sz = (float(s) for s in spacing)
    z, y, x = index
    return [("axial", volume[z], sy / sx, "upper"), ("coronal", volume[:, y, :], sz / sx, "lower"),
            ("sagittal", volume[:, :, x], sz / sy, "lower")]


def _centre(labels: np.ndarray | None, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(centre index (z, y, x), extent (lo, hi) per axis): the label centroid and bounding box, else the middle."""
    if labels is not None and labels.any():
        nz = np.nonzero(labels)
        lo, hi = np.array([a.min() for a in nz]), np.array([a.max() for a in nz])
        return np.rint([a.mean() for a in nz]).astype(int), np.stack([lo, hi])
    shape = np.array(shape)
    return shape // 2, np.stack([shape // 4, (3 * shape) // 4])


def slice_montage(volume: np.ndarray, spacing: Sequence[float], overlay_labels: np.ndarray | None = None,
                  n_slices: int = 1, label_names: Mapping[int, str] | None = None, title: str = "") -> bytes:
    """Orthogonal axial / coronal / sagittal slices through the label centroid (or the volume centre).

    ``volume``: (z, y, x); ``spacing``: (x, y, z) mm; ``overlay_labels``: integer (z, y, x) on the same grid,
    drawn as outlines plus a light fill per value. ``n_slices`` rows step through the label's bounding
    box (the middle half of the volume without labels).
    """
    volume = np.asarray(volume, dtype=np.float32)
    labels = None if overlay_labels is None else np.asarray(overlay_labels)
    centre, extent = _centre(labels, volume.shape)
    offsets = [0.5] if n_slices <= 1 else np.linspace(0.0, 1.0, n_slices)
    fig = new_figure(9.0, 3.0 * len(offsets))
    image = normalise(volume)
    values = [int(v) for v in np.unique(labels) if v != 0] if labels is not None else []
    for row, frac in enumerate(offsets):
        index = centre if len(offsets) == 1 else np.rint(extent[0] + frac * (extent[1] - extent[0])).astype(int)
        index = np.clip(index, 0, np.array(volume.shape) - 1)
        label_planes = _planes(labels, spacing, index) if labels is not None else [None] * 3
        for col, ((name, plane, aspect, origin), lab) in enumerate(zip(_planes(image, spacing, index), label_planes)):
            ax = fig.add_subplot(len(offsets), 3, row * 3 + col + 1)
            ax.imshow(np.nan_to_num(plane), cmap="gray", vmin=0, vmax=1, aspect=aspect, origin=origin, interpolation="nearest")
            for value in values if lab is not None else []:
                mask = (lab[1] == value).astype(np.float32)
                if mask.any():
                    cmap = ListedColormap([(0, 0, 0, 0), to_rgba(label_colour(value), 0.3)])
                    ax.imshow(mask, cmap=cmap, vmin=0, vmax=1, aspect=aspect, origin=origin, interpolation="nearest")
                    ax.contour(mask, levels=[0.5], colors=[label_colour(value)], linewidths=1.0, origin=origin)
            ax.set_title(f"{name} {index[{'axial': 0, 'coronal': 1, 'sagittal': 2}[name]]}", fontsize=8)
            ax.set_axis_off()
    if values:
        names = label_names or {}
        fig.legend(handles=[Patch(color=label_colour(v), label=names.get(v, f"label {v}")) for v in values],
                   loc="lower center", ncol=min(len(values), 6), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    return png_bytes(fig)


def _middle_planes(array: np.ndarray, spacing: Sequence[float] | None) -> list[tuple[str, np.ndarray, float, str]]:
    if array.ndim == 2:
        return [("slice", array, 1.0, "upper")]
    return _planes(array, spacing or (1.0, 1.0, 1.0), np.array(array.shape) // 2)


def checkerboard(fixed: np.ndarray, moving: np.ndarray, squares: int = 8, spacing: Sequence[float] | None = None,
                 title: str = "") -> bytes:
    """Checkerboard of two images on the same grid (2D, or 3D shown as the three middle planes);
    each image is percentile-normalised on its own so contrasts can differ."""
    fixed, moving = np.asarray(fixed, np.float32), np.asarray(moving, np.float32)
    if fixed.shape != moving.shape:
        raise ValueError(f"checkerboard needs one grid: {fixed.shape} vs {moving.shape}")
    a, b = normalise(fixed), normalise(moving)
    tiles = [np.arange(n) * squares // max(n, 1) for n in a.shape]
    parity = sum(np.ix_(*tiles)) % 2 if a.ndim else 0
    board = np.where(parity == 0, a, b)
    panels = _middle_planes(board, spacing)
    fig = new_figure(3.0 * len(panels), 3.2)
    for i, (name, plane, aspect, origin) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(np.nan_to_num(plane), cmap="gray", vmin=0, vmax=1, aspect=aspect, origin=origin, interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.set_axis_off()
    fig.suptitle(title or "checkerboard: fixed / registered", fontsize=9)
    return png_bytes(fig)


def before_after(before: np.ndarray, after: np.ndarray, title: str, spacing_before: Sequence[float] | None = None,
                 spacing_after: Sequence[float] | None = None) -> bytes:
    """Middle axial slice (2D: the image) of ``before`` and ``after`` side by side; grids may differ."""
    fig = new_figure(6.4, 3.4)
    for i, (name, array, spacing) in enumerate((("before", before, spacing_before), ("after", after, spacing_after))):
        array = np.asarray(array, np.float32)
        _, plane, aspect, origin = _middle_planes(array, spacing)[0]
        ax = fig.add_subplot(1, 2, i + 1)
        ax.imshow(np.nan_to_num(normalise(plane)), cmap="gray", vmin=0, vmax=1, aspect=aspect, origin=origin)
        ax.set_title(name, fontsize=8)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    return png_bytes(fig)


def rgb_composite(bands: np.ndarray, band_names: Sequence[str], low: float = 2.0, high: float = 98.0) -> np.ndarray:
    """(y, x, 4) RGBA from the red / green / blue bands (else the first three), 2-98 % stretch per band;
    pixels with a NaN in any of them are transparent."""
    names = [n.lower() for n in band_names]
    picks = [names.index(n) if n in names else min(i, len(names) - 1) for i, n in enumerate(("red", "green", "blue"))]
    rgb = np.stack([normalise(bands[i], low, high) for i in picks], axis=-1)
    valid = np.isfinite(rgb).all(axis=-1)
    return np.dstack([np.nan_to_num(rgb), valid.astype(np.float32)])


def raster_map(composite: np.ndarray, band_names: Sequence[str], classes: np.ndarray | None = None,
               class_colours: Mapping[int, str] | None = None, class_names: Mapping[int, str] | None = None,
               title: str = "") -> bytes:
    """The RGB composite (NaN = transparent on black) and, when ``classes`` (y, x) is given, the class map
    (value 0 = background, not drawn) over it, side by side."""
    rgba = rgb_composite(np.asarray(composite, np.float32), band_names)
    panels = 1 if classes is None else 2
    fig = new_figure(4.2 * panels, 4.4)
    for p in range(panels):
        ax = fig.add_subplot(1, panels, p + 1)
        ax.set_facecolor("black")
        ax.imshow(rgba, interpolation="nearest")
        ax.set_title("composite (red, green, blue)" if p == 0 else "classes", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    if classes is not None:
        colours = dict(class_colours or {})
        values = [int(v) for v in np.unique(classes) if v != 0]
        overlay = np.zeros(classes.shape + (4,), np.float32)
        for v in values:
            overlay[classes == v] = to_rgba(colours.get(v, label_colour(v)), 0.6)
        ax.imshow(overlay, interpolation="nearest")
        names = class_names or {}
        fig.legend(handles=[Patch(color=colours.get(v, label_colour(v)), label=names.get(v, f"class {v}")) for v in values],
                   loc="lower center", ncol=max(1, min(len(values), 6)), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    return png_bytes(fig)


def bar_plot(values: Mapping[str, Mapping[str, float | None]], title: str, ylabel: str) -> bytes:
    """Grouped bars: ``values[group][series]`` (e.g. Dice per case and method, hectares per scene and class)."""
    groups = list(values)
    series = sorted({s for g in values.values() for s in g})
    fig = new_figure(max(4.0, 0.5 * len(groups) * max(1, len(series)) + 2.0), 3.4)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(series))
    for i, name in enumerate(series):
        heights = [float(values[g].get(name) or 0.0) for g in groups]
        ax.bar(np.arange(len(groups)) + (i - (len(series) - 1) / 2) * width, heights, width, label=name,
               color=LABEL_COLOURS[i % len(LABEL_COLOURS)])
    ax.set_xticks(np.arange(len(groups)), groups, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    if series:
        ax.legend(fontsize=7)
    return png_bytes(fig)


def box_plot(groups: Mapping[str, Sequence[float]], title: str, ylabel: str) -> bytes:
    """One box (with the points jittered over it) per group, e.g. lesion volume (mL) per class over patients."""
    names = list(groups)
    fig = new_figure(max(3.5, 1.2 * len(names) + 1.5), 3.4)
    ax = fig.add_subplot(1, 1, 1)
    data = [np.asarray(groups[n], float) for n in names]
    if names:
        ax.boxplot(data, tick_labels=names)
    rng = np.random.default_rng(0)
    for i, d in enumerate(data):
        ax.scatter(i + 1 + rng.uniform(-0.08, 0.08, d.size), d, s=12, color=LABEL_COLOURS[i % len(LABEL_COLOURS)], zorder=3)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    return png_bytes(fig)


def time_plot(series: Mapping[str, Sequence[tuple[str, float]]], title: str, ylabel: str) -> bytes:
    """Lines over ISO dates: ``series[name] = [(YYYY-MM-DD, value), ...]`` (e.g. class area in ha over time)."""
    fig = new_figure(5.5, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, points) in enumerate(series.items()):
        points = sorted(points)
        dates = np.array([p[0] for p in points], dtype="datetime64[D]")
        ax.plot(dates, [p[1] for p in points], marker="o", label=name, color=LABEL_COLOURS[i % len(LABEL_COLOURS)])
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="x", labelsize=7, rotation=30)
    ax.legend(fontsize=7)
    return png_bytes(fig)


def preview_png(png: bytes, max_width: int = 256) -> bytes:
    """A small thumbnail of a PNG (<= ``max_width`` px wide, palette-quantised: typically < 60 KB)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    if image.width > max_width:
        image = image.resize((max_width, max(1, round(image.height * max_width / image.width))), Image.LANCZOS)
    buf = io.BytesIO()
    image.quantize(colors=128).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def reliability_diagram(evaluation: dict[str, dict]) -> bytes:
    """Accuracy vs mean confidence of the non-empty bins of each split, with the diagonal of perfect calibration."""
    fig = new_figure(3.6, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="#888", lw=1, ls="--")
    for i, (split, ev) in enumerate(evaluation.items()):
        bins = [b for b in (ev.get("calibration") or {}).get("bins", []) if b["count"]]
        if bins:
            ax.plot([b["mean_confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", ms=3,
                    color=LABEL_COLOURS[i % len(LABEL_COLOURS)], label=f"{split} (ECE {ev['calibration']['ece']})")
    ax.set_xlabel("mean confidence", fontsize=8)
    ax.set_ylabel("accuracy", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    return png_bytes(fig)
