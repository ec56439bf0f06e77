"""The people's side of every report: one Jinja environment, one page style, one kind of chart.

Each report (validation, reconciliation, fix-cycle diff) writes its JSON itself and its HTML
page through ``render``: a template of ``reporting/templates`` that extends ``base.html.j2``
(the page, its CSS, the status banner, the run line) and draws charts with the macros of
``macros.html.j2``. Autoescaping is always on (record ids, details and workbook names come
from library data) and an undefined name in a template is an error, not an empty string.

Filters: ``num`` (``1,234``; ``None`` → ``—``) and ``pct`` (``1.20%``, ``<0.01%``).

Charts are inline SVG, so a page needs no script and no other file: horizontal bars, each a
stack of segments with a label on the left and a text on the right. ``bar_chart`` lays
them out on one scale; ``grouped_bar_chart`` gives each group (an entity's funnel) its own
scale, because entities differ by orders of magnitude. The layout is computed here, the
drawing is one macro (``bar_chart`` in ``macros.html.j2``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jinja2 import Environment

GREEN = "#43a047"
RED = "#c62828"
ORANGE = "#ef8f00"
BLUE = "#1565c0"
LIGHT_BLUE = "#1e88e5"
GREY = "#9e9e9e"
DARK_GREY = "#757575"
BLUE_GREY = "#78909c"
PURPLE = "#6a1b9a"

SEVERITY_COLOURS = {"FIX": RED, "REVIEW": ORANGE, "INFO": BLUE, "UNKNOWN": DARK_GREY}
"""Badge and bar colour per rule severity (``UNKNOWN``: a rule no longer in the registry)."""

RUN_KEYS = ("migration_id", "dag_id", "run_id", "as_of")


# --- spreadsheet cells -------------------------------------------------------------------

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\0")
"""First characters that make Excel, LibreOffice or Google Sheets read a CSV/TSV cell as a
formula (OWASP, CSV Injection: https://owasp.org/www-community/attacks/CSV_Injection lists
``=``, ``+``, ``-``, ``@``, tab and carriage return; OWASP ASVS 5.0 requirement 1.2.10 adds NUL)."""

NEUTRALISER = "'"


def neutralise(value: Any) -> Any:
    """A worklist or form cell made inert: text starting with a formula trigger gets a leading
    ``'`` (OWASP's advice: the spreadsheet then shows it as text, not a formula). Notes and
    details come from library data, so ``=HYPERLINK(…)`` in an Aleph note must not run when a
    librarian opens the worklist. Other values are returned as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return NEUTRALISER + value
    return value


def unneutralise(value: str) -> str:
    """:func:`neutralise` undone on reading a file this tool wrote (and a librarian edited)."""
    if value.startswith(NEUTRALISER) and value[1:].startswith(FORMULA_TRIGGERS):
        return value[1:]
    return value


# --- the environment -----------------------------------------------------------------------


def number(n: int | float | None) -> str:
    """``1,234``; ``—`` for an unknown count."""
    return "—" if n is None else f"{n:,}"


def percent(p: float) -> str:
    """``1.20%``; ``<0.01%`` for a share too small to show but not nothing."""
    return f"{p:.2f}%" if p >= 0.01 or p == 0 else "<0.01%"


