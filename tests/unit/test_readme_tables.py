"""The README's benchmark table is the committed bench report, rendered."""

from __future__ import annotations

import json

import pytest

from benchmarks.readme_tables import (
    BEGIN,
    END,
    README,
    REPORT,
    render_table,
    replace_table,
)


def test_the_readme_table_is_the_committed_report_rendered():
    readme = README.read_text()
    rendered = replace_table(readme, render_table(json.loads(REPORT.read_text())))
    assert readme == rendered, "stale table: run `python -m benchmarks.readme_tables`"


def test_every_headline_figure_of_the_report_is_in_the_table():
    result = json.loads(REPORT.read_text())
    table = render_table(result)
    assert f"p95 {result['latency_ms']['p95']:.1f} ms" in table
    assert f"{result['rss_mb']['total']:.0f} MB" in table
    for count in result["max_streams_by_config"].values():
        assert f"{count} with" in table


def test_a_readme_without_the_markers_is_refused():
    with pytest.raises(ValueError, match="bench-table"):
        replace_table("# no table here\n", f"{BEGIN}\n{END}")


def test_only_the_block_between_the_markers_changes():
    text = f"before\n{BEGIN}\nold\n{END}\nafter\n"
    assert replace_table(text, f"{BEGIN}\nnew\n{END}") == f"before\n{BEGIN}\nnew\n{END}\nafter\n"
