"""Text cells that a spreadsheet opens as text: the guard against formulas in exported tables.

Excel, LibreOffice and Google Sheets read a cell that starts with ``=``, ``+``, ``-`` or ``@``
(or a tab or carriage return before one) as a formula, and a formula can run commands
(``=cmd|' /C calc'!A0``). Tokens and words come from models and users, so every table we
write for people (the projector's ``metadata.tsv``, a matrix's ``rows.tsv``) passes its text
cells through :func:`spreadsheet_cell`, the usual guard: a leading ``'``, which spreadsheets
show as text and do not display. ``vocab.txt`` and word2vec text are for programs (line *i*
names row *i*, the token as the model spells it) and stay raw.
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(text: str) -> str:
    """``text``, with a leading ``'`` when a spreadsheet would read it as a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text
