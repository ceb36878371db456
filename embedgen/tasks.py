"""Matrix builds, estimates, maps, trade-offs and scores as queue tasks, run by workers.

The Matrix page and ``embedgen matrix --queue`` write a job folder (:mod:`embedgen.jobrecord`:
job.json with the request, the word list and the texts beside it) and enqueue its task; a
worker (``embedgen worker``) claims it, loads the model once for the jobs that follow (the
encoders :mod:`embedgen.jobs` keeps), builds and saves the matrix by the same
``build_and_save`` as the command line, and writes ``progress.json`` as it goes. The job ends
with the matrix's folder in its result; a matrix the operator's disk budget cannot keep is
saved in the job folder instead, for the page that asked to take. So the web server never
holds a model's weights for this work, a closed tab loses nothing, and ``embedgen runs``
lists the jobs beside the runs.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedgen.data import LabelledData
from embedgen.errors import BadConfig, BadRun, Cancelled, EmbedgenError
from embedgen.evaluate import (
    SimilaritySet,
    WordPair,
    read_analogy,
    read_label_words,
    read_similarity,
)
from embedgen.heartbeat import beating
from embedgen.jobrecord import (
    JobRecord,
    claim_job,
    end_job,
    new_job_folder,
    read_job,
    write_queued_job,
)
from embedgen.jobs import (
    CANCEL_FILE,
    ProgressFile,
    encoder_for,
    enqueue,
    free_memory,
    read_data,
    register_task,
    watch_cancel,
    write_data,
)
from embedgen.matrix import (
    BuildEstimate,
    EmbeddingMatrix,
    IfSaved,
    MatrixOptions,
    Rows,
    Target,
    build_and_save,
    describe,
    estimate_build,
    load_matrix,
    save_matrix,
    target_for,
)
from embedgen.matrix.folder import saved_matrix
from embedgen.postprocess import PostProcess
from embedgen.projection import Projection, ProjectionOptions, project
from embedgen.report import tradeoff_of_data
from embedgen.runs import (
    HEARTBEAT_FILE,
    HEARTBEAT_SECONDS,
    RunStatus,
    failure_message,
    load_run,
    read_run_record,
)
from embedgen.scores import Leaning, PurityAsk, score_matrices
from embedgen.tokenstats import TokenStats, significant, token_stats
from embedgen.words import Corpus, WordOptions, WordSplitter, WordVocab, words_from_corpus

log = logging.getLogger(__name__)

MATRIX_TASK = "embedgen.matrix"
ESTIMATE_TASK = "embedgen.estimate"
MAP_TASK = "embedgen.map"
TRADEOFF_TASK = "embedgen.tradeoff"
EVALUATE_TASK = "embedgen.evaluate"
MAP_FILE = "map.npz"
WORDS_FILE = "words.json"
CORPUS_FILE = "corpus.json"
KEPT_HERE = "matrix"  # a matrix the disk budget could not keep, in the job folder
LABEL_WORDS_FILE = "label-words.txt"


@dataclass(frozen=True)
class Source:
    """What a matrix is built from: a run folder, or a model as ``load_encoder`` takes it
    (with the operator's permissions at the time it was asked for)."""

    run: str | None = None
    model: str | None = None
    trust_remote_code: bool = False
    allow_download: bool = True
    allow_pickle: bool = False


@dataclass(frozen=True)
class MatrixRequest:
    """A matrix to build: everything a worker needs but the words and texts (files beside)."""

    source: Source
    options: MatrixOptions
    target: str | None = None  # the matrix folder (None: its default place, found by the worker)
    rebuildable: bool = False  # a plain model's matrix in its default place (the matrix cache's)
    user: str | None = None  # the workspace of its default place
    dtype: str = "float32"
    if_saved: IfSaved = IfSaved.REFUSE
    word_options: WordOptions | None = None  # the rows are the corpus's words, found here
    estimate: BuildEstimate | None = None  # said in the building stage

    def as_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=_plain))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MatrixRequest:
        options = dict(raw["options"])
        options["postprocess"] = PostProcess(**options.get("postprocess", {}))
        words = raw.get("word_options")
        estimate = raw.get("estimate")
        return cls(
            source=Source(**raw["source"]),
            options=MatrixOptions(**options),
            target=raw.get("target"),
            rebuildable=bool(raw.get("rebuildable")),
            user=raw.get("user"),
            dtype=raw.get("dtype", "float32"),
            if_saved=IfSaved(raw.get("if_saved", "refuse")),
            word_options=WordOptions(**words) if words else None,
            estimate=BuildEstimate(**estimate) if estimate else None,
        )


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return str(value.value) if not isinstance(value.value, tuple) else str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def submit(
    kind: str,
    request: MatrixRequest,
    *,
    words: WordVocab | None = None,
    corpus: Corpus | None = None,
    user: str | None = None,
    owner: str | None = None,
) -> JobRecord:
    """Queue a matrix build (``kind`` "matrix") or its estimate ("estimate") and return its
    queued record; the words and texts go into the job folder first. Nothing is left behind
    when the queue cannot take it (:class:`embedgen.errors.QueueUnreachable`)."""
    if kind not in ("matrix", "estimate"):
        raise ValueError(f"no matrix job kind {kind!r}")
    title = Path(request.target).name if request.target else _title(request)

    def write(folder: Path) -> None:
        if words is not None:
            _write_words(folder, words)
        if corpus is not None:
            text = {"texts": corpus.texts, "name": corpus.name, "user_dict": corpus.user_dict}
            (folder / CORPUS_FILE).write_text(json.dumps(text, ensure_ascii=False), "utf-8")

    return _submit(kind, request.as_dict(), title, write, user=user, owner=owner)


