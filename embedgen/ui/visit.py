"""This tab's work kept on the server (:mod:`embedgen.visits`), so a reload takes it up again:
the model, the labelled data, the run, the matrices and the jobs under way.

Each page run ends by writing what changed (:func:`remember`, from app.py); a new session
starts by reading it back (:func:`restore`, from ``pagestart.begin``). Without workspaces
the visit is found by a secret the server makes and puts in the address (``?visit=``); an
address's value that no visit was made for is ignored, never adopted (whoever chose it could
otherwise follow the work of whoever opened the link). With workspaces, the visit is the
user's.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import streamlit as st

from embedgen import visits
from embedgen.ui import benchmarks, visitor

# Light at the top: app.py imports this for every page, the start page too. What restoring
# needs (torch, the run and matrix readers) is imported when there is something to restore.

log = logging.getLogger(__name__)

VISIT_PARAM = "visit"  # the address's key for the visit's secret (workspaces off)
_SECRET = "ui_visit_secret"
_RESTORED = "ui_visit_restored"
_WRITTEN = "ui_visit_written"  # the Visit last written, so an unchanged one is not rewritten
_DATA = "ui_visit_data"  # how the Data page read the current data (Visit.data)


def _job_slots() -> dict[str, str]:
    """The session keys of the jobs a reload takes up again, by the visit's name for them."""
    from embedgen.ui import session

    return {
        "estimate": session.MATRIX_ESTIMATE_JOB,  # a reload mid-estimate still builds after
        "matrix": session.MATRIX_JOB,
        "map": session.PROJECTION_JOB,
        "tradeoff": session.TRADEOFF_JOB,
        "evaluate": session.EVALUATE_JOB,
    }


def _folder(user: str | None) -> Path | None:
    return visits.visit_folder(user, st.session_state.get(_SECRET))


def restore() -> None:
    """Take up the work kept for this visitor, once, at the start of a new session."""
    if st.session_state.get(_RESTORED):
        _show_secret()
        return
    st.session_state[_RESTORED] = True
    user = visitor.current_user()
    if user is None:
        given = st.query_params.get(VISIT_PARAM)
        where = visits.visit_folder(None, given)
        if where is None or not (where / visits.VISIT_FILE).exists():
            if VISIT_PARAM in st.query_params:  # a value no visit was made for: not adopted,
                del st.query_params[VISIT_PARAM]  # and not left to look like this tab's
            return
        st.session_state[_SECRET] = given
    else:
        where = visits.visit_folder(user, None)
    assert where is not None
    kept = visits.read_visit(where)
    if kept.empty:
        return
    with st.spinner("Taking up your work from before the reload…"):
        _apply(kept, where, user)
    st.session_state[_WRITTEN] = current()  # what was taken up; what could not be, goes
    _show_secret()


def remember() -> None:
    """Write this tab's work when it changed; makes the visit's secret on the first write."""
    if not st.session_state.get(_RESTORED):
        return  # the page stopped before pagestart.begin (a broken settings file)
    visit = current()
    if visit == st.session_state.get(_WRITTEN):
        return
    user = visitor.current_user()
    if user is None and _SECRET not in st.session_state:
        if visit.empty:
            return
        st.session_state[_SECRET] = visits.new_secret()
    where = _folder(user)
    if where is None:
        return
    try:
        for files in benchmarks.all_kept().values():  # their bytes first, then the record
            for bench in files:
                visits.keep_benchmark(where, bench.raw)
        visits.write_visit(where, visit)
        st.session_state[_WRITTEN] = visit
    except OSError as exc:  # the work goes on; only a reload would lose it
        log.warning("Visit not kept in %s: %s", where, exc)
    _show_secret()


def _show_secret() -> None:
    """Keep the visit's secret in the address, on every page (a page change clears it)."""
    secret = st.session_state.get(_SECRET)
    if secret and st.query_params.get(VISIT_PARAM) != secret:
        st.query_params[VISIT_PARAM] = secret


def note_data(data: dict[str, Any], raw: bytes | None = None) -> None:
    """The Data page's account of how it read the current data (see ``Visit.data``); an
    upload's bytes are kept with the visit when they are new."""
    before = st.session_state.get(_DATA) or {}
    if raw is not None and before.get("sha256") != data.get("sha256"):
        user = visitor.current_user()
        if user is None and _SECRET not in st.session_state:
            st.session_state[_SECRET] = visits.new_secret()
        where = _folder(user)
        if where is not None:
            try:
                visits.keep_upload(where, raw)
            except OSError as exc:
                log.warning("Upload not kept in %s: %s", where, exc)
                return
    st.session_state[_DATA] = data


def data_source() -> str | None:
    """ "upload" or "sample": where the current data came from; None without data."""
    return (st.session_state.get(_DATA) or {}).get("source")


