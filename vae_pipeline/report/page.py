"""The report page: one self-contained HTML file (inline CSS, pictures as data URIs or inline SVG, no network)
assembled from a ``RunReport``.

Written with the standard library's ``html.escape`` and string building rather than a template engine: the page
is a handful of tables and sections, and the package then needs no dependency for it.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html import escape
from pathlib import Path

from ..evaluation.results import AccuracyFigures
from .figures import CameraViews, timeline_svg, window_anchor
from .run import STATES, RunReport, RunTotals, WindowEntry, read_run
from .scene import read_scene
from .style import CSS, STATE_STYLES
from .thumbnails import ThumbnailCache

REPORT_FOLDER = "report"
REPORT_PAGE = "index.html"
DEFAULT_MAX_WINDOWS = 200  # windows drawn in detail; every window is listed in the table whatever the cap
STATUSES = ("ok", "failed", "dropped", "skipped")


def write_report(output_dir: Path, evaluation: Path | None = None, *, max_windows: int = DEFAULT_MAX_WINDOWS) -> Path:
    """Write ``output_dir/report/index.html`` for the run in ``output_dir`` and return its path.

    ``evaluation``: an evaluation JSON of ``python -m vae_pipeline.evaluate`` (default: ``output_dir/evaluation.json``
    when it exists). ``max_windows``: how many windows get a detail section (thumbnails, camera views, metrics).
    Raises ``ReportInputError`` when the folder holds no readable run.
    """
    run = read_run(Path(output_dir), evaluation)
    page = render_page(run, max_windows)
    folder = run.output_dir / REPORT_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / REPORT_PAGE
    partial = folder / f".{REPORT_PAGE}.partial-{os.getpid()}"
    partial.write_text(page, encoding="utf-8")
    os.replace(partial, path)
    return path


def render_page(run: RunReport, max_windows: int = DEFAULT_MAX_WINDOWS) -> str:
    windows = run.windows
    with_folder = [window for window in windows if window.folder is not None]
    detailed = with_folder[: max(max_windows, 0)]
    linked = {window.window_id for window in detailed}
    title = f"Run report: {run.output_dir.resolve().name}"
    body = [
        _header(run, title),
        _summary(run),
        _failures(run, linked),
        _timelines(run, linked),
        _window_table(run, linked),
        _details(detailed, len(with_folder), max_windows),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{escape(title)}</title>"
        f"<style>{CSS}</style></head>\n<body><main>\n" + "\n".join(body) + f"\n</main><script>{FILTER_SCRIPT}</script>"
        "</body></html>\n"
    )


# --- formatting ---------------------------------------------------------------------------------------------

def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _chip(state: str) -> str:
    style = STATE_STYLES[state]
    return f'<span class="chip" style="--c:{style.colour}" title="{escape(style.meaning)}">{escape(style.label)}</span>'


def _number(value: float | None, digits: int = 2, unit: str = "") -> str:
    return "-" if value is None else f"{value:,.{digits}f}{unit}"


def _percent(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f} %"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _table(headers: list[str], rows: Iterable[list[str]], numeric: set[int] = frozenset(),
           row_attrs: Iterable[str] | None = None) -> str:
    head = "".join(f'<th class="num">{h}</th>' if i in numeric else f"<th>{h}</th>" for i, h in enumerate(headers))
    attrs = iter(row_attrs) if row_attrs is not None else None
    lines = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{cell}</td>' if i in numeric else (cell if cell.startswith("<td") else f"<td>{cell}</td>")
            for i, cell in enumerate(row)
        )
        lines.append(f"<tr{next(attrs) if attrs else ''}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def _reason_cell(text: str | None) -> str:
    return f'<td class="reason">{escape(text) if text else ""}</td>'


@dataclass(frozen=True)
class Quantity:
    """One number of a window's metrics or evaluation: its field, label and how to print it."""

    key: str
    label: str
    show: Callable[[float], str]


def _fixed(digits: int, unit: str = "") -> Callable[[float], str]:
    return lambda value: _number(value, digits, unit)


