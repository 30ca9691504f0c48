"""The report's pictures, drawn with matplotlib on its Agg canvas (no display needed): each sequence's windows over
its frame timeline (inline SVG, each bar a link to its window), and a window's cameras and points seen from above
and from the side (PNG: thousands of points are lighter as pixels than as SVG elements)."""

from __future__ import annotations

import io
import re

import numpy as np
from matplotlib import colormaps, rc_context
from matplotlib.figure import Figure
from matplotlib.collections import LineCollection
from matplotlib.patches import Rectangle

from .run import SequenceEntry
from .scene import WindowScene
from .style import STATE_STYLES

FONT = {"font.size": 8, "font.family": "sans-serif", "svg.fonttype": "none", "svg.hashsalt": None}
VIEW_SIZE_IN, VIEW_DPI = (6.0, 2.9), 100  # 600 x 290 px
# Corners of WindowScene.frusta: 0 apex, 1 top left, 2 top right, 3 bottom left, 4 bottom right.
FRUSTUM_EDGES = np.array([(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (2, 4), (4, 3), (3, 1)])


def window_anchor(window_id: str) -> str:
    """The page anchor of a window's detail section."""
    return "w-" + re.sub(r"[^A-Za-z0-9_-]+", "-", window_id)


def stack_rows(spans: list[tuple[int, int]]) -> list[int]:
    """A row per span [first, last] so that spans in one row never overlap: each span takes the lowest row whose
    last span ended before it starts (spans in order of their first frame)."""
    row_ends: list[int] = []
    rows = []
    for first, last in spans:
        row = next((i for i, end in enumerate(row_ends) if end < first), len(row_ends))
        if row == len(row_ends):
            row_ends.append(last)
        else:
            row_ends[row] = last
        rows.append(row)
    return rows


def timeline_svg(sequence: SequenceEntry, linked: set[str]) -> str:
    """The sequence's windows as bars over its frames (x: frame index), stacked in rows where they overlap and
    coloured by state; a window in ``linked`` links to its detail section. Returns an ``<svg>`` element."""
    windows = [w for w in sequence.windows if w.first_frame is not None]
    rows = stack_rows([(w.first_frame, w.last_frame) for w in windows])
    num_rows = max(rows, default=0) + 1
    num_frames = max(len(sequence.frames), 1)
    with rc_context(FONT):
        height_in = 0.3 + 0.24 * num_rows
        figure = Figure(figsize=(11.6, height_in), dpi=100)
        bottom = 0.26 / height_in
        axes = figure.add_axes((0.005, bottom, 0.99, 1 - bottom - 0.03 / height_in))
        for window, row in zip(windows, rows):
            style = STATE_STYLES[window.state]
            y = num_rows - 1 - row
            bar = Rectangle(
                (window.first_frame + 0.06, y + 0.12), window.last_frame - window.first_frame + 0.88, 0.76,
                facecolor=style.colour, edgecolor="white", linewidth=0.6,
                hatch="////" if window.state in ("error", "dropped") else None,
            )
            if window.window_id in linked:
                bar.set_url("#" + window_anchor(window.window_id))
            axes.add_patch(bar)
            if window.line.window is not None:
                # On a hatched bar the number sits on a small white label, so it stays readable.
                hatched = window.state in ("error", "dropped")
                axes.text(window.first_frame + 0.3, y + 0.5, str(window.line.window), fontsize=7.5,
                          fontweight="bold", va="center", ha="left", clip_on=True,
                          color=style.colour if hatched else "white",
                          bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none") if hatched
                          else None)
        axes.set_xlim(0, num_frames)
        axes.set_ylim(0, num_rows)
        axes.set_yticks([])
        step = 1 if num_frames <= 40 else 5 * int(np.ceil(num_frames / 200))
        ticks = np.arange(0, num_frames, step)
        axes.set_xticks(ticks + 0.5, [str(i) for i in ticks])
        axes.tick_params(axis="x", length=2, pad=1, labelsize=7, colors="#59636e")
        for side in ("left", "right", "top"):
            axes.spines[side].set_visible(False)
        axes.spines["bottom"].set_color("#b0b8c0")
        return _svg(figure)


class CameraViews:
    """Top view (right, forward) and side view (forward, up) of a window's cameras, drawn as frusta coloured from
    the first frame (dark) to the last (light), over the sampled points in their own colours.

    One figure serves every window of a report: building matplotlib axes costs more than drawing a window into
    them, so ``png`` swaps the window's artists in and out of the same two axes.
    """

    VIEWS = (("top", (0, 1), ("right", "forward")), ("side", (1, 2), ("forward", "up")))

    def __init__(self) -> None:
        with rc_context(FONT):
            self.figure = Figure(figsize=VIEW_SIZE_IN, dpi=VIEW_DPI, facecolor="white")
            self.axes = self.figure.subplots(1, 2)
            self.figure.subplots_adjust(left=0.025, right=0.995, bottom=0.07, top=0.93, wspace=0.06)
            for axes, (title, _, (across, upward)) in zip(self.axes, self.VIEWS):
                axes.set_xticks([])
                axes.set_yticks([])
                axes.set_aspect("equal", adjustable="box")
                axes.set_title(title, fontsize=8, pad=2, loc="left", color="#59636e")
                axes.set_xlabel(f"{across} \u2192", fontsize=7, labelpad=1, color="#59636e")
                axes.set_ylabel(f"{upward} \u2192", fontsize=7, labelpad=1, color="#59636e")
                for spine in axes.spines.values():
                    spine.set_color("#d8dee4")

    def png(self, scene: WindowScene) -> bytes:
        basis = scene.viewing_frame()
        centres = scene.centres @ basis.T
        points = scene.points @ basis.T
        colours = colormaps["viridis"](np.linspace(0.0, 0.9, max(len(centres), 1)))[: len(centres)]
        drawn = []
        with rc_context(FONT):
            for axes, (_, (u, v), _) in zip(self.axes, self.VIEWS):
                low, high = _view_bounds(centres[:, [u, v]], points[:, [u, v]])
                size = float(max(high - low))
                if len(points):
                    # Without antialiasing: a third faster to draw, and invisible at this size.
                    drawn.append(axes.scatter(points[:, u], points[:, v], s=1.6, c=scene.colours / 255.0,
                                              linewidths=0, antialiased=False))
                # Each frustum: apex to the four corners, and the corners' rectangle, at a depth the view shows.
                frusta = centres[:, None, :] + (scene.frusta - scene.centres[:, None, :]) @ basis.T * (0.09 * size)
                segments = frusta[:, FRUSTUM_EDGES][..., [u, v]].reshape(-1, 2, 2)
                drawn.append(axes.add_collection(LineCollection(
                    segments, colors=np.repeat(colours, len(FRUSTUM_EDGES), axis=0), linewidths=0.7)))
                if len(centres):
                    drawn.append(axes.scatter(centres[:, u], centres[:, v], s=9, color=colours, zorder=3,
                                              linewidths=0))
                    drawn.append(axes.annotate("1", centres[0, [u, v]], xytext=(3, 3), textcoords="offset points",
                                               fontsize=7))
                middle = (low + high) / 2
                axes.set_xlim(middle[0] - 0.55 * size, middle[0] + 0.55 * size)
                axes.set_ylim(middle[1] - 0.55 * size, middle[1] + 0.55 * size)
            buffer = io.BytesIO()
            self.figure.savefig(buffer, format="png", dpi=VIEW_DPI, facecolor="white")
        for artist in drawn:
            artist.remove()
        return buffer.getvalue()


def _view_bounds(cameras: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The region to show: every camera, and the points between their 2nd and 98th percentiles (a few stray
    points far away would otherwise shrink the scene to a dot)."""
    parts = [cameras] if len(cameras) else []
    if len(points) >= 10:
        parts.append(np.percentile(points, [2, 98], axis=0))
    elif len(points):
        parts.append(points)
    if not parts:
        return np.zeros(2) - 1, np.zeros(2) + 1
    stacked = np.concatenate(parts)
    low, high = stacked.min(axis=0), stacked.max(axis=0)
    pad = max(float(max(high - low)), 1e-6) * 0.05
    return low - pad, high + pad


def _svg(figure: Figure) -> str:
    """The figure as an ``<svg>`` element for inline HTML: no XML prolog, no metadata, no namespace URIs, and no
    ids on groups (matplotlib names them figure_1, patch_1, ... in every figure: repeated on one page)."""
    buffer = io.StringIO()
    with rc_context(FONT):
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None,
                                                       "Type": None}, facecolor="none")
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = re.sub(r'(<g\b[^>]*?)\s+id="[^"]*"', r"\1", svg)
    return re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)
