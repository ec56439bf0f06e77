"""The control room's charts, drawn with matplotlib: SVG for the page and the HTML report (its text
left as text, so the browser's fonts render Chinese), PNG for the report to send.

``Figure`` objects only, never pyplot: no global state in the API server's threads.
"""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Callable
from datetime import timedelta
from functools import cache
from typing import ParamSpec

import matplotlib
from matplotlib import font_manager
from matplotlib.dates import DateFormatter, date2num
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from aleph2alma.plan.labels import t
from aleph2alma.plan.status import ControlRoom

PLANNED, ACTUAL, LATE, DUE = "#c9d6e8", "#2f6db5", "#c0392b", "#7f8c8d"
CJK_FAMILIES = (
    "Noto Sans CJK SC",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "Source Han Sans SC",
    "SimHei",
)
SEVERITY_COLOURS = {"FIX": "#c0392b", "REVIEW": "#e67e22"}
MAX_RULES = 10
P = ParamSpec("P")


@cache
def _families() -> list[str]:
    """DejaVu Sans, then the first installed CJK fonts: matplotlib falls back glyph by glyph."""
    installed = {f.name for f in font_manager.fontManager.ttflist}
    return ["DejaVu Sans", *(f for f in CJK_FAMILIES if f in installed)]


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig


def _in_fonts(draw: Callable[P, Figure]) -> Callable[P, Figure]:
    """Draw with the families of ``_families``: a text's font is fixed when the text is made."""

    @functools.wraps(draw)
    def drawn(*args: P.args, **kwargs: P.kwargs) -> Figure:
        with matplotlib.rc_context({"font.family": _families()}):
            return draw(*args, **kwargs)

    return drawn


def svg(fig: Figure) -> str:
    buf = io.StringIO()
    with (
        matplotlib.rc_context({"svg.fonttype": "none", "font.family": _families()}),
        warnings.catch_warnings(),
    ):
        # The text stays text, drawn by the browser's fonts: a glyph matplotlib's fonts lack is no loss.
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.savefig(buf, format="svg")
    text = buf.getvalue()
    return text[text.index("<svg") :]  # inline: no XML prolog or DOCTYPE


