"""User strings inside the app's Markdown: shown as typed, never as links, bold or icons.

Streamlit renders the text of ``st.caption``, ``st.info``, ``st.error``, ``st.write`` and
widget labels as Markdown with its own extensions (``:emoji:`` shortcodes, ``:red[...]``
directives, ``:material/...:`` icons, ``$...$`` LaTeX) and GitHub's bare links. A file name, a
word, a label or a message quoting a row comes from a visitor, so it goes through ``plain``
first: a file named ``[x](javascript:…).csv`` shows those characters instead of a link,
``**坏**`` its asterisks.
"""

from __future__ import annotations

import re

# Every ASCII punctuation character may be escaped in CommonMark; these are the ones Markdown,
# GitHub's tables and strikethrough, and Streamlit's extensions give a meaning to.
_SPECIAL = re.compile(r"""([\\`*_{}\[\]()<>#+\-.!|~$:^&="'])""")
# Bare links (http://…, www.…, a@b.c) and icons (:material/x:) are found in the text after the
# escapes are gone, so an invisible word joiner breaks them up instead: after the ':' of '://'
# and of ':material/' or ':smile:', after an '@' before a name, between 'www' and '.'. It
# shows as nothing; other text ("Trade-off: finished") gets none, and copies as it is.
_JOINER = "\u2060"
_BREAK = re.compile(r"(:)(?=//|material/|[\w+\\-]+\\?:)|(@)(?=\w)|(www)(?=\\\.)", re.I)


def plain(text: object) -> str:
    """``text`` escaped so that Streamlit's Markdown shows exactly its characters."""
    return _BREAK.sub(lambda m: m.group(0) + _JOINER, _SPECIAL.sub(r"\\\1", str(text)))


def code(text: object) -> str:
    """``text`` as a Markdown code span (a path, a folder name), whatever backticks it holds:
    the fence is one backtick longer than its longest run of them. Nothing invisible is added,
    so a path copied from it works; Streamlit still rewrites ``:material/x:`` inside a code
    span, which no run or matrix folder name holds (they are slugs)."""
    text = str(text).replace("\n", " ")
    runs = re.findall(r"`+", text)
    fence = "`" * (max((len(r) for r in runs), default=0) + 1)
    return f"{fence} {text} {fence}"
