"""Library: every run and saved matrix this visitor may see, newest first; open one (it becomes
current on every page), rename it, delete it; compare runs side by side."""

import streamlit as st

from embedgen.budget import human_size
from embedgen.library import TITLE_CHARS, Item, delete, list_items, rename
from embedgen.ui import feedback, library, pagestart, visitor
from embedgen.ui.markup import code, plain
from embedgen.ui.widgets import kept

st.set_page_config(page_title="Library · embedgen", layout="wide")
pagestart.begin()
st.title("8 · Library")

CONFIRM = "library_confirm_delete"  # the folder whose deletion waits for a yes
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
                "Data": i.data,
                "What": i.what,
                "Size": human_size(i.size),
                "Date": i.when,
                "Status": i.status,
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
        feedback.attempt(lambda: rename(item.folder, title, user))
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
        kinds = st.segmented_control(
            "Show", ["All", "Runs", "Matrices"], default="All", key=kept("library_kinds")
        )
        shown = [i for i in items if kinds in (None, "All") or i.kind == kinds.lower()[:-1]]
        show_table(shown)
        if shown:
            by_label = {label(i): i for i in shown}
            picked = by_label[st.selectbox("Choose one", list(by_label), key="library_pick")]
            with st.container(border=True):
                st.markdown(f"**{plain(picked.title)}** · {plain(picked.what)}")
                st.caption(
                    f"{plain(picked.status)} · {human_size(picked.size)} · {code(picked.folder)}"
                )
                if st.button("Open", type="primary", icon=":material/folder_open:"):
                    open_item(picked)
                change_item(picked)

with compare_tab:
    st.caption("Pick two or more runs.")