METRICS = (
    Quantity("registered_frames", "registered frames", _fixed(0)),
    Quantity("points", "points", _fixed(0)),
    Quantity("observations", "observations", _fixed(0)),
    Quantity("tracks", "tracks", _fixed(0)),
    Quantity("track_length_median", "track length, median", _fixed(1)),
    Quantity("reproj_error_per_observation_px", "reprojection error per observation", _fixed(3, " px")),
    Quantity("reproj_error_per_point_px", "reprojection error per point (COLMAP's)", _fixed(3, " px")),
    Quantity("triangulation_angle_median_deg", "triangulation angle, median", _fixed(2, "\u00b0")),
    Quantity("motion_path_over_depth", "camera path / scene depth", _fixed(3)),
    Quantity("rotation_span_deg", "rotation span", _fixed(1, "\u00b0")),
    Quantity("depth_conf_median", "depth confidence, median", _fixed(2)),
    Quantity("depth_conf_mean", "depth confidence, mean", _fixed(2)),
    Quantity("depth_conf_share_above_threshold", "depth confidence above threshold", lambda v: _percent(v, 1)),
    Quantity("ba_rotation_change_deg", "BA rotation change, largest", _fixed(2, "\u00b0")),
    Quantity("ba_centre_change", "BA centre change, largest (of extent)", lambda v: _percent(v, 1)),
    Quantity("weakest_link_points", "weakest link (points)", _fixed(0)),
)

ACCURACY = (
    Quantity("rra_mean_deg", "RRA mean", _fixed(2, "\u00b0")),
    Quantity("rra_median_deg", "RRA median", _fixed(2, "\u00b0")),
    Quantity("rta_mean_deg", "RTA mean", _fixed(2, "\u00b0")),
    Quantity("rta_median_deg", "RTA median", _fixed(2, "\u00b0")),
    Quantity("auc30", "AUC@30", _fixed(3)),
    Quantity("auc5", "AUC@5", _fixed(3)),
    Quantity("ate", "ATE (of extent)", _fixed(4)),
    Quantity("focal_error", "focal error", lambda v: _percent(v, 2)),
    Quantity("frames_matched", "frames matched", _fixed(0)),
    Quantity("pairs", "frame pairs", _fixed(0)),
)
ACCURACY_LEGEND = (
    "RRA / RTA: relative rotation / translation-direction error over frame pairs; AUC@30, AUC@5: area under the "
    "accuracy curve of max(RRA, RTA) up to 30 / 5 degrees (1 is perfect); ATE: camera-centre RMSE after a "
    "similarity alignment, as a fraction of the window's extent; focal error: mean |f - f_gt| / f_gt."
)


def _accuracy_value(figures: AccuracyFigures, figure: Quantity) -> str:
    value = getattr(figures, figure.key)
    return "-" if value is None else figure.show(value)


# --- sections -----------------------------------------------------------------------------------------------

def _header(run: RunReport, title: str) -> str:
    totals = run.totals
    facts = [f"output <span class=\"mono\">{escape(str(run.output_dir.resolve()))}</span>"]
    if totals is not None:
        if totals.model_source:
            facts.append(f"model <span class=\"mono\">{escape(totals.model_source)}</span>")
        if totals.package_version:
            facts.append(f"vae_pipeline {escape(totals.package_version)}")
    generated = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    facts.append(f"report written {escape(generated)}")
    flags = ""
    if totals is not None and totals.flags:
        rows = [[escape(key), f'<span class="mono">{escape(json.dumps(value))}</span>']
                for key, value in _flatten(totals.flags)]
        flags = f"<details><summary>flags of the run</summary>{_table(['flag', 'value'], rows)}</details>"
    return f"<h1>{escape(title)}</h1><div class=\"muted\">{' &middot; '.join(facts)}</div>{flags}"


def _flatten(values: dict, prefix: str = "") -> list[tuple[str, object]]:
    flat = []
    for key, value in values.items():
        if isinstance(value, dict):
            flat += _flatten(value, f"{prefix}{key}.")
        else:
            flat.append((f"{prefix}{key}", value))
    return flat


def _card(number: str, label: str, state: str | None = None) -> str:
    if state is None:
        return f'<div class="card"><div class="n">{number}</div><div class="k">{escape(label)}</div></div>'
    colour = STATE_STYLES[state].colour
    return (f'<div class="card state" style="--c:{colour}" title="{escape(STATE_STYLES[state].meaning)}">'
            f'<div class="n">{number}</div><div class="k">{escape(label)}</div></div>')


