"""Heatmaps: a density map drawn over its image, with a colour bar and the count.

matplotlib is imported only here, and only when a heatmap is drawn; rendering uses the Agg canvas
directly (no pyplot, no global state), so it works headless and in threads.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import ConfigError

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


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
) -> np.ndarray:
    """Draw ``density`` over ``image`` and return the picture as RGB uint8.

    image: (H, W, 3) uint8. density: (h, w) people per ``block_size`` block, stretched (bilinear) over
    ``extent`` = (height, width) image pixels from the top-left corner (default: the whole image). The colour map is applied with an opacity that grows with the density (up to
    ``opacity``), so empty areas stay visible; a colour bar in people per block and the count are drawn
    inside the picture. Returns (H, W, 3), or (H, 2W, 3) with the plain image on the left when
    ``side_by_side``.
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
    canvas.draw()
    out = np.asarray(canvas.buffer_rgba())[..., :3]
    if out.shape[:2] != (height, panels * width):  # figure sizes are rounded to whole pixels
        out = np.asarray(Image.fromarray(out).resize((panels * width, height), Image.BICUBIC))
    return np.ascontiguousarray(out)


def save_heatmap(
    path: str | os.PathLike[str],
    image: np.ndarray,
    density: np.ndarray,
    **kwargs,
) -> Path:
    """Render with :func:`render_heatmap` and save as PNG or JPEG (by the path's suffix); returns the path."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"heatmap file {path} must end in .png, .jpg or .jpeg.")
    picture = render_heatmap(image, density, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(path, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return path