def forget_data() -> None:
    st.session_state[_DATA] = None


def current() -> Visit:
    """This tab's work as a :class:`~embedgen.visits.Visit`."""
    from embedgen.ui import session

    ss = st.session_state
    loaded, run, job = (
        ss.get(session.MODEL_LOADED),
        ss.get(session.TRAIN_RUN),
        ss.get(session.TRAIN_JOB),
    )
    jobs = {}
    for slot, key in _job_slots().items():
        fjob = ss.get(key)
        if fjob is None:
            continue
        from embedgen.runs import RunStatus  # imported already: the job's panel did

        # A finished map too: a reloaded Explore draws it again from its job folder.
        if fjob.active or (slot == "map" and fjob.state is RunStatus.FINISHED):
            # An estimate's tag (the request and texts) is read back from its job folder.
            tag = None if slot == "estimate" else _encode(fjob.tag)
            jobs[slot] = {"folder": fjob.folder, "tag": tag}
    return visits.Visit(
        model=list(loaded) if loaded else None,
        data=ss.get(_DATA),
        run=str(run.folder) if run is not None and run.folder else None,
        training=job.folder if job is not None and job.active else None,
        run_secrets=dict(ss.get(visitor.TRAIN_SECRETS, {})),
        matrices={
            name: {"folder": e.folder, "dtype": e.dtype, "key": e.key}
            for name, e in ss.get(session.MATRICES, {}).items()
            if e.folder  # one the disk budget did not keep lives only in its session
        },
        jobs=jobs,
        current=ss.get(session.CURRENT_MATRIX),
        benchmarks={
            kind: [{"name": b.name, "sha256": b.sha256} for b in files]
            for kind, files in benchmarks.all_kept().items()
        },
    )


Visit = visits.Visit


def _apply(kept: Visit, where: Path, user: str | None) -> None:
    """Put what ``kept`` names back into this session; what cannot be had any more (a folder
    removed, a model the operator no longer allows) is left out and logged."""
    from embedgen.runs import load_run
    from embedgen.ui import jobpanel, matrices, session
    from embedgen.ui.jobpanel import QueuedJob
    from embedgen.ui.models import current_encoder

    ss = st.session_state
    if kept.model:
        spec, trust = str(kept.model[0]), bool(kept.model[1:2] and kept.model[1])
        ss[session.MODEL_LOADED] = (spec, trust)
        if current_encoder() is None:
            ss[session.MODEL_LOADED] = None
        else:
            _try("warm a worker", lambda: jobpanel.warm_worker(spec, trust))
            _model_form(spec)
    if kept.data:
        _try("read the data again", lambda: _restore_data(kept.data or {}, where))
    secrets = {f: s for f, s in kept.run_secrets.items() if visits.within(f, user)}
    ss.setdefault(visitor.TRAIN_SECRETS, {}).update(secrets)
    if kept.training and visits.within(kept.training, user):
        ss[session.TRAIN_JOB] = QueuedJob(kept.training)
    if kept.run and visits.within(kept.run, user):
        ss[session.TRAIN_RUN] = _try(
            "open the run", lambda: load_run(kept.run or "", loaded=current_encoder())
        )
    entries = ss.setdefault(session.MATRICES, {})
    for name, about in kept.matrices.items():
        folder = str(about.get("folder", ""))
        if not visits.within(folder, user):
            continue
        matrix = _try(f"open matrix {name}", lambda f=folder: matrices.load_saved(f))
        if matrix is not None:
            entries[name] = matrices.MatrixEntry(
                name,
                matrix,
                folder,
                str(about.get("dtype", "float32")),
                key=str(about.get("key") or matrices.new_key()),
            )
    if kept.current in entries:
        ss[session.CURRENT_MATRIX] = kept.current
    benchmarks.restore(_benchmarks(kept, where))
    slots = _job_slots()
    for slot, about in kept.jobs.items():
        folder = str(about.get("folder", ""))
        if slot in slots and visits.within(folder, user):
            ss[slots[slot]] = _job(slot, folder, _decode(about.get("tag")))


def _benchmarks(kept: Visit, where: Path) -> dict[str, list[benchmarks.Benchmark]]:
    """The Evaluate page's files the visit names, read back from beside it (those whose
    bytes are gone or changed are left out)."""
    files: dict[str, list[benchmarks.Benchmark]] = {}
    for kind, listed in kept.benchmarks.items():
        for about in listed if kind in benchmarks.KINDS and isinstance(listed, list) else []:
            if not isinstance(about, dict):
                continue
            raw = visits.kept_benchmark(where, str(about.get("sha256", "")))
            if raw is not None:
                name = str(about.get("name", "file.txt"))
                files.setdefault(kind, []).append(benchmarks.Benchmark(name, raw))
    return files


