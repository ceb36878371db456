"""User strings in the app are shown as typed: never as Markdown links, bold or icons, never as
Plotly's HTML (issue 20: a file named ``[x](javascript:alert(8)).csv`` showed as a link "x",
missing words ``**坏**`` in bold)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import cue_rows
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest
from test_app import click, csv_bytes, go, load_model, upload, wait_for

from embedgen.ui import plots
from embedgen.ui.markup import code, plain

HOSTILE = [
    "[x](javascript:alert(8)).csv",
    "**坏** and _斜_ and `code` and ~~删~~",
    "# 标题\n1. list\n- item\n> quote\n    indented",
    "<b>bold</b> &amp; &lt; <script>x</script>",
    "a | b |\n|---|---|\n| c | d |",
    "back\\slash \\* \\\\ \"quoted\" 'single'",
    "![img](http://example.com/x.png) [ref]: http://e.com",
    "$x^2$ :red[红] :smile: :material/home: email:me@example.com www.example.com",
    "好评",
]
JOINER = "\u2060"


def commonmark() -> MarkdownIt:
    return MarkdownIt("commonmark").enable(["table", "strikethrough"])


def squeezed(text: str) -> str:
    """Runs of white space as one space, as a browser shows them."""
    return re.sub(r"\s+", " ", text).strip()


@pytest.mark.parametrize("text", HOSTILE)
def test_plain_text_renders_as_exactly_its_characters(text: str) -> None:
    rendered = commonmark().render(plain(text)).replace(JOINER, "")
    # one paragraph of the text itself: no link, emphasis, heading, list, table or raw HTML
    expected = html.escape(text, quote=True).replace("&#x27;", "'")
    assert squeezed(rendered) == squeezed(f"<p>{expected}</p>"), rendered


def test_plain_breaks_the_links_and_icons_found_after_the_escapes() -> None:
    """GitHub's bare links and Streamlit's icons are found in the text the escapes leave, so a
    word joiner (shown as nothing) sits inside each."""
    shown = commonmark().render(plain("http://e.com www.e.com a@b.com :material/home:"))
    for broken in ("http:" + JOINER + "//", "www" + JOINER + ".", "@" + JOINER + "b.com"):
        assert broken in shown
    assert ":" + JOINER + "material/home:" in shown
    plain_text = commonmark().render(plain("Trade-off: finished · a:b"))
    assert JOINER not in plain_text, "text that makes no link reads and copies as it is"


@pytest.mark.parametrize("text", ["/runs/a b/2026", "a`b``c", "`start", "end`"])
def test_code_spans_hold_any_backticks(text: str) -> None:
    rendered = commonmark().render(code(text)).strip()
    assert rendered == f"<p><code>{html.escape(text, quote=False)}</code></p>", rendered


def test_plot_text_is_not_plotly_html() -> None:
    coords = np.zeros((3, 2))
    fig = plots.scatter_map(
        coords,
        ["<b>好</b>", "<s>", "a&b"],
        ["<i>正面</i>", "x", "x"],
        colour_name="label",
        categorical=True,
        highlight={0: "<a href='http://e.com'>坏</a>"},
    )
    hover = [t for trace in fig.data if trace.name != "search" for t in trace.text]
    assert set(hover) == {"&lt;b&gt;好&lt;/b&gt;", "&lt;s&gt;", "a&amp;b"}
    assert "&lt;i&gt;正面&lt;/i&gt;" in {trace.name for trace in fig.data}
    annotation = fig.layout.annotations[0].text
    assert annotation == "<b>&lt;a href='http://e.com'&gt;坏&lt;/a&gt;</b>"
    confusion = plots.confusion_figure([[1, 0], [0, 1]], ["<b>好</b>", "坏"])
    assert list(confusion.data[0].x) == ["&lt;b&gt;好&lt;/b&gt;", "坏"]


def markdown_shown(at: AppTest) -> list[str]:
    """Every string the page hands to Streamlit's Markdown (captions, markdown, alerts), as
    handed: escapes included."""
    elements = [*at.caption, *at.markdown, *at.warning, *at.error, *at.info, *at.success]
    return [str(e.value) for e in elements]


def test_a_file_name_and_missing_words_show_as_typed(app: AppTest, tiny_model_dir: Path) -> None:
    load_model(app, tiny_model_dir)
    name = "[x](javascript:alert(8)).csv"
    upload(app, name, csv_bytes(cue_rows(200)))
    shown = markdown_shown(app)
    assert not [s for s in shown if "[x](javascript" in s], "the file name reached Markdown raw"
    assert any(plain(name) in s for s in shown), "the file name is shown"

    go(app, "4_Matrix")
    click(app, "Build matrix")
    wait_for(app, "matrix_job")
    go(app, "6_Evaluate")
    pairs = "**坏**\t好\t3\n好\t不\t5\n"
    app.get("file_uploader")[0].upload("mine.txt", pairs.encode(), "text/plain").run()
    wait_for(app, "evaluate_scores_job")
    shown = markdown_shown(app)
    assert not [s for s in shown if "**坏**" in s], "a missing word reached Markdown raw"
    assert any(plain("**坏**") in s for s in shown), "the missing word is listed"
