"""Block Kit rendering: what an answer shows, and that Slack's limits always hold."""

from __future__ import annotations

import datetime as dt
import json
import re

import numpy as np
import pandas as pd
import pytest
from slack_emulator import validate_blocks

from bot.answers import Answer, Button, Chart, Figure, Table, error_answer
from bot.blocks import (
    ACTION_PREFIX,
    MAX_BLOCKS,
    MAX_TABLE_ROWS,
    answer_blocks,
    escape,
    fallback_text,
    table_block,
)


def _answer(**kw) -> Answer:
    base = dict(command="/kpis SP", title="Key figures", as_of=dt.date(2018, 8, 29),
                filter_label="São Paulo (SP)")
    base.update(kw)
    return Answer(**base)


def _texts(blocks: list[dict]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def test_header_figures_context_and_buttons() -> None:
    answer = _answer(
        summary="Revenue grew *12%*.",
        figures=[Figure("Customers", "9,610", 9610), Figure("Revenue", "R$ 1,234,567", 1234567.0)],
        buttons=[Button("Export CSV", "/export-at-risk SP", "export_at_risk")],
    )
    blocks = answer_blocks(answer, asked_by="U0ALICE01", asked="/kpis SP")
    assert validate_blocks(blocks) == []
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text", "text": "Key figures",
                                                    "emoji": True}}
    fields = next(b for b in blocks if b.get("fields"))["fields"]
    assert [f["text"] for f in fields] == ["*Customers*\n9,610", "*Revenue*\nR$ 1,234,567"]
    context = [b for b in blocks if b["type"] == "context"][-1]
    texts = [e["text"] for e in context["elements"]]
    assert texts[0] == "as of 2018-08-29 · São Paulo (SP)"
    assert texts[-1] == "asked by <@U0ALICE01> · `/kpis SP`"
    actions = blocks[-1]
    assert actions["type"] == "actions"
    assert actions["elements"][0]["value"] == "/export-at-risk SP"
    assert actions["elements"][0]["action_id"] == ACTION_PREFIX + "export_at_risk"


def test_more_than_ten_figures_go_into_several_sections() -> None:
    answer = _answer(figures=[Figure(f"f{i}", str(i)) for i in range(23)])
    sections = [b for b in answer_blocks(answer) if b.get("fields")]
    assert [len(s["fields"]) for s in sections] == [10, 10, 3]


def test_table_is_monospace_aligned_and_says_how_much_is_shown() -> None:
    frame = pd.DataFrame({"state": [f"S{i}" for i in range(50)],
                          "customers": np.arange(50) * 1000, "share": np.linspace(0, 1, 50)})
    block, shown = table_block(Table("By state", frame))
    text = block["text"]["text"]
    assert shown == MAX_TABLE_ROWS
    assert text.startswith("*By state*\n```\n")
    assert text.endswith(f"_showing {MAX_TABLE_ROWS} of 50 rows_")
    lines = text.split("```")[1].strip("\n").splitlines()
    assert lines[0].split() == ["state", "customers", "share"]
    assert lines[2].split() == ["S1", "1,000", "0.02"]
    # numbers right-aligned: every row ends at the same column
    assert len({len(line) for line in lines}) == 1


def test_table_formats_are_applied_and_right_aligned() -> None:
    frame = pd.DataFrame({"state": ["SP", "RJ"], "revenue": [1234567.0, 89.5],
                          "share": [0.1234, 0.05], "orders": [1200, 7]})
    table = Table("t", frame, formats={"revenue": "money", "share": "pct", "orders": "int"})
    block, _ = table_block(table, currency="£")
    lines = block["text"]["text"].split("```")[1].strip("\n").splitlines()
    assert lines[1].split("  ")[0] == "SP"
    assert lines[1].endswith("12.3%   1,200") and "£ 1,234,567" in lines[1]
    assert "£ 89.50" in lines[2] and lines[2].endswith("5.0%       7")
    assert len({len(line) for line in lines}) == 1


def test_small_table_has_no_showing_line() -> None:
    block, shown = table_block(Table("t", pd.DataFrame({"a": [1, 2]})))
    assert shown == 2 and "showing" not in block["text"]["text"]