def png(fig: Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    with matplotlib.rc_context({"font.family": _families()}):
        fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


@_in_fonts
def timeline(room: ControlRoom, lang: str, fig: Figure | None = None) -> Figure:
    """Per phase, the planned window (light) and the actual one (dark; red past the plan); key nodes
    planned (hollow) and reached (filled; red when late); today as a line."""
    fig = fig or _figure(10, 4.2)
    ax = fig.add_subplot()
    rows = list(reversed(room.phases))
    for y, row in enumerate(rows):
        if row.planned:
            start = date2num(row.planned.start)
            ax.barh(
                y + 0.18,
                date2num(row.planned.end + timedelta(days=1)) - start,
                left=start,
                height=0.32,
                color=PLANNED,
                label=t("planned", lang) if not any(r.planned for r in rows[:y]) else None,
            )
        if row.actual_start:
            end = row.actual_end or room.today
            start = date2num(row.actual_start)
            colour = LATE if (row.slip_days or 0) > 0 else ACTUAL
            ax.barh(
                y - 0.18,
                max(date2num(end + timedelta(days=1)) - start, 0.5),
                left=start,
                height=0.32,
                color=colour,
                label=t("actual", lang) if not any(r.actual_start for r in rows[:y]) else None,
            )
    by_phase = {row.key: y for y, row in enumerate(rows)}
    for node in room.nodes:
        if node.phase not in by_phase:
            continue
        y = by_phase[node.phase]
        if node.planned:
            ax.plot(
                date2num(node.planned),
                y + 0.18,
                marker="D",
                markersize=6,
                markerfacecolor="white",
                markeredgecolor=DUE if node.status != "overdue" else LATE,
                linestyle="none",
            )
        if node.actual:
            ax.plot(
                date2num(node.actual),
                y - 0.18,
                marker="D",
                markersize=6,
                color=LATE if node.status == "late" else ACTUAL,
                linestyle="none",
            )
    ax.axvline(date2num(room.today), color="#555555", linestyle="--", linewidth=1)
    ax.text(date2num(room.today), len(rows) - 0.4, " " + t("today", lang), fontsize=8, color="#555555")
    ax.set_yticks(range(len(rows)), [r.label(lang) for r in rows])
    ax.xaxis.set_major_formatter(DateFormatter("%Y-%m-%d"))
    ax.tick_params(axis="x", labelsize=8, labelrotation=20)
    ax.set_title(t("timeline", lang), loc="left", fontsize=11)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", color="#eeeeee")
    return fig


@_in_fonts
def funnel(room: ControlRoom, lang: str, fig: Figure | None = None) -> Figure:
    """Per entity: Aleph source, delivered, rejected, in Alma (grouped bars)."""
    fig = fig or _figure(10, 3.6)
    ax = fig.add_subplot()
    series = (("source", "#95a5a6"), ("delivered", ACTUAL), ("rejected", LATE), ("in_alma", "#27ae60"))
    width = 0.2
    for i, (key, colour) in enumerate(series):
        values = [getattr(c, key) or 0 for c in room.counts]
        xs = [x + (i - 1.5) * width for x in range(len(room.counts))]
        ax.bar(xs, values, width=width, color=colour, label=t(key, lang))
    ax.set_xticks(range(len(room.counts)), [c.entity for c in room.counts], fontsize=8)
    ax.set_yscale("symlog")
    ax.set_ylabel(t("records", lang))
    ax.set_title(t("counts", lang), loc="left", fontsize=11)
    ax.legend(fontsize=8, ncols=4)
    return fig


@_in_fonts
def fix_trend(room: ControlRoom, lang: str, fig: Figure | None = None) -> Figure:
    """Issue count per rule and iteration; the rules with most issues, FIX red, REVIEW orange."""
    fig = fig or _figure(10, 3.6)
    ax = fig.add_subplot()
    trend = room.fix_trend
    top = sorted(trend.rules.items(), key=lambda kv: max(kv[1][1]), reverse=True)[:MAX_RULES]
    for rule, (severity, counts) in top:
        ax.plot(
            trend.iterations,
            counts,
            marker="o",
            color=SEVERITY_COLOURS.get(severity, DUE),
            alpha=0.85,
            label=f"{rule} ({severity})",
        )
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(t("iteration", lang))
    ax.set_ylabel(t("issues", lang))
    ax.set_title(t("fix_trend", lang), loc="left", fontsize=11)
    if top:
        ax.legend(fontsize=7, ncols=2, loc="upper right")
    return fig


@_in_fonts
def nights(room: ControlRoom, lang: str, fig: Figure | None = None) -> Figure:
    """Records changed per night, stacked by entity."""
    fig = fig or _figure(10, 3.2)
    ax = fig.add_subplot()
    entities = sorted({e for n in room.nights for e in n.volumes})
    labels = [n.watermark.strftime("%m-%d %H:%M") for n in room.nights]
    bottom = [0] * len(room.nights)
    for entity in entities:
        values = [n.volumes.get(entity, 0) for n in room.nights]
        ax.bar(labels, values, bottom=bottom, label=entity)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel(t("records", lang))
    ax.set_title(t("nightly", lang), loc="left", fontsize=11)
    ax.tick_params(axis="x", labelsize=7, labelrotation=30)
    if entities:
        ax.legend(fontsize=7, ncols=4)
    return fig


@_in_fonts
def effort(room: ControlRoom, lang: str, fig: Figure | None = None) -> Figure:
    """Per role: gates answered and issues fixed in its data."""
    fig = fig or _figure(10, 2.8)
    axes = fig.subplots(1, 2)
    names = [e.title(lang) for e in room.effort]
    for ax, key, colour in ((axes[0], "gates_answered", ACTUAL), (axes[1], "issues_fixed", "#27ae60")):
        ax.barh(names, [getattr(e, key) for e in room.effort], color=colour)
        ax.set_title(t(key, lang), loc="left", fontsize=10)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.invert_yaxis()
    return fig


@_in_fonts
def status_board(room: ControlRoom, lang: str) -> Figure:
    """The report's PNG: the timeline above, the record counts and the fix-cycle trend below."""
    fig = _figure(12, 10)
    top, middle, bottom = list(fig.subfigures(3, 1, height_ratios=[1.3, 1, 1]))  # type: ignore[arg-type]
    timeline(room, lang, top)
    funnel(room, lang, middle)
    fix_trend(room, lang, bottom)
    fig.suptitle(f"{room.title(lang)} — {t('as_of', lang)} {room.today.isoformat()}", fontsize=13)
    return fig


def has_cjk_font() -> bool:
    """True when a Chinese font is installed: a Chinese PNG would otherwise show empty boxes."""
    return len(_families()) > 1
