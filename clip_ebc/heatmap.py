"""Heatmaps: a density map drawn over its image, with a colour bar and the count.

matplotlib is imported only here, and only when a heatmap is drawn; rendering uses the Agg canvas
directly (no pyplot, no global state), so it works headless and in threads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .errors import ConfigError

if TYPE_CHECKING:
    from .zones import Zone

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
ZONE_COLOURS = ("#00e5ff", "#b6ff3b", "#ff5ad9", "#ffffff", "#5c9dff", "#ffd23f")
"""Zone outline colours, in turn: bright hues that stand out from the image and the colour map."""


def render_heatmap(
    image: np.ndarray,
    density: np.ndarray,
    *,
    count: float | None = None,
    block_size: int = 8,
    extent: tuple[float, float] | None = None,
    opacity: float = 0.5,
    cmap: str = "magma",
    side_by_side: bool = False,
    zones: Sequence[Zone] | None = None,
    zone_counts: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Draw ``density`` over ``image`` and return the picture as RGB uint8.

    image: (H, W, 3) uint8. density: (h, w) people per ``block_size`` block, stretched (bilinear) over
    ``extent`` = (height, width) image pixels from the top-left corner (default: the whole image). The colour map is applied with an opacity that grows with the density (up to
    ``opacity``), so empty areas stay visible; a colour bar in people per block and the count are drawn
    inside the picture. Returns (H, W, 3), or (H, 2W, 3) with the plain image on the left when
    ``side_by_side``. ``zones`` (:class:`~clip_ebc.zones.Zone`) are outlined on the density panel and
    labelled with their names, and their counts where ``zone_counts`` (people by zone name) has them.
    """
    from matplotlib import colormaps, patheffects
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    if not 0.0 <= opacity <= 1.0:
        raise ConfigError(f"opacity must be between 0 and 1, got {opacity}.")
    try:
        colormap = colormaps[cmap]
    except KeyError as e:
        raise ConfigError(f"{cmap!r} is not a matplotlib colour map (try magma, inferno, viridis).") from e
    height, width = image.shape[:2]
    density = np.asarray(density, dtype=np.float32)
    vmax = float(density.max()) if density.size and density.max() > 0 else 1.0
    norm = Normalize(vmin=0.0, vmax=vmax)
    rgba = colormap(norm(density))
    rgba[..., 3] = opacity * np.sqrt(np.clip(density / vmax, 0.0, 1.0))

    panels = 2 if side_by_side else 1
    dpi = 100
    fig = Figure(figsize=(panels * width / dpi, height / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    font_pt = max(7.0, min(height, width) / 28) * 72 / dpi
    outline = [patheffects.withStroke(linewidth=max(1.0, font_pt / 6), foreground="black")]
    for panel in range(panels):
        ax = fig.add_axes((panel / panels, 0.0, 1.0 / panels, 1.0))
        ax.set_axis_off()
        ax.imshow(image, extent=(0, width, height, 0), interpolation="antialiased")
        if panel == panels - 1:
            gh, gw = extent or (height, width)
            ax.imshow(rgba, extent=(0, gw, gh, 0), interpolation="bilinear")
            cax = ax.inset_axes((0.955, 0.12, 0.02, 0.72))
            bar = fig.colorbar(ScalarMappable(norm=norm, cmap=colormap), cax=cax)
            # ticks and label left of the bar, so they stay inside the picture
            cax.yaxis.set_ticks_position("left")
            cax.yaxis.set_label_position("left")
            bar.set_label(f"people per {block_size}x{block_size} block", color="white", fontsize=font_pt * 0.8,
                          path_effects=outline)
            cax.tick_params(colors="white", labelsize=font_pt * 0.7)
            for label in cax.get_yticklabels():
                label.set_path_effects(outline)
            bar.outline.set_edgecolor("white")
            if count is not None:
                ax.text(0.5, 0.985, f"{count:,.1f} people", transform=ax.transAxes, ha="center", va="top",
                        color="white", fontsize=font_pt,
                        bbox={"facecolor": "black", "alpha": 0.55, "edgecolor": "none", "pad": 3})
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        if zones and panel == panels - 1:
            _draw_zones(ax, canvas, zones, zone_counts or {}, (height, width), font_pt, outline)
    canvas.draw()
    out = np.asarray(canvas.buffer_rgba())[..., :3]
    if out.shape[:2] != (height, panels * width):  # figure sizes are rounded to whole pixels
        out = np.asarray(Image.fromarray(out).resize((panels * width, height), Image.BICUBIC))
    return np.ascontiguousarray(out)


def _draw_zones(ax: Any, canvas: Any, zones: Sequence[Zone], counts: Mapping[str, float],
                image_size: tuple[int, int], font_pt: float, text_outline: list) -> None:
    """Outline each zone (a bright line over a dark stroke, visible on any background) and label it
    "name: count" at a point inside it, nudged so the label stays inside the picture."""
    from matplotlib import patheffects
    from matplotlib.patches import Polygon

    from .zones import interior_point

    height, width = image_size
    line_pt = max(1.5, min(height, width) / 300) * 72 / ax.figure.dpi
    stroke = [patheffects.withStroke(linewidth=line_pt * 2.5, foreground="black")]
    renderer = canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    for k, zone in enumerate(zones):
        pts = zone.pixels(image_size)
        colour = ZONE_COLOURS[k % len(ZONE_COLOURS)]
        ax.add_patch(Polygon(pts, closed=True, fill=False, edgecolor=colour, linewidth=line_pt, joinstyle="round",
                             path_effects=stroke, zorder=3))
        count = counts.get(zone.name)
        label = zone.name if count is None else f"{zone.name}: {count:,.1f}"
        x, y = interior_point(pts)
        text = ax.text(x, y, label, ha="center", va="center", color="white", fontsize=font_pt * 0.8, zorder=4,
                       path_effects=text_outline,
                       bbox={"facecolor": "black", "alpha": 0.55, "edgecolor": colour, "pad": 2})
        box = text.get_window_extent(renderer).padded(4)  # + the label's box
        shift_x = max(frame.x0 - box.x0, 0.0) - max(box.x1 - frame.x1, 0.0)
        shift_y = max(frame.y0 - box.y0, 0.0) - max(box.y1 - frame.y1, 0.0)
        if shift_x or shift_y:
            px, py = ax.transData.transform((x, y))
            text.set_position(ax.transData.inverted().transform((px + shift_x, py + shift_y)))


def save_heatmap(
    path: str | os.PathLike[str],
    image: np.ndarray,
    density: np.ndarray,
    **kwargs,
) -> Path:
    """Render with :func:`render_heatmap` (``kwargs`` as there, ``zones`` and ``zone_counts`` included) and
    save as PNG or JPEG (by the path's suffix); returns the path."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"heatmap file {path} must end in .png, .jpg or .jpeg.")
    picture = render_heatmap(image, density, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(path, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return path
