"""The run report: ``python -m vae_pipeline.report --output-dir OUT`` writes ``OUT/report/index.html``, one
self-contained page (summary, failures, windows over each sequence's timeline, per-window frames, cameras, metrics
and accuracy against ground truth when an evaluation JSON is there).

``run`` reads the output folder into typed records, ``scene`` a window's model into arrays, ``figures`` draws
with matplotlib, ``thumbnails`` shrinks frames, ``page`` assembles the HTML.
"""

from .page import DEFAULT_MAX_WINDOWS, render_page, write_report
from .run import ReportInputError, RunReport, read_run

__all__ = ["DEFAULT_MAX_WINDOWS", "ReportInputError", "RunReport", "read_run", "render_page", "write_report"]
