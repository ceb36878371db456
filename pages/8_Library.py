"""Library: every run and saved matrix this visitor may see, newest first; open one (it becomes
current on every page), rename it, delete it; compare runs side by side."""

from dataclasses import replace

import streamlit as st

from embedgen.budget import human_size
from embedgen.compare import (
    curves,
    matrices_to_compare,
    metrics_table,
    neighbours_side_by_side,
    open_matrices,
    same_settings,
    settings_diff,
    word_list,
)
from embedgen.library import TITLE_CHARS, Item, delete, list_items, rename, title_of
from embedgen.runs import RunRecord, read_run_record
from embedgen.ui import feedback, library, pagestart, plots, session, visitor
from embedgen.ui.markup import code, plain
from embedgen.ui.widgets import kept

st.set_page_config(page_title="Library · embedgen", layout="wide")
pagestart.begin()
st.title("8 · Library")

CONFIRM = "library_confirm_delete"  # the folder whose deletion waits for a yes
SHOW = {"All": None, "Runs": "run", "Matrices": "matrix"}  # the filter: its kind of item
PICK_NEXT = "library_pick_next"  # the choice's value after a rename (the item's new label)
user = visitor.current_user()
items = feedback.attempt(lambda: list_items(user))
runs = [i for i in items if i.kind == "run"]
where = "your workspace" if user is not None else "this server (shared by its visitors)"
st.caption(
    f"{len(runs)} runs and {len(items) - len(runs)} saved matrices in {where}, newest first."
)
library_tab, compare_tab = st.tabs(["Runs and matrices", "Compare runs"])


def label(item: Item) -> str:
    return f"{item.title} · {item.kind} · {item.model} · {item.when}"


def show_table(shown: list[Item]) -> None:
    st.dataframe(
        [
            {
                "Name": i.title,
                "Kind": i.kind,
                "Model": i.model,
                "Date": i.when,
                "Status": i.status,
                "Size": human_size(i.size),
                "What": i.what,
                "Data": i.data,
            }
            for i in shown
        ],
        hide_index=True,
        width="stretch",
    )


def open_item(item: Item) -> None:
    if item.kind == "run":
        with st.spinner("Loading the run…"):
            found = feedback.attempt(lambda: library.open_run(item.folder))
        st.success(
            f"Opened the run **{plain(item.title)}** with its {found} saved matrices; "
            "the newest that carries its tuning is the current matrix."
            if found
            else f"Opened the run **{plain(item.title)}**. It has no saved matrix yet."
        )
    else:
        name = feedback.attempt(lambda: library.open_matrix(item.folder, item.title))
        st.success(f"**{plain(name)}** is the current matrix on Explore, Evaluate and Export.")


def change_item(item: Item) -> None:
    """Rename, and delete with a confirmation, when this visitor may."""
    why_not = library.may_change(item)
    if why_not is not None:
        st.caption(why_not)
        return
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    title = c1.text_input(
        "Name", value=item.title, max_chars=TITLE_CHARS, key=f"library_title_{item.folder}"
    )
    if c2.button("Rename", disabled=title.strip() == item.title):
        shown = feedback.attempt(lambda: rename(item.folder, title, user))
        # The choice follows the item under its new name (its label was the choice's value).
        st.session_state[PICK_NEXT] = label(replace(item, title=shown))
        st.rerun()
    if st.session_state.get(CONFIRM) != item.folder:
        what = "the run, with its saved matrices" if item.kind == "run" else "the matrix"
        if st.button(f"Delete {what}…", icon=":material/delete:"):
            st.session_state[CONFIRM] = item.folder
            st.rerun()
        return
    st.warning(
        f"Delete **{plain(item.title)}** ({human_size(item.size)}) for good? "
        "It cannot be brought back."
    )
    c1, c2, _ = st.columns([1, 1, 3])
    if c1.button("Yes, delete it", type="primary"):
        freed = feedback.attempt(lambda: delete(item.folder, user))
        library.forget(item.folder)
        st.session_state.pop(CONFIRM, None)
        st.toast(f"Deleted {item.title}: {human_size(freed)} freed.")
        st.rerun()
    if c2.button("Keep it"):
        st.session_state.pop(CONFIRM, None)
        st.rerun()


