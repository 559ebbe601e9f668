"""The dashboard's charts, drawn on the server as SVG by pygal (a maintained PyPI package the
setup installs): the page needs no JavaScript, loads nothing from elsewhere and works offline.

Each function takes report tables and returns an ``<svg>`` element to put in the page as is
(pygal escapes the labels it draws). No chart script is referenced (``js=[]``), so pygal's
default tooltip script from its CDN is never asked for, and its inline configuration script is
dropped.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import pygal
from pygal.style import Style

from gateway.analytics.tables import Table

WIDTH, HEIGHT = 560, 300
STYLE = Style(background="#ffffff", plot_background="#ffffff", foreground="#1d2733",
              foreground_strong="#1d2733", foreground_subtle="#5b6b7c", opacity=".9", opacity_hover="1",
              colors=("#1f6feb", "#e5534b", "#d29922", "#2da44e", "#8250df", "#57606a"),
              font_family="system-ui, sans-serif", title_font_size=15, label_font_size=11,
              major_label_font_size=11, legend_font_size=11, value_font_size=10)
_SCRIPT = re.compile(r"<script\b.*?</script>", re.S)
MAX_BARS = 12
"""Most categories one chart draws (the table below it has them all)."""


def _config(chart: Any, title: str) -> Any:
    chart.title = title
    return chart


def _options(**extra: Any) -> dict[str, Any]:
    base = dict(style=STYLE, width=WIDTH, height=HEIGHT, js=[], disable_xml_declaration=True, explicit_size=False,
                legend_at_bottom=True, legend_at_bottom_columns=4, print_values=False, show_y_guides=True,
                truncate_label=28, no_data_text="no data in this range")
    base.update(extra)
    return base


def _svg(chart: Any, name: str) -> str:
    # pygal writes its tooltip configuration as an inline script: the page loads no script
    # (its Content-Security-Policy refuses them), so it is left out
    svg = _SCRIPT.sub("", chart.render(is_unicode=True))
    return f'<figure class="chart" data-chart="{name}">{svg}</figure>'


def outcomes_by_channel(channels: Table) -> str:
    rows = channels.as_dicts()[:MAX_BARS]
    chart = _config(pygal.StackedBar(**_options()), "Outcomes by channel")
    chart.x_labels = [r["channel"] for r in rows]
    for key in ("completed", "transferred", "abandoned", "active"):
        chart.add(key, [r[key] for r in rows])
    return _svg(chart, "outcomes")


def transfer_reasons(transfers: Table) -> str:
    rows = transfers.as_dicts()[:MAX_BARS]
    chart = _config(pygal.HorizontalBar(**_options(show_legend=False)), "Transfers to agents by reason")
    chart.x_labels = [f"{r['reason']} ({r['queue']})" for r in rows]
    chart.add("conversations", [r["conversations"] for r in rows])
    return _svg(chart, "transfers")


def task_completion(journeys: Table) -> str:
    rows = journeys.as_dicts()[:MAX_BARS]
    chart = _config(pygal.Bar(**_options(range=(0, 100))), "Task completion (%)")
    chart.x_labels = [r["journey"] for r in rows]
    chart.add("completed", [round(r["completion"] * 100, 1) if r["completion"] is not None else None for r in rows])
    return _svg(chart, "completion")


def funnel(table: Table, journey: str) -> str:
    rows = [r for r in table.as_dicts() if r["journey"] == journey][:MAX_BARS]
    chart = _config(pygal.Bar(**_options()), f"Drop-off funnel: {journey or 'no journey'}")
    chart.x_labels = [r["step"] for r in rows]
    chart.add("reached", [r["reached"] for r in rows])
    chart.add("ended here", [r["ended_here"] for r in rows])
    return _svg(chart, "funnel")


def frustration(trend: Table) -> str:
    rows = trend.as_dicts()
    chart = _config(pygal.Line(**_options(range=(0, 1), x_label_rotation=30, show_minor_x_labels=False)),
                    "Frustration (mean per utterance)")
    chart.x_labels = [r["from"][5:16].replace("T", " ") for r in rows]
    chart.x_labels_major = chart.x_labels[:: max(1, len(rows) // 8)]
    chart.add("frustration", [round(r["frustration_mean"], 3) if r["frustration_mean"] is not None else None
                              for r in rows])
    return _svg(chart, "frustration")


def latency(table: Table) -> str:
    rows = table.as_dicts()
    chart = _config(pygal.Bar(**_options()), "Turn latency per stage (seconds)")
    chart.x_labels = [r["stage"] for r in rows]
    chart.add("p50", [r["p50"] for r in rows])
    chart.add("p95", [r["p95"] for r in rows])
    return _svg(chart, "latency")


def qa_failures(items: Sequence[tuple[str, int, int]]) -> str:
    """``items``: (item id, failed, scored) per scorecard item."""
    chart = _config(pygal.HorizontalBar(**_options(show_legend=False)), "QA: conversations failing each item")
    chart.x_labels = [i[0] for i in items][:MAX_BARS]
    chart.add("failed", [i[1] for i in items][:MAX_BARS])
    return _svg(chart, "qa")