def submit_map(
    matrix: EmbeddingMatrix,
    folder: str | None,
    options: ProjectionOptions,
    *,
    user: str | None = None,
    owner: str | None = None,
) -> JobRecord:
    """Queue a map of ``matrix``: saved in ``folder`` (read from there), or, kept in no
    folder (this session's only), saved into the job folder first."""
    request = {"matrix": folder, "options": json.loads(json.dumps(asdict(options), default=_plain))}

    def write(job: Path) -> None:
        if not folder:
            save_matrix(matrix, job / KEPT_HERE)
            request["matrix"] = str(job / KEPT_HERE)

    title = f"{options.reducer.value} of {Path(folder).name if folder else matrix.label}"
    return _submit("map", request, title, write, user=user, owner=owner)


def _submit(
    kind: str,
    request: dict[str, Any],
    title: str,
    write: Callable[[Path], None],
    *,
    user: str | None,
    owner: str | None,
) -> JobRecord:
    """A new job folder for ``kind``: ``write(folder)`` puts its files in, then job.json is
    written and the task queued; the folder is removed when the queue cannot take it."""
    folder = new_job_folder(kind, title, user)
    written: list[JobRecord] = []
    try:
        write(folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise

    def prepare(task_id: str) -> None:
        record = write_queued_job(
            folder, kind, request, title=f"{kind} {title}", task_id=task_id, owner=owner
        )
        written.append(record)

    enqueue(
        _TASKS[kind],
        {"folder": str(folder)},
        prepare=prepare,
        undo=lambda: shutil.rmtree(folder, ignore_errors=True),
    )
    return written[0]


def submit_tradeoff(
    run_folder: str,
    data: LabelledData,
    similarity: list[SimilaritySet],
    *,
    user: str | None = None,
    owner: str | None = None,
) -> JobRecord:
    """Queue the trade-off of the run in ``run_folder`` over ``data``'s label words and the
    ``similarity`` files' pairs (report.tradeoff_of_data); its points come back in job.json."""
    sets = [
        {"name": s.name, "pairs": [[p.line, p.first, p.second, p.score] for p in s.pairs]}
        for s in similarity
    ]

    def write(folder: Path) -> None:
        write_data(data, folder)

    title = f"trade-off of {Path(run_folder).name}"
    request = {"run": run_folder, "similarity": sets}
    return _submit("tradeoff", request, title, write, user=user, owner=owner)


def _tradeoff(record: JobRecord, folder: Path, progress: ProgressFile, stop: Any) -> dict[str, Any]:
    """The trade-off task's work: the data's word counts per label, then the points."""
    data = read_data(folder)
    progress.set_stage("counting the words of your data", "points")
    words = WordSplitter(Corpus.of(data.texts, data.source_name))
    stats = token_stats(words, data.texts, data.labels, data.label_names)
    sets = [
        SimilaritySet(s["name"], tuple(WordPair(*pair) for pair in s["pairs"]))
        for s in record.request["similarity"]
    ]
    progress.set_stage("building and scoring the points", "points")
    run = _source(Source(run=record.request["run"]))
    points = tradeoff_of_data(run, stats, similarity=sets, progress=progress, cancel=stop)
    return {"points": json.loads(json.dumps(points, default=_number))}


@dataclass(frozen=True)
class Benchmark:
    """A benchmark file as the user gave it: its name (shown, never a path) and bytes."""

    name: str
    raw: bytes


def submit_evaluation(
    matrices: dict[str, tuple[EmbeddingMatrix, str]],
    *,
    similarity: Sequence[Benchmark] = (),
    analogy: Sequence[Benchmark] = (),
    purity: dict[str, Any] | None = None,
    data: LabelledData | None = None,
    label_words: Benchmark | None = None,
    model: Source | None = None,
    pool: bool = True,
    user: str | None = None,
    owner: str | None = None,
) -> JobRecord:
    """Queue the scores of ``matrices`` (name -> (matrix, its folder, "" for one kept in no
    folder)) on the ``similarity`` and ``analogy`` files and, with ``purity`` ({"per_label",
    "k"}), on label purity: over ``label_words`` when given, else over ``data``'s significant
    words (token rows counted with ``model``'s tokenizer). The files and data go into the job
    folder under fixed names; the tables come back in job.json (:func:`scores_of`)."""
    listed: list[dict[str, str]] = []

    def write(folder: Path) -> None:
        for n, (name, (matrix, where)) in enumerate(matrices.items()):
            if not where:  # this session's only: the worker reads it from the job folder
                where = str(folder / f"{KEPT_HERE}-{n}")
                save_matrix(matrix, where)
            listed.append({"name": name, "folder": where})
        for kind, files in (("similarity", similarity), ("analogy", analogy)):
            for n, bench in enumerate(files):
                (folder / f"{kind}-{n}.txt").write_bytes(bench.raw)
        if label_words is not None:
            (folder / LABEL_WORDS_FILE).write_bytes(label_words.raw)
        elif purity is not None and data is not None:
            write_data(data, folder)

    request = {
        "matrices": listed,
        "similarity": [b.name for b in similarity],
        "analogy": [b.name for b in analogy],
        "purity": purity,
        "label_words": label_words.name if label_words is not None else None,
        "model": asdict(model) if model is not None else None,
        "pool": pool,
    }
    title = f"scores of {len(matrices)} matri{'x' if len(matrices) == 1 else 'ces'}"
    return _submit("evaluate", request, title, write, user=user, owner=owner)


def _evaluate(record: JobRecord, folder: Path, progress: ProgressFile, stop: Any) -> dict[str, Any]:
    """The evaluate task's work: every matrix scored on every file and on label purity."""
    req = record.request
    progress.set_stage("reading the matrices and files", "")
    matrices = {m["name"]: load_matrix(m["folder"], mapped=True) for m in req["matrices"]}
    similarity_sets = [
        read_similarity((folder / f"similarity-{n}.txt").read_bytes(), name=name)
        for n, name in enumerate(req["similarity"])
    ]
    analogy_sets = [
        read_analogy((folder / f"analogy-{n}.txt").read_bytes(), name=name)
        for n, name in enumerate(req["analogy"])
    ]
    purity = None
    if req.get("purity"):
        ask = req["purity"]
        purity = PurityAsk(_leaning(req, folder), per_label=int(ask["per_label"]), k=int(ask["k"]))
    scores = score_matrices(
        matrices,
        similarity_sets=similarity_sets,
        analogy_sets=analogy_sets,
        purity=purity,
        pool=bool(req.get("pool", True)),
        progress=progress,
        cancel=stop,
    )
    return {"scores": json.loads(json.dumps(scores, default=_number))}


def _leaning(req: dict[str, Any], folder: Path) -> Callable[[EmbeddingMatrix], Leaning]:
    """Where each matrix's label words come from: the user's list, else the data's words
    that lean to a label beyond chance, counted as the matrix's rows are (jieba's words for
    word rows, the model's tokens for token rows)."""
    if req.get("label_words") is not None:
        listed = read_label_words((folder / LABEL_WORDS_FILE).read_bytes(), name=req["label_words"])
        return lambda matrix: listed.associations()
    data = read_data(folder)
    counted: dict[str, TokenStats] = {}

    def leaning(matrix: EmbeddingMatrix) -> Leaning:
        if matrix.rows_are is Rows.WORDS:
            if "words" not in counted:
                words = WordSplitter(Corpus.of(data.texts, data.source_name))
                counted["words"] = token_stats(words, data.texts, data.labels, data.label_names)
            return significant(counted["words"])
        if not req.get("model"):
            raise BadConfig("Load the model on the Model page to count its tokens in the data.")
        encoder = _source(Source(**req["model"]))
        if matrix.model_id and matrix.model_id != encoder.info.model_id:
            raise BadConfig(
                f"Its rows are the tokens of {matrix.model_id}, not of the model loaded "
                f"({encoder.info.model_id}): load {matrix.model_id} on the Model page to count "
                "its tokens in the data."
            )
        if "tokens" not in counted:
            counted["tokens"] = token_stats(
                encoder.tokenizer, data.texts, data.labels, data.label_names
            )
        return significant(counted["tokens"])

    return leaning


def scores_of(record: JobRecord) -> dict[str, list[dict[str, Any]]]:
    """The tables of a finished evaluate job (:func:`embedgen.scores.score_matrices`)."""
    return record.result["scores"]


def _number(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return _plain(value)


def _write_words(folder: Path, words: WordVocab) -> None:
    record = {"words": words.words, "counts": words.counts, "record": words.record}
    (folder / WORDS_FILE).write_text(json.dumps(record, ensure_ascii=False), "utf-8")


def _title(request: MatrixRequest) -> str:
    source = request.source
    what = Path(source.run).name if source.run else Path(str(source.model)).name
    return f"{request.options.method} of {what}"


def _target(
    req: MatrixRequest, source: Any, words: WordVocab | None, corpus: Corpus | None
) -> Target:
    """Where the requested matrix goes: the folder asked for, else its default place."""
    if req.target is not None:
        return Target(Path(req.target), req.rebuildable, saved_matrix(Path(req.target)))
    return target_for(source, req.options, words=words, corpus=corpus, user=req.user)


def words_of(folder: str | os.PathLike[str]) -> WordVocab | None:
    """The word list a job was given or found (an estimate of the data's words keeps them)."""
    path = Path(folder) / WORDS_FILE
    if not path.exists():
        return None
    raw = json.loads(path.read_text("utf-8"))
    return WordVocab(tuple(raw["words"]), tuple(raw["counts"]), raw.get("record") or {})


def estimate_asked(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What the Matrix page asked an estimate job for (its request and texts), read back from
    the job folder: a reloaded page takes the estimate up and builds when it ends. None when
    the folder is gone or holds no matrix request."""
    record = reread(folder)
    if record is None:
        return None
    try:
        request = MatrixRequest.from_dict(record.request)
    except (KeyError, TypeError, ValueError):
        return None
    return {"request": request, "corpus": _corpus_of(Path(folder))}


def _corpus_of(folder: Path) -> Corpus | None:
    path = folder / CORPUS_FILE
    if not path.exists():
        return None
    raw = json.loads(path.read_text("utf-8"))
    return Corpus.of(raw["texts"], raw["name"], user_dict=raw.get("user_dict"))


def _source(source: Source) -> Any:
    """The run or encoder a worker builds from: the model's weights loaded once per worker."""
    if source.run is not None:
        model = read_run_record(source.run).model
        loaded = None
        try:
            loaded = encoder_for(
                str(model.get("model_id")),
                trust_remote_code=source.trust_remote_code,
                allow_download=False,
                allow_pickle=source.allow_pickle,
            )
        except EmbedgenError as exc:  # the run loads its model itself, as it can
            log.info("Run %s loads its own encoder: %s", Path(source.run).name, exc)
        return load_run(source.run, loaded=loaded)
    assert source.model is not None
    return encoder_for(
        source.model,
        trust_remote_code=source.trust_remote_code,
        allow_download=source.allow_download,
        allow_pickle=source.allow_pickle,
    )


def _build(record: JobRecord, folder: Path, progress: ProgressFile, stop: Any) -> dict[str, Any]:
    """The matrix task's work: build and save; what job.json's result says."""
    req = MatrixRequest.from_dict(record.request)
    source, words, corpus = _source(req.source), words_of(folder), _corpus_of(folder)
    if words is None and req.word_options is not None and corpus is not None:
        progress.set_stage("segmenting your texts into words")
        words = words_from_corpus(corpus, req.word_options)  # once: for the name and the rows
    saved = build_and_save(
        source,
        req.options,
        _target(req, source, words, corpus),
        words=words,
        corpus=corpus,
        dtype=req.dtype,
        if_saved=req.if_saved,
        estimate=req.estimate,
        progress=progress,
        cancel=stop,
    )
    result = {"name": saved.name, "dtype": saved.dtype, "described": describe(saved.matrix)}
    if saved.folder is None:  # over the operator's matrix budget: here, for the page to take
        save_matrix(saved.matrix, folder / KEPT_HERE, dtype=saved.dtype)
        return {
            **result,
            "folder": str(folder / KEPT_HERE),
            "kept": False,
            "not_kept": saved.not_kept,
        }
    return {**result, "folder": str(saved.folder), "kept": True}


def _estimate(record: JobRecord, folder: Path, progress: ProgressFile, stop: Any) -> dict[str, Any]:
    """The estimate task's work: the data's words found (kept in the job folder for the
    build), and the build timed on a sample; what job.json's result says."""
    req = MatrixRequest.from_dict(record.request)
    corpus = _corpus_of(folder)
    words = words_of(folder)
    if words is None and req.word_options is not None and corpus is not None:
        progress.set_stage("segmenting your texts into words")
        words = words_from_corpus(corpus, req.word_options)
        _write_words(folder, words)
    progress.set_stage("measuring this machine's speed on a sample of rows")
    source = _source(req.source)
    estimate = estimate_build(source, req.options, words=words, corpus=corpus)
    target = _target(req, source, words, corpus)
    return {
        "estimate": asdict(estimate) if estimate is not None else None,
        "words": len(words) if words is not None else None,
        "target": str(target.folder),
        "rebuildable": target.rebuildable,
        "existing": target.existing,
    }


def _map(record: JobRecord, folder: Path, progress: ProgressFile, stop: Any) -> dict[str, Any]:
    """The map task's work: the projection (from the map cache when it holds it), saved in
    the job folder for the page; what job.json's result says."""
    options = ProjectionOptions(**record.request["options"])
    matrix = load_matrix(record.request["matrix"])
    projection = project(matrix, options, progress=progress, cancel=stop)
    with (folder / MAP_FILE).open("wb") as f:
        np.savez(f, coords=projection.coords, rows=projection.rows)
    return {
        "seconds": projection.seconds,
        "from_cache": projection.from_cache,
        "details": projection.details,
    }


def projection_of(record: JobRecord) -> Projection:
    """The map a finished map job saved, as :func:`embedgen.projection.project` returns it."""
    with np.load(Path(record.folder) / MAP_FILE, allow_pickle=False) as z:
        coords, rows = z["coords"], z["rows"]
    result = record.result
    options = ProjectionOptions(**record.request["options"])
    return Projection(
        coords, options, result["seconds"], result["from_cache"], rows, result["details"]
    )


_WORK = {
    "matrix": _build,
    "estimate": _estimate,
    "map": _map,
    "tradeoff": _tradeoff,
    "evaluate": _evaluate,
}


def run_job(payload: dict[str, Any]) -> RunStatus:
    """A worker's task: claim the job in ``payload["folder"]``, do its work with a heartbeat
    and the ``cancel`` file watched, and end it truthfully (finished, cancelled, failed with
    the reason); return the status it ended with."""
    folder = Path(payload["folder"])
    try:
        record = claim_job(folder)
    except Cancelled:
        log.info("Skipped job %s: it is no longer queued", folder.name)
        return RunStatus.CANCELLED
    status, message, result = RunStatus.FAILED, "", {}
    with beating(folder / HEARTBEAT_FILE, HEARTBEAT_SECONDS), watch_cancel(folder) as stop:
        try:
            if (folder / CANCEL_FILE).exists():
                raise Cancelled("Cancelled before it started.")
            result = _WORK[record.kind](record, folder, ProgressFile(folder), stop)
            status = RunStatus.FINISHED
        except Cancelled:
            status, message = RunStatus.CANCELLED, "Cancelled: nothing was saved."
        except EmbedgenError as exc:
            message = str(exc)
        except Exception as exc:  # the reason goes into job.json; the trace into the log
            log.exception("Job %s failed", folder.name)
            message = failure_message(exc, folder)
        end_job(folder, status, message, result)
    (folder / CANCEL_FILE).unlink(missing_ok=True)
    free_memory()
    return status


def take_result(record: JobRecord) -> Path | None:
    """The folder of a finished matrix job's matrix (None when it has none)."""
    if record.status is not RunStatus.FINISHED or record.kind != "matrix":
        return None
    folder = record.result.get("folder")
    return Path(folder) if folder else None


def reread(folder: str | os.PathLike[str]) -> JobRecord | None:
    """The job's record now, or None when its folder is gone or damaged."""
    try:
        return read_job(folder)
    except BadRun:
        return None


_TASKS = {
    "matrix": MATRIX_TASK,
    "estimate": ESTIMATE_TASK,
    "map": MAP_TASK,
    "tradeoff": TRADEOFF_TASK,
    "evaluate": EVALUATE_TASK,
}
QUICK_KINDS = ("estimate", "map", "tradeoff", "evaluate")  # beside a training, not after it
for _kind, _name in _TASKS.items():
    register_task(_name, run_job, quick=_kind in QUICK_KINDS)