with library_tab:
    if not items:
        st.info("Nothing saved yet: runs appear here once trained, matrices once built.")
    else:
        kinds = st.segmented_control("Show", list(SHOW), default="All", key=kept("library_kinds"))
        shown = [i for i in items if SHOW.get(kinds or "All") in (None, i.kind)]
        show_table(shown)
        if shown:
            by_label = {label(i): i for i in shown}
            if st.session_state.get(PICK_NEXT) in by_label:  # set before the box is drawn
                st.session_state["library_pick"] = st.session_state.pop(PICK_NEXT)
            picked = by_label[st.selectbox("Choose one", list(by_label), key="library_pick")]
            with st.container(border=True):
                st.markdown(f"**{plain(picked.title)}** · {plain(picked.what)}")
                st.caption(
                    f"{plain(picked.status)} · {human_size(picked.size)} · {code(picked.folder)}"
                )
                if st.button("Open", type="primary", icon=":material/folder_open:"):
                    open_item(picked)
                change_item(picked)


def titled(records: list[RunRecord]) -> list[str]:
    """Each run's name as the library shows it, made unique (two runs may share a title)."""
    names: list[str] = []
    for r in records:
        name = title_of(r.folder) or r.name
        names.append(name if name not in names else f"{name} ({r.name})")
    return names


def compare_neighbours(records: list[RunRecord], names: list[str]) -> None:
    """The same words' neighbours in one matrix of each run, side by side."""
    choices = matrices_to_compare(records)
    used = {c.name for c in choices if c.name is not None}
    if len(used) == 1 and all(c.folder is not None for c in choices):
        st.caption(f"In the matrix each run has as {code(used.pop())}.")
    said = set()
    for choice, name in zip(choices, names, strict=True):
        if choice.folder is None:  # the note names the CLI; here the page is the way
            st.caption(
                f"**{plain(name)}** has no saved matrix to compare: open it (Runs and matrices) "
                "and build one on the Matrix page."
            )
        elif choice.note and choice.note not in said:  # one note may stand for every run
            said.add(choice.note)
            st.caption(plain(choice.note))
    c1, c2 = st.columns([3, 1])
    words = c1.text_input(
        "Words (commas between them)", key=kept("library_compare_words"), placeholder="干净，服务"
    )
    k = int(c2.number_input("Neighbours", 1, 50, 5, key=kept("library_compare_k")))
    if not word_list(words):
        return
    key = tuple(
        (str(c.folder), c.folder and (c.folder / "manifest.json").stat().st_mtime_ns)
        for c in choices
    )
    opened = session.session_cached("library_compare_matrices", key, lambda: open_matrices(choices))
    found = feedback.attempt(
        lambda: neighbours_side_by_side([m for m, _ in opened], word_list(words), k)
    )
    for word in found:
        st.markdown(f"**{plain(word.word)}**")
        for column, name, answer in zip(st.columns(len(names)), names, word.answers, strict=True):
            column.caption(
                plain(name)
                + (f" · read as {' + '.join(answer.pieces)}" if len(answer.pieces) > 1 else "")
            )
            if answer.note:
                column.caption(plain(answer.note))
            else:
                column.dataframe(
                    [{"neighbour": t, "cosine": round(c, 3)} for t, c in answer.neighbours],
                    hide_index=True,
                    width="stretch",
                )


with compare_tab:
    by_label = {label(i): i.folder for i in runs}
    chosen = st.multiselect(
        "Runs to compare", list(by_label), key=kept("library_compare"), max_selections=6
    )
    if len(chosen) < 2:
        st.info(
            "Pick two or more runs: their settings, metrics, curves and neighbours side by side."
        )
    else:
        records = feedback.attempt(lambda: [read_run_record(by_label[c]) for c in chosen])
        names = titled(records)
        diff = settings_diff(records)
        st.markdown("**Settings that differ**")
        if diff:
            st.dataframe(
                [{"setting": n, **dict(zip(names, v, strict=True))} for n, v in diff],
                hide_index=True,
                width="stretch",
            )
        st.caption(f"{len(same_settings(records))} other settings are the same.")
        st.markdown("**Metrics** (validation, at each run's best epoch)")
        st.dataframe(
            [
                {
                    "run": name,
                    "model": m.model,
                    "status": m.status,
                    "epochs": m.epochs,
                    "best epoch": m.best_epoch,
                    "macro-F1": m.val_macro_f1,
                    "accuracy": m.val_accuracy,
                    "val loss": m.val_loss,
                    "seconds": round(m.seconds, 1),
                }
                for name, m in zip(names, metrics_table(records), strict=True)
            ],
            hide_index=True,
            width="stretch",
            column_config={
                c: st.column_config.NumberColumn(format="%.3f")
                for c in ("macro-F1", "accuracy", "val loss")
            },
        )
        shown = [replace(c, run=n) for c, n in zip(curves(records), names, strict=True)]
        st.plotly_chart(plots.compared_curves(shown), width="stretch", key="library_curves")
        st.markdown("**Neighbours of the same words**")
        compare_neighbours(records, names)