@functools.cache
def environment() -> Environment:
    """The one Jinja environment of the reports (built on first use: nothing at import time)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("aleph2alma.reporting", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = number
    env.filters["pct"] = percent
    env.globals["severity_colours"] = SEVERITY_COLOURS
    return env


def render(template: str, **context: Any) -> str:
    """One report page: ``template`` (a file of ``reporting/templates``) rendered with ``context``."""
    return environment().get_template(template).render(**context)


def run_info(run: Mapping[str, Any] | None) -> dict[str, str]:
    """A report's ``run`` block: migration, DAG, run id and as-of date first (``""`` when not
    given), then anything else given; dates in ISO form, everything as text."""
    out = dict.fromkeys(RUN_KEYS, "")
    for key, value in (run or {}).items():
        out[key] = value.isoformat() if isinstance(value, date | datetime) else str(value)
    return out


# --- bar charts ----------------------------------------------------------------------------

CHART_WIDTH = 720
LABEL_WIDTH = 200
VALUE_WIDTH = 230
BAR_HEIGHT = 16
BAR_GAP = 6
HEADING_HEIGHT = 18
GROUP_GAP = 14
INDENT = 8
MIN_SEGMENT = 2.0
"""A segment of a non-zero count is never thinner than this (a handful of rejects stays visible)."""


@dataclass(frozen=True)
class Segment:
    """A part of a bar: ``value`` records, drawn in ``colour``, ``title`` shown on hover."""

    value: int
    colour: str
    title: str


@dataclass(frozen=True)
class Bar:
    """One bar: ``label`` on its left, its segments in order, ``text`` on its right."""

    label: str
    segments: Sequence[Segment]
    text: str

    @property
    def total(self) -> int:
        return sum(max(s.value, 0) for s in self.segments)


@dataclass(frozen=True)
class BarGroup:
    """Bars under one heading, drawn on a scale of their own."""

    heading: str
    bars: Sequence[Bar]


@dataclass(frozen=True)
class Rect:
    x: float
    width: float
    colour: str
    title: str


@dataclass(frozen=True)
class Row:
    label: str
    label_x: int
    y: int
    rects: list[Rect]
    text: str
    text_x: float


@dataclass(frozen=True)
class PlacedGroup:
    heading: str
    """Drawn at ``heading_y`` above the rows; ``""``: none."""
    heading_y: int
    rows: list[Row]


@dataclass(frozen=True)
class Chart:
    """A laid-out chart, as the ``bar_chart`` macro draws it."""

    title: str
    width: int
    height: int
    bar_height: int
    groups: list[PlacedGroup]
    legend: list[tuple[str, str]] = field(default_factory=list)
    """(label, colour) pairs shown under the chart."""

    @property
    def baseline(self) -> int:
        """Offset of a row's text baseline from the row's top."""
        return self.bar_height - 4


def bar_chart(bars: Sequence[Bar], *, title: str, legend: Sequence[tuple[str, str]] = ()) -> Chart:
    """One bar per row, all on one scale (the longest bar fills the width)."""
    return _layout([BarGroup("", bars)], title, legend, own_scale=False)


def grouped_bar_chart(
    groups: Sequence[BarGroup], *, title: str, legend: Sequence[tuple[str, str]] = ()
) -> Chart:
    """A heading per group, its bars below it, each group on its own scale."""
    return _layout(groups, title, legend, own_scale=True)


def _layout(
    groups: Sequence[BarGroup], title: str, legend: Sequence[tuple[str, str]], own_scale: bool
) -> Chart:
    span = CHART_WIDTH - LABEL_WIDTH - VALUE_WIDTH
    common = max((bar.total for g in groups for bar in g.bars), default=0)
    placed: list[PlacedGroup] = []
    y = 0
    for group in groups:
        largest = max((bar.total for bar in group.bars), default=0) if own_scale else common
        heading_y = y + HEADING_HEIGHT - 6
        if group.heading:
            y += HEADING_HEIGHT
        rows = []
        for bar in group.bars:
            x, rects = float(LABEL_WIDTH), []
            for s in bar.segments:
                if s.value > 0 and largest > 0:
                    width = round(max(MIN_SEGMENT, span * s.value / largest), 1)
                    rects.append(Rect(round(x, 1), width, s.colour, s.title))
                    x += width
            rows.append(Row(bar.label, INDENT if group.heading else 0, y, rects, bar.text, round(x + 6, 1)))
            y += BAR_HEIGHT + BAR_GAP
        if group.heading:
            y += GROUP_GAP
        placed.append(PlacedGroup(group.heading, heading_y, rows))
    return Chart(title, CHART_WIDTH, max(y, 1), BAR_HEIGHT, placed, list(legend))