def _summary(run: RunReport) -> str:
    windows = run.windows
    states = Counter(window.state for window in windows)
    statuses = Counter(window.line.status for window in windows)
    total = len(windows)
    parts = ["<h2>Summary</h2>"]
    cards = [_card(f"{total:,}", f"windows in {len(run.sequences)} sequence{'s' * (len(run.sequences) != 1)}")]
    for state in STATES:
        if states[state] or state in ("good", "poor", "failed"):
            share = f" ({100 * states[state] / total:.0f} %)" if total else ""
            cards.append(_card(f"{states[state]:,}", f"{STATE_STYLES[state].label}{share}", state))
    parts.append(f'<div class="cards">{"".join(cards)}</div>')
    by_status = ", ".join(f"{statuses[s]:,} {s}" for s in (*STATUSES, *sorted(set(statuses) - set(STATUSES)))
                          if statuses[s])
    parts.append(f'<div class="muted">by status: {escape(by_status) or "none"}'
                 + (f"; {len(run.sequence_failures)} sequence(s) could not be read" if run.sequence_failures else "")
                 + "</div>")
    parts.append(_legend())

    totals = run.totals
    if totals is None:
        parts.append('<div class="note">No summary.json: the run did not finish (or is still running), so there '
                     "are no run timings; the windows below are those its manifest recorded.</div>")
        totals = RunTotals()
    finish = sorted(w.line.timings["finish_s"] for w in windows if "finish_s" in w.line.timings)
    shown = [
        (totals.windows_per_s, lambda v: _number(v, 3), "windows per second (written)"),
        (totals.elapsed_s, _duration, "elapsed"),
        (totals.device_busy_share, _percent, f"device busy ({totals.device or '?'})"),
        (totals.forward_passes, lambda v: _number(v, 0), "forward passes"),
        (finish[len(finish) // 2] if finish else None, _duration, "reconstruct + write, median per window"),
    ]
    cards = [_card(show(value), label) for value, show, label in shown if value is not None]
    if cards:
        parts.append(f"<h3>Throughput</h3><div class=\"cards\">{''.join(cards)}</div>")

    evaluation = run.evaluation
    if evaluation is not None:
        parts.append(f"<h3>Accuracy against ground truth</h3><div class=\"muted\">from "
                     f"<span class=\"mono\">{escape(str(run.evaluation_path))}</span>: {len(evaluation.windows)} "
                     f"window(s) evaluated, {len(evaluation.unmatched_windows)} without ground truth; all frame "
                     "pairs of all evaluated windows pooled</div>")
        if evaluation.overall is not None:
            cards = [_card(_accuracy_value(evaluation.overall, f), f.label) for f in ACCURACY[:8]]
            parts.append(f'<div class="cards small">{"".join(cards)}</div><div class="muted">{ACCURACY_LEGEND}</div>')
        if evaluation.unmatched_windows:
            rows = [[escape(w.window_id or w.folder), _reason_cell(w.reason)] for w in evaluation.unmatched_windows]
            parts.append(f"<details><summary>windows not evaluated ({len(rows)})</summary>"
                         f"{_table(['window', 'why'], rows)}</details>")
    return "\n".join(parts)


def _legend() -> str:
    items = [f"<span>{_chip(state)}{escape(style.meaning)}</span>" for state, style in STATE_STYLES.items()]
    return f'<div class="legend">{"".join(items)}</div>'


def _failures(run: RunReport, linked: set[str]) -> str:
    failed = [w for w in run.windows if w.state in ("error", "failed")]
    if not failed and not run.sequence_failures:
        return "<h2>Failures</h2><div class=\"muted\">none: every window was written with geometry.</div>"
    rows = [[escape(line.sequence), "sequence", _chip("error"), _reason_cell(line.reason)]
            for line in run.sequence_failures]
    for window in failed:
        rows.append([_window_link(window, linked), _frame_span(window), _chip(window.state), _reason_cell(_reason(window))])
    return (f"<h2>Failures ({len(rows)})</h2><div class=\"muted\">Windows the run could not finish and windows "
            "judged failed, with the full reason.</div>" + _table(["window", "frames", "what", "reason"], rows))


def _window_link(window: WindowEntry, linked: set[str]) -> str:
    """The window's id, linked to its detail section when the page has one."""
    text = f'<span class="mono">{escape(window.window_id)}</span>'
    return f'<a href="#{window_anchor(window.window_id)}">{text}</a>' if window.window_id in linked else text


def _reason(window: WindowEntry) -> str | None:
    """Why the window is not good, in full: the run's reason for a window it could not finish, else the verdict's
    (which includes a failed BA's), and whatever kept its folder from being read."""
    if window.state == "error":
        reasons = [window.line.reason]
    else:
        reasons = [window.verdict_reason or window.ba_reason or window.line.reason]
    reasons.append(window.problem)
    return "\n".join(reason for reason in reasons if reason) or None


def _frame_span(window: WindowEntry) -> str:
    if window.first_frame is None:
        return "-"
    return f"{window.first_frame}&ndash;{window.last_frame}"


def _timelines(run: RunReport, linked: set[str]) -> str:
    parts = ["<h2>Windows over each sequence</h2><div class=\"muted\">x: frame index in the sequence; each bar "
             "a window over its frames, overlapping windows stacked; click a bar for its details.</div>"]
    for sequence in run.sequences:
        counts = Counter(window.state for window in sequence.windows)
        summary = " ".join(f"{_chip(state)}&thinsp;{counts[state]}" for state in STATES if counts[state])
        # A run on a single folder of frames names its one sequence after the folder itself: ".".
        name = "the input folder (.)" if sequence.name == "." else sequence.name
        parts.append(f"<h3>{escape(name)} <span class=\"muted\">&middot; {len(sequence.frames)} frames, "
                     f"{len(sequence.windows)} windows</span> {summary}</h3>")
        parts.append(f'<div class="timeline">{timeline_svg(sequence, linked)}</div>')
    for line in run.sequence_failures:
        parts.append(f"<h3>{escape(line.sequence)} {_chip('error')}</h3><div class=\"why\">"
                     f"{escape(line.reason or 'no reason recorded')}</div>")
    return "\n".join(parts)


def _filters(run: RunReport) -> str:
    present = {window.state for window in run.windows}
    buttons = ['<button class="on" data-filter="all">all</button>']
    buttons += [f'<button data-filter="{state}">{escape(STATE_STYLES[state].label)}</button>'
                for state in STATES if state in present]
    return f'<div class="filters">{"".join(buttons)}</div>'


def _window_table(run: RunReport, linked: set[str]) -> str:
    evaluated = run.evaluation is not None
    headers = ["window", "frames", "status", "verdict", "BA", "points", "reproj. error", "registered"]
    if evaluated:
        headers += ["RRA mean", "AUC@30", "ATE"]
    headers.append("reason")
    rows, attrs = [], []
    for window in run.windows:
        metrics = window.metrics
        registered = metrics.get("registered_frames")
        row = [
            _window_link(window, linked),
            _frame_span(window),
            escape(window.line.status),
            _chip(window.state),
            escape(window.ba or "-"),
            _number(metrics.get("points"), 0),
            _number(metrics.get("reproj_error_per_point_px"), 3, " px"),
            "-" if registered is None else f"{registered:.0f}/{len(window.line.frames)}",
        ]
        if evaluated:
            figures = window.evaluation.figures if window.evaluation else None
            row += ["-" if figures is None else _accuracy_value(figures, f) for f in (ACCURACY[0], ACCURACY[4],
                                                                                       ACCURACY[6])]
        row.append(_reason_cell(_reason(window)))
        rows.append(row)
        attrs.append(f' data-state="{window.state}"')
    numeric = {5, 6, 7} | ({8, 9, 10} if evaluated else set())
    return (f"<h2>All windows ({len(rows)})</h2>{_filters(run)}<div class=\"windows-table\">"
            f"{_table(headers, rows, numeric, attrs)}</div>")


def _details(detailed: list[WindowEntry], with_folder: int, max_windows: int) -> str:
    parts = ["<h2>Window details</h2>"]
    if with_folder > len(detailed):
        parts.append(f'<div class="note">The first {len(detailed)} of {with_folder} windows with a folder are drawn '
                     f"here (<span class=\"mono\">--max-windows {max_windows}</span>); every window is in the table "
                     "above.</div>")
    parts.append('<div class="muted">Frames as the cameras saw them; cameras from the first frame (dark) to the '
                 "last (light) over a sample of the points, seen from above and from the side (axes from the "
                 "cameras' mean viewing and up directions).</div>")
    thumbnails, views = ThumbnailCache(), CameraViews()
    for window in detailed:
        parts.append(_window_detail(window, thumbnails, views))
    if not detailed:
        parts.append('<div class="muted">No window has a folder.</div>')
    return "\n".join(parts)


def _window_detail(window: WindowEntry, thumbnails: ThumbnailCache, views: CameraViews) -> str:
    assert window.folder is not None
    record = window.record
    names = [frame.name for frame in record.frames] if record and record.frames else list(window.line.frames)
    left = []
    strip = thumbnails.strip([window.folder / "images" / name for name in names])
    if strip is not None:
        left.append(f'<img class="strip" alt="frames of {escape(window.window_id)}" '
                    f'src="{_data_uri(strip, "image/jpeg")}">')
    try:
        scene = read_scene(window.folder / "sparse", tuple(names))
    except (OSError, ValueError, RuntimeError) as exc:
        left.append(f'<div class="why">the model in sparse/ cannot be read: {escape(str(exc))}</div>')
    else:
        picture = views.png(scene)
        left.append(f'<img alt="cameras and points of {escape(window.window_id)}, from above and from the side" '
                    f'src="{_data_uri(picture, "image/png")}">')
        sampled = f"{len(scene.points):,} of {scene.total_points:,} points drawn" if scene.total_points else "no points"
        left.append(f'<div class="muted">{len(scene.names)} cameras, {sampled}</div>')

    accuracy = ""
    if window.evaluation is not None:
        figures = window.evaluation.figures
        rows = [[escape(f.label), _accuracy_value(figures, f)] for f in ACCURACY]
        accuracy = "<h3>Against ground truth</h3>" + _table(["", ""], rows, {1})
    reasons = []
    if window.verdict_reason:
        reasons.append(f"<b>verdict:</b> {escape(window.verdict_reason)}")
    if window.ba_reason and window.ba_reason not in (window.verdict_reason or ""):
        reasons.append(f"<b>bundle adjustment:</b> {escape(window.ba_reason)}")
    if window.problem:
        reasons.append(f"<b>folder:</b> {escape(window.problem)}")
    style = STATE_STYLES[window.state]
    tracker = f" &middot; tracker {escape(record.tracker)}" if record and record.tracker else ""
    return (
        f'<section class="window" id="{window_anchor(window.window_id)}" data-state="{window.state}" '
        f'style="--c:{style.colour}"><header><span class="id mono">{escape(window.window_id)}</span>'
        f"{_chip(window.state)}<span class=\"muted\">frames {_frame_span(window)} &middot; "
        f"BA {escape(window.ba or '-')}{tracker} &middot; <span class=\"mono\">{escape(window.line.folder or '')}"
        f"</span></span></header>"
        + "".join(f'<div class="why">{reason}</div>' for reason in reasons)
        + f'<div class="body"><div>{"".join(left)}</div><div>{_metrics_table(window)}</div><div>{accuracy}</div>'
        "</div></section>"
    )


def _metrics_table(window: WindowEntry) -> str:
    metrics = window.metrics
    known = {figure.key for figure in METRICS}
    rows = [[escape(f.label), f.show(metrics[f.key])] for f in METRICS if f.key in metrics]
    rows += [[f'<span class="mono">{escape(key)}</span>', _number(value, 3)]
             for key, value in sorted(metrics.items()) if key not in known]
    if not rows:
        return '<div class="muted">no metrics recorded</div>'
    return "<h3>Metrics</h3>" + _table(["", ""], rows, {1})


FILTER_SCRIPT = """
document.querySelectorAll('.filters button').forEach(function (button) {
  button.addEventListener('click', function () {
    var wanted = button.dataset.filter;
    document.querySelectorAll('.filters button').forEach(function (other) {
      other.classList.toggle('on', other === button);
    });
    document.querySelectorAll('tr[data-state], section[data-state]').forEach(function (element) {
      element.classList.toggle('hidden', wanted !== 'all' && element.dataset.state !== wanted);
    });
  });
});
"""
