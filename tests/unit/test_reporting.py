"""The report toolkit: filters, the strict autoescaping environment, chart layout, the run block."""

from __future__ import annotations

from datetime import date

import jinja2
import pytest

from aleph2alma.reporting import (
    CHART_WIDTH,
    LABEL_WIDTH,
    MIN_SEGMENT,
    VALUE_WIDTH,
    Bar,
    BarGroup,
    Segment,
    bar_chart,
    environment,
    grouped_bar_chart,
    number,
    percent,
    run_info,
)

SPAN = CHART_WIDTH - LABEL_WIDTH - VALUE_WIDTH


@pytest.mark.parametrize(("value", "shown"), [(1234567, "1,234,567"), (0, "0"), (None, "—")])
def test_number(value: int | None, shown: str) -> None:
    assert number(value) == shown


@pytest.mark.parametrize(
    ("value", "shown"), [(1.2, "1.20%"), (0.0, "0.00%"), (0.001, "<0.01%"), (100.0, "100.00%")]
)
def test_percent(value: float, shown: str) -> None:
    assert percent(value) == shown


def test_the_environment_escapes_and_refuses_undefined_names() -> None:
    env = environment()
    assert env.from_string("{{ x }}").render(x="<b>李</b> & co") == "&lt;b&gt;李&lt;/b&gt; &amp; co"
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ report.nothing }}").render(report={})
    assert environment() is env  # built once


def test_every_report_template_extends_the_base_page() -> None:
    env = environment()
    for name in ("validation.html.j2", "reconciliation.html.j2", "iteration_diff.html.j2"):
        source = env.loader.get_source(env, name)[0]  # type: ignore[union-attr]
        assert source.startswith('{% extends "base.html.j2" %}'), name


def test_bar_chart_one_scale_with_thin_counts_kept_visible() -> None:
    chart = bar_chart(
        [
            Bar("items", [Segment(998, "#0a0", "998 delivered"), Segment(2, "#a00", "2 rejected")], "1,000"),
            Bar("patrons", [Segment(500, "#0a0", "500 delivered"), Segment(0, "#a00", "0 rejected")], "500"),
        ],
        title="Records",
        legend=[("delivered", "#0a0")],
    )
    [group] = chart.groups
    items, patrons = group.rows
    assert group.heading == "" and (items.label_x, items.y, patrons.y) == (0, 0, chart.bar_height + 6)
    delivered, rejected = items.rects
    assert delivered.x == LABEL_WIDTH and rejected.width == MIN_SEGMENT
    assert [r.title for r in patrons.rects] == ["500 delivered"]  # a zero count draws nothing
    assert patrons.rects[0].width == round(SPAN * 500 / 1000, 1)
    assert items.text_x == round(delivered.x + delivered.width + rejected.width + 6, 1)
    assert chart.legend == [("delivered", "#0a0")]


def test_grouped_chart_scales_each_group_on_its_own() -> None:
    chart = grouped_bar_chart(
        [
            BarGroup("bibs", [Bar("Aleph", [Segment(1_000_000, "#999", "")], "")]),
            BarGroup("fines", [Bar("Aleph", [Segment(80, "#999", "")], "")]),
        ],
        title="Funnel",
    )
    bibs, fines = chart.groups
    assert bibs.rows[0].rects[0].width == fines.rows[0].rects[0].width == SPAN
    assert bibs.heading_y < bibs.rows[0].y < fines.heading_y < fines.rows[0].y < chart.height
    assert bibs.rows[0].label_x > 0  # labels indented under their heading


def test_an_empty_chart_has_a_height() -> None:
    assert bar_chart([], title="Nothing").height == 1


def test_run_info_puts_the_run_first_and_dates_in_iso() -> None:
    info = run_info({"extra": 3, "run_id": "manual__1", "as_of": date(2026, 3, 1)})
    assert info == {
        "migration_id": "",
        "dag_id": "",
        "run_id": "manual__1",
        "as_of": "2026-03-01",
        "extra": "3",
    }
    assert list(info)[:4] == ["migration_id", "dag_id", "run_id", "as_of"]
    assert run_info(None) == dict.fromkeys(("migration_id", "dag_id", "run_id", "as_of"), "")