def test_huge_table_is_cut_to_slack_limits() -> None:
    wide = pd.DataFrame({f"column number {c}": [f"value {r} " + "x" * 60 for r in range(5000)]
                         for c in range(12)})
    answer = _answer(
        summary="long " * 2000,
        figures=[Figure(f"figure {i}", "y" * 3000) for i in range(35)],
        tables=[Table(f"table {t} " + "t" * 300, wide, note="note " * 800) for t in range(60)],
        notes=["n" * 5000 for _ in range(20)],
        buttons=[Button("b" * 100, f"/kpis {i}", "same") for i in range(30)],
    )
    blocks = answer_blocks(answer, asked_by="U1", asked="/kpis " + "z" * 5000)
    assert validate_blocks(blocks) == []
    assert len(blocks) <= MAX_BLOCKS
    assert blocks[0]["type"] == "header" and blocks[-1]["type"] == "actions"
    assert "cut to fit Slack" in _texts(blocks)


def test_table_wider_than_a_section_still_renders() -> None:
    frame = pd.DataFrame({f"c{i}": ["w" * 40] for i in range(200)})
    block, shown = table_block(Table("wide", frame))
    assert validate_blocks([block]) == []
    assert shown == 0 and "showing 0 of 1 rows" in block["text"]["text"]


def test_special_characters_are_escaped_but_mentions_stay_links() -> None:
    frame = pd.DataFrame({"name": ["<script>&", "a```b"]})
    answer = _answer(title="A <b> & c", summary="1 < 2 & 3 > 2",
                     tables=[Table("T&C", frame)])
    blocks = answer_blocks(answer, asked_by="U0ALICE01")
    dumped = _texts(blocks)
    assert "1 &lt; 2 &amp; 3 &gt; 2" in dumped
    assert "&lt;script&gt;&amp;" in dumped
    assert "a```b" not in dumped  # would close the code block
    assert "<@U0ALICE01>" in dumped
    assert blocks[0]["text"]["text"] == "A <b> & c"  # plain_text is not mrkdwn


def test_escape_never_splits_an_entity_when_cutting() -> None:
    answer = _answer(figures=[Figure("x", "&" * 3000)])
    field = next(b for b in answer_blocks(answer) if b.get("fields"))["fields"][0]["text"]
    assert len(field) <= 2000
    assert re.fullmatch(r"\*x\*\n(&amp;)*…", field)


def test_error_answer_has_warning_header_and_reference() -> None:
    answer = error_answer("/kpis", "Something went wrong.", reference="abc12345")
    blocks = answer_blocks(answer)
    assert blocks[0]["text"]["text"].startswith("⚠️")
    assert "reference abc12345" in _texts(blocks)
    assert fallback_text(answer).startswith("⚠️ Sorry")


def test_charts_are_not_blocks_and_nan_cells_are_blank() -> None:
    frame = pd.DataFrame({"a": [1.5, float("nan")], "b": [None, "x"]})
    answer = _answer(tables=[Table("t", frame)], charts=[Chart("c", "C", b"\x89PNG")])
    blocks = answer_blocks(answer)
    assert validate_blocks(blocks) == []
    table = next(b["text"]["text"] for b in blocks if "```" in b.get("text", {}).get("text", ""))
    assert "nan" not in table.lower() and "none" not in table.lower()
    assert "image" not in {b["type"] for b in blocks}


def test_empty_answer_is_still_valid() -> None:
    blocks = answer_blocks(Answer(command="", title=""))
    assert validate_blocks(blocks) == []
    assert escape("<>&") == "&lt;&gt;&amp;"


@pytest.mark.parametrize("n_rows", [0, 1, 25, 10_000])
def test_fallback_text_is_short(n_rows: int) -> None:
    answer = _answer(summary="x" * 10_000, tables=[Table("t", pd.DataFrame({"a": range(n_rows)}))])
    assert len(fallback_text(answer)) <= 3000


def test_numpy_scalars_and_missing_values_in_object_columns() -> None:
    frame = pd.DataFrame({"n": pd.Series([np.int64(1200), None], dtype=object),
                          "d": [pd.NaT, pd.Timestamp("2018-01-02")],
                          "x": pd.Series([pd.NA, np.float32(0.5)], dtype=object)})
    block, _ = table_block(Table("t", frame))
    lines = block["text"]["text"].split("```")[1].strip("\n").splitlines()
    assert lines[1].split() == ["1,200"]
    assert lines[2].split() == ["2018-01-02", "0.50"]
