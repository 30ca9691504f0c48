"""The report's look, declared once: a colour and a label per window state (used by the page and the plots
alike, so a colour means the same thing everywhere) and the page's stylesheet."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StateStyle:
    label: str
    colour: str
    meaning: str


STATE_STYLES: dict[str, StateStyle] = {
    "good": StateStyle("good", "#2e9e44", "verdict good: geometry checked, to be trusted"),
    "poor": StateStyle("poor", "#e6a100", "verdict poor: usable with care (see the reason)"),
    "failed": StateStyle("failed", "#d93f3c", "verdict failed: written, but no usable geometry"),
    "error": StateStyle("run failed", "#8f1d1b", "the run could not finish the window: no folder"),
    "dropped": StateStyle("dropped", "#9aa0a6", "judged below the kept verdict: recorded, no folder"),
    "unjudged": StateStyle("no verdict", "#5b7fa6", "written by a pipeline that gave no verdict"),
}

CSS = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d8dee4; --panel: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 13px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); background: #fff; }
main { max-width: 1240px; margin: 0 auto; padding: 18px 20px 40px; }
h1 { font-size: 20px; margin: 0 0 2px; }
h2 { font-size: 16px; margin: 26px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 13px; margin: 14px 0 4px; }
.window h3 { margin: 0 0 4px; }
.muted { color: var(--muted); }
.mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
.cards { display: flex; flex-wrap: wrap; gap: 8px; margin: 10px 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; min-width: 104px; background: #fff; }
.card .n { font-size: 22px; font-weight: 600; line-height: 1.1; }
.card .k { color: var(--muted); font-size: 12px; }
.cards.small .card { min-width: 0; padding: 5px 10px; }
.cards.small .card .n { font-size: 17px; }
.card.state { border-left: 6px solid var(--c); }
.card.state .n { color: var(--c); }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 0 28px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 3px 8px 3px 0; border-bottom: 1px solid #eaeef2; vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: 12px; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.reason { white-space: pre-wrap; word-break: break-word; font-size: 12px; }
.chip { display: inline-block; padding: 0 7px; border-radius: 9px; color: #fff; background: var(--c);
        font-size: 11px; font-weight: 600; white-space: nowrap; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 16px; margin: 6px 0; font-size: 12px; color: var(--muted); }
.legend .chip { margin-right: 4px; }
.filters { margin: 8px 0; display: flex; gap: 6px; flex-wrap: wrap; }
.filters button { border: 1px solid var(--line); background: var(--panel); border-radius: 5px; padding: 2px 9px;
                  font: inherit; cursor: pointer; }
.filters button.on { background: var(--ink); color: #fff; border-color: var(--ink); }
.timeline { margin: 2px 0 10px; }
.timeline svg { display: block; max-width: 100%; height: auto; }
.windows-table { max-height: 520px; overflow: auto; border: 1px solid var(--line); border-radius: 6px; }
.windows-table table th { position: sticky; top: 0; background: var(--panel); padding-top: 5px; }
.windows-table td:first-child, .windows-table th:first-child { padding-left: 8px; }
.window { border: 1px solid var(--line); border-left: 6px solid var(--c); border-radius: 6px; padding: 10px 12px;
          margin: 12px 0; }
.window header { display: flex; align-items: baseline; gap: 10px; flex-wrap: wrap; }
.window header .id { font-weight: 600; font-size: 14px; }
.window .body { display: grid; grid-template-columns: minmax(0, 600px) minmax(0, 1fr) minmax(0, 1fr); gap: 18px;
                margin-top: 6px; }
.window img { display: block; max-width: 100%; height: auto; border-radius: 3px; }
.window .strip { margin-bottom: 6px; }
.window table td, .window table th { padding: 1px 8px 1px 0; font-size: 12px; }
.why { margin: 4px 0 0; font-size: 12px; white-space: pre-wrap; word-break: break-word; }
.note { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 6px 10px; margin: 8px 0; }
details summary { cursor: pointer; color: var(--muted); }
a { color: #0b5cad; text-decoration: none; }
a:hover { text-decoration: underline; }
.hidden { display: none !important; }
@media (max-width: 900px) { .window .body, .grid2 { grid-template-columns: 1fr; } }
"""