def _model_form(spec: str) -> None:
    """The Model page's form shows the model taken up, not its defaults (a reloaded tab's
    form said "Hub id: bert-base-chinese" above the folder model that was loaded)."""
    from embedgen.ui import widgets

    folder = Path(spec).is_absolute() or Path(spec).is_dir()
    source, box = (
        ("Folder on this machine", "model_folder") if folder else ("Hub id", "model_hub_id")
    )
    st.session_state[widgets.kept("model_source")] = source
    st.session_state[widgets.kept(box)] = spec


def _job(slot: str, folder: str, tag: Any) -> Any:
    from embedgen import tasks
    from embedgen.ui import jobpanel, matrices
    from embedgen.ui.jobpanel import FolderJob

    if slot == "matrix":
        return FolderJob(folder, "Matrix", take=matrices.entry_of_job)
    if slot == "estimate":
        asked = tasks.estimate_asked(folder)
        return None if asked is None else FolderJob(folder, "Estimate", tag=asked)
    if slot == "map":
        _map_form(tag)
        return FolderJob(folder, "Map", take=tasks.projection_of, tag=tag)
    if slot == "evaluate":
        return FolderJob(folder, "Scores", take=tasks.scores_of, tag=tag)
    return FolderJob(folder, "Trade-off", take=jobpanel.tradeoff_points, tag=tag)


def _map_form(tag: Any) -> None:
    """Explore's map settings as the map taken up was made (its tag: the matrix's key and
    the map's options), so the reloaded page asks for that map and draws it."""
    from embedgen.projection import DEFAULT_MAX_ROWS, ProjectionOptions
    from embedgen.ui import session, widgets

    if not (isinstance(tag, tuple) and len(tag) == 2 and isinstance(tag[1], ProjectionOptions)):
        return
    key, options = tag
    ss = st.session_state
    ss[widgets.kept("explore_reducer")] = str(options.reducer.value)
    ss[widgets.kept("explore_dims")] = int(options.dims)
    if options.max_rows is not None:
        ss[widgets.kept("explore_map_rows")] = int(options.max_rows)
    else:
        rows = [e.matrix.shape[0] for e in ss.get(session.MATRICES, {}).values() if e.key == key]
        if rows and rows[0] > DEFAULT_MAX_ROWS:  # all rows, asked for with the box
            ss[widgets.kept("explore_map_all")] = True


def _restore_data(kept: dict[str, Any], where: Path) -> None:
    from embedgen.data import prepare
    from embedgen.table import read_table
    from embedgen.ui import session

    header, sheet = kept.get("header"), kept.get("sheet")
    if kept.get("source") == "sample":
        table = read_table(session.SAMPLE_DATA, header=header)
    else:
        raw = visits.kept_upload(where)
        if raw is None:
            return
        table = read_table(
            raw, name=str(kept.get("name", "upload.csv")), header=header, sheet=sheet
        )
    if table.sha256 != kept.get("sha256"):
        return
    text_col, label_col = kept["text_col"], kept["label_col"]
    data = prepare(table, text_col, label_col)
    ss = st.session_state
    ss[session.DATA_TABLE], ss[session.DATA_LABELLED] = table, data
    ss[session.DATA_COLUMNS] = (table.sha256, text_col, label_col)
    if isinstance(kept.get("val_fraction"), float):
        ss[session.DATA_VAL_FRACTION] = kept["val_fraction"]
    # The Data page's own widgets show what was chosen, not their defaults.
    ss[session.DATA_SOURCE_KEY] = session.DATA_SOURCES[kept.get("source") == "sample"]
    ss[session.DATA_HEADER_KEY] = {None: "Detect", True: "Yes", False: "No"}[header]
    ss[session.data_column_key("text", table.sha256)] = text_col
    ss[session.data_column_key("label", table.sha256)] = label_col
    ss[_DATA] = kept


def _try(what: str, step: Any) -> Any:
    from embedgen.errors import EmbedgenError

    try:
        return step()
    except (EmbedgenError, OSError, KeyError, ValueError) as exc:
        log.info("After a reload, could not %s: %s", what, exc)
        return None


def _encode(tag: Any) -> Any:
    """A job's tag (tuples of names, keys and map options) as JSON."""
    from embedgen.projection import ProjectionOptions

    if isinstance(tag, ProjectionOptions):
        return {"projection": asdict(tag)}
    if isinstance(tag, tuple | list):
        return [_encode(t) for t in tag]
    return tag


def _decode(raw: Any) -> Any:
    from embedgen.projection import ProjectionOptions

    if isinstance(raw, dict) and isinstance(raw.get("projection"), dict):
        return _try("read a map's options", lambda: ProjectionOptions(**raw["projection"]))
    if isinstance(raw, list):
        return tuple(_decode(t) for t in raw)
    return raw
