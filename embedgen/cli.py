"""The ``embedgen`` command: one subcommand per step, progress bars, one-line errors.

Exit codes: 0 success, 2 bad input (one line on stderr saying what and where), 1 a bug
(one line; ``--debug`` shows the traceback), 130 interrupted, 3 training cancelled by Ctrl-C,
128 + N training stopped by signal N (143 for SIGTERM, 129 for SIGHUP) after saving its best
finished epoch, as ``kill`` would have ended it but without losing the epochs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedgen import __version__

log = logging.getLogger("embedgen")


class _Bar:
    """A tqdm bar driven by ``progress(done, total)`` callbacks."""

    def __init__(self, desc: str, enabled: bool, unit: str) -> None:
        self.desc = desc
        self.enabled = enabled
        self.unit = unit
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None or self.bar.total != total:
            from tqdm import tqdm

            if self.bar is not None:
                self.bar.close()
            self.bar = tqdm(
                total=total, desc=self.desc, unit=self.unit, leave=False, file=sys.stderr
            )
        self.bar.n = done
        self.bar.refresh()

    def set_stage(self, name: str, unit: str = "") -> None:
        """A new stage: a new bar named after it (see :func:`embedgen.progress.stage`)."""
        self.close()
        self.desc = name
        self.unit = unit or self.unit

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextlib.contextmanager
def _progress(desc: str, args: argparse.Namespace, unit: str) -> Iterator[_Bar]:
    bar = _Bar(desc, enabled=args.progress or (sys.stderr.isatty() and not args.quiet), unit=unit)
    try:
        yield bar
    finally:
        bar.close()


@contextlib.contextmanager
def _cancel_on_ctrl_c() -> Iterator[threading.Event]:
    """First Ctrl-C asks the work to stop after the current batch; a second one aborts."""
    cancel = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield cancel
        return

    def handler(signum: int, frame: object) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        print("\nStopping after the current batch (Ctrl-C again to abort)...", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)


# What a scheduler, systemd or a closing terminal sends to ask a process to end.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@dataclass
class _Stop:
    """The signal that asked the work to stop, once one has."""

    signum: int | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or 0)


@contextlib.contextmanager
def _stop_on_signals(cancel: threading.Event) -> Iterator[_Stop]:
    """SIGTERM and SIGHUP ask the work to stop after the current batch, as Ctrl-C does, instead
    of killing it: training then keeps its best finished epoch."""
    stop = _Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: object) -> None:
        stop.signum = stop.signum or signum
        cancel.set()

    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for signum, old in previous.items():
            signal.signal(signum, signal.SIG_DFL if old is None else old)


def _queue_training(args: argparse.Namespace, name: str, data: Any, config: Any) -> int:
    """``embedgen train --queue``: the run queued for the workers, its folder printed at once
    (the model is loaded by the worker, as for the app's runs)."""
    from embedgen import jobs
    from embedgen.paths import new_run_folder

    folder = Path(args.out) if args.out else new_run_folder(name, str(config.strategy))
    folder.mkdir(parents=True, exist_ok=True)
    request = jobs.TrainRequest(
        model=str(Path(args.model).resolve()) if Path(args.model).is_dir() else args.model,
        folder=str(folder.resolve()),
        config=config.as_dict(),
        trust_remote_code=args.trust_remote_code,
        allow_pickle=_pickles(args),
    )
    jobs.submit(request, data)
    _say(args, f"Queued {config.strategy} on {len(data)} rows: follow it with embedgen runs")
    if not jobs.live_workers():
        _say(args, "No worker is running on this queue: start one with embedgen worker")
    print(folder.resolve())
    return 0


def _model_flags(parser: argparse.ArgumentParser) -> None:
    """What a command that loads a model may let it do."""
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="run the model repository's own code"
    )
    parser.add_argument(
        "--allow-pickled-weights",
        action="store_true",
        help="load a model whose only weights are pytorch_model.bin (a pickle can run code)",
    )


def _load_model(args: argparse.Namespace, spec: str) -> Any:
    """The encoder ``spec`` names, loaded as the command's flags allow."""
    from embedgen.models import load_encoder

    return load_encoder(spec, trust_remote_code=args.trust_remote_code, allow_pickle=_pickles(args))


def _pickles(args: argparse.Namespace) -> bool:
    """Whether pickled-only weights may load: --allow-pickled-weights, or the operator's
    allow_pickled_weights."""
    from embedgen.settings import operator_settings

    return bool(getattr(args, "allow_pickled_weights", False)) or (
        operator_settings().allow_pickled_weights
    )


def _say(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(message, file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Subcommands
# --------------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from embedgen.data import prepare
    from embedgen.paths import new_run_folder
    from embedgen.runs import ensure_new_run_dir, train_and_save
    from embedgen.table import read_table
    from embedgen.train import FinetuneConfig, distributed, finetune

    rank0 = distributed.is_main()  # under torchrun, rank 0 alone reports and writes the run
    if not rank0:
        args.quiet, args.progress = True, False
        logging.getLogger("embedgen").setLevel(logging.WARNING)
    table = read_table(args.data, header=HEADER[args.header], sheet=args.sheet)
    data = prepare(table, args.text_col, args.label_col)
    if data.dropped:
        _say(args, f"{table.name}: {data.dropped_summary()}")
    config = FinetuneConfig(**_settings(args, FinetuneConfig))
    if args.out and rank0:  # refused before the model loads, which takes a while
        ensure_new_run_dir(args.out)
    if args.queue:
        return _queue_training(args, table.name, data, config)
    encoder = _load_model(args, args.model)
    if not rank0:  # the other processes train alongside rank 0 and write nothing
        with _cancel_on_ctrl_c() as cancel, _stop_on_signals(cancel) as stopped:
            run = finetune(encoder, data, config, cancel=cancel)
        if stopped.signum and run.cancelled:
            return stopped.exit_code
        return 3 if run.cancelled else 0
    out = Path(args.out) if args.out else new_run_folder(table.name, str(config.strategy))
    _say(
        args,
        f"Training {config.strategy} on {len(data)} rows, {data.num_classes} classes "
        f"({encoder.info.model_id}, device {config.device}) -> {out}",
    )

    def on_epoch(m: Any) -> None:
        _say(
            args,
            f"epoch {m.epoch}: train loss {m.train_loss:.4f}  val loss {m.val_loss:.4f}  "
            f"val acc {m.val_accuracy:.4f}  val macro-F1 {m.val_macro_f1:.4f}",
        )

    with (
        _cancel_on_ctrl_c() as cancel,
        _stop_on_signals(cancel) as stopped,
        _progress("train", args, unit="row") as bar,
    ):
        run = train_and_save(
            encoder, data, config, out, progress=bar, cancel=cancel, on_epoch=on_epoch
        )
    return _trained(run, out, config, stopped)


def _trained(run: Any, out: Path, config: Any, stopped: _Stop) -> int:
    """Say how the run ended; its exit code (0 finished, 3 cancelled, or the signal's)."""
    from embedgen.runs import RunStatus, status_of

    status = status_of(run)
    if stopped.signum and status is RunStatus.CANCELLED:
        kept = (
            f"after epoch {len(run.history)} of {config.epochs}; the best epoch "
            f"({run.best_epoch}) is saved in {out}."
            if run.history
            else "before its first epoch finished; nothing was saved."
        )
        print(f"Stopped by {stopped.name} {kept}", file=sys.stderr)
        return stopped.exit_code
    best = run.best
    summary = f"{status}: {run.message} " if run.message else f"{status}: "
    if best is not None:
        summary += (
            f"best epoch {best.epoch}, val acc {best.val_accuracy:.4f}, "
            f"val macro-F1 {best.val_macro_f1:.4f}. "
        )
    print(summary + f"Run saved to {out}")
    return 0 if status is RunStatus.FINISHED else 3


def cmd_matrix(args: argparse.Namespace) -> int:
    from embedgen.errors import AlreadySaved, BadConfig, NotKept
    from embedgen.matrix import (
        MatrixCache,
        MatrixOptions,
        build_and_save,
        describe,
        target_for,
    )
    from embedgen.postprocess import PostProcess
    from embedgen.runs import is_run_folder, load_run

    settings, defaults_taken = _matrix_defaults(args)
    options = MatrixOptions(**settings, postprocess=PostProcess(**_settings(args, PostProcess)))
    if args.queue:
        for note in defaults_taken:
            _say(args, note)
        return _queue_matrix(args, options)
    words, corpus = _words_and_corpus(args)
    source: Any
    if is_run_folder(args.source):
        source = load_run(args.source)
    else:
        source = _load_model(args, args.source)
    target = target_for(source, options, words=words, corpus=corpus, out=args.out)
    if target.rebuildable and MatrixCache().budget <= 0:  # said before the work, not after
        raise BadConfig(
            "Matrices built from a model are not kept on this server (matrix_cache_mb / "
            "EMBEDGEN_MATRIX_CACHE_MB is 0). Pass --out FOLDER to save this one where you choose."
        )
    if_saved = _if_saved(args)
    try:
        with _cancel_on_ctrl_c() as cancel, _progress("matrix", args, unit="batch") as bar:
            saved = build_and_save(
                source,
                options,
                target,
                words=words,
                corpus=corpus,
                dtype=args.dtype,
                if_saved=if_saved,
                progress=bar,
                cancel=cancel,
            )
    except AlreadySaved as exc:
        raise AlreadySaved(
            f"{target.folder} already holds a matrix. Pass --overwrite to replace it, "
            f"--keep-both to keep both (the new one as {target.beside().name}), or --out a new "
            "folder."
        ) from exc
    if saved.folder is None:
        raise NotKept(
            f"{saved.not_kept} Pass --out FOLDER to save it where you choose (never removed), or "
            "raise EMBEDGEN_MATRIX_CACHE_MB."
        )
    print(describe(saved.matrix))
    print(f"  written to {saved.folder} ({saved.dtype})")
    for note in defaults_taken:
        _say(args, note)
    return 0


def _if_saved(args: argparse.Namespace) -> Any:
    """What to do with a matrix already saved where this one goes: --overwrite, --keep-both,
    else refuse."""
    from embedgen.matrix import IfSaved

    if args.keep_both:
        return IfSaved.KEEP_BOTH
    return IfSaved.REPLACE if args.overwrite else IfSaved.REFUSE


def _matrix_defaults(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """The matrix settings as given, the method and the CJK filter left out following the
    source as on the Matrix page: from a run, contextual (tuned) token rows, CJK only when the
    run's data was mostly Chinese; word rows (--words, --corpus), aggregated; a plain model,
    its embedding table. With them, a line for each default taken, to say once built."""
    from embedgen.matrix import MatrixOptions, default_method
    from embedgen.runs import is_run_folder, read_run_record

    settings, notes = _settings(args, MatrixOptions), []
    from_run = is_run_folder(args.source)
    if settings["method"] is None:
        word_rows = bool(args.words or args.corpus)
        settings["method"] = default_method(from_run, word_rows)
        why = "for word rows" if word_rows else "from a run" if from_run else "from a model"
        notes.append(f"Method: {settings['method']} (the default {why}; --method to choose)")
    if settings["cjk_only"] is None:
        chinese = from_run and bool(read_run_record(args.source).dataset.get("mostly_cjk"))
        settings["cjk_only"] = chinese
        if chinese:
            notes.append("CJK tokens only: the run's data is mostly Chinese (--all-tokens for all)")
    return settings, notes


def _queue_matrix(args: argparse.Namespace, options: Any) -> int:
    """``embedgen matrix --queue``: the build queued for the workers, its job folder printed
    at once (the worker loads the model, finds the data's words and the matrix's folder)."""
    from embedgen import jobs, tasks
    from embedgen.runs import is_run_folder
    from embedgen.words import WordOptions, words_from_list

    _, corpus = _words_and_corpus(args, words=False)
    words = words_from_list(Path(args.words)) if args.words else None
    if is_run_folder(args.source):
        source = tasks.Source(run=str(Path(args.source).resolve()))
    else:
        spec = Path(args.source)
        source = tasks.Source(
            model=str(spec.resolve()) if spec.is_dir() else args.source,
            trust_remote_code=args.trust_remote_code,
            allow_pickle=_pickles(args),
        )
    if_saved = _if_saved(args)
    request = tasks.MatrixRequest(
        source,
        options,
        target=str(Path(args.out).resolve()) if args.out else None,
        dtype=args.dtype,
        if_saved=if_saved,
        word_options=WordOptions(**_settings(args, WordOptions))
        if corpus is not None and words is None
        else None,
    )
    record = tasks.submit("matrix", request, words=words, corpus=corpus)
    _say(args, "Queued the matrix: follow it with embedgen runs")
    if not jobs.live_workers():
        _say(args, "No worker is running on this queue: start one with embedgen worker")
    print(record.folder)
    return 0


def _words_and_corpus(args: argparse.Namespace, *, words: bool = True) -> tuple[Any, Any]:
    """The word rows (--words, or the words of --corpus) and the corpus, or None for each."""
    from embedgen.errors import BadConfig
    from embedgen.table import read_table, resolve_column
    from embedgen.words import Corpus, WordOptions, words_from_corpus, words_from_list

    corpus = None
    if args.corpus:
        if not args.text_col:
            raise BadConfig("--corpus needs --text-col: the column that holds the texts.")
        table = read_table(args.corpus, header=HEADER[args.header], sheet=args.sheet)
        column = resolve_column(table, args.text_col)
        texts = [t.strip() for t in table.frame[column] if t.strip()]
        if len(texts) < len(table):
            _say(args, f"{table.label}: {len(table) - len(texts)} empty texts left out")
        corpus = Corpus.of(texts, table.label, user_dict=args.user_dict)
    elif args.text_col or args.user_dict:
        raise BadConfig("--text-col and --user-dict go with --corpus FILE.")
    if not words:
        return None, corpus
    if args.words:
        return words_from_list(Path(args.words)), corpus
    if corpus is not None:
        return words_from_corpus(corpus, WordOptions(**_settings(args, WordOptions))), corpus
    return None, None


def cmd_neighbors(args: argparse.Namespace) -> int:
    from embedgen.matrix import load_matrix
    from embedgen.neighbours import NeighbourIndex

    index = NeighbourIndex(load_matrix(args.matrix))
    only = index.cjk_rows() if args.chinese_only else None
    if args.pair:
        a, b = args.pair
        print(f"cosine({a}, {b}) = {index.similarity(a, b):.4f}")
        return 0
    if args.analogy:
        a, b, c = args.analogy
        results = index.analogy(a, b, c, k=args.k, only=only)
        title = f"{a} : {b} :: {c} : ?"
    else:
        lookup = index.lookup(args.word)
        results = index.top_k(args.word, k=args.k, only=only)
        title = args.word
        if lookup.pooled:
            title += f"  (not in vocabulary: mean of {' + '.join(lookup.pieces)})"
    if args.json:
        print(
            json.dumps([{"token": n.token, "score": n.score} for n in results], ensure_ascii=False)
        )
        return 0
    print(title)
    for rank, n in enumerate(results, 1):
        print(f"{rank:>3}  {n.token}\t{n.score:.4f}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from embedgen.errors import BadConfig
    from embedgen.evaluate import evaluate, read_analogy, read_label_words, read_similarity
    from embedgen.matrix import load_matrix

    if not args.similarity and not args.analogy and not args.label_words:
        raise BadConfig(
            "nothing to evaluate: give --similarity FILE (word pairs with scores), --analogy "
            "FILE (word2vec analogy questions) or --label-words FILE (word and label a line)."
        )
    if (args.matrix is None) == (args.all is None):
        raise BadConfig("give a MATRIX_DIR to score it, or --all RUN_DIR_OR_MODEL, not both.")
    # Read the files before the matrix, so a bad file is refused at once.
    similarity = [read_similarity(f) for f in args.similarity]
    analogy = [read_analogy(f) for f in args.analogy]
    if args.search_words < 0:
        raise BadConfig("--search-words must be 0 (none) or more.")
    if args.all is not None:
        if args.label_words:
            raise BadConfig("--label-words scores one MATRIX_DIR, not --all.")
        return _evaluate_all(args, similarity, analogy)
    if args.corpus:
        raise BadConfig("--corpus goes with --all (it is read to build aggregated matrices).")
    if args.search_words:
        raise BadConfig("--search-words goes with --all (it adds rows to the matrices built).")
    label_words = read_label_words(Path(args.label_words)) if args.label_words else None
    report = evaluate(
        load_matrix(args.matrix),
        similarity,
        analogy,
        pool=args.pool,
        label_words=label_words,
        k=args.k,
    )
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    rows, dims = report["matrix"]["shape"]
    method = report["matrix"]["method"] or "hand-made"
    print(f"{args.matrix}: {method} matrix {rows} x {dims}, pooling {'on' if args.pool else 'off'}")
    for r in report["similarity"]:
        print(
            f"{r['file']}: Spearman {_score(r['spearman'])}  Pearson {_score(r['pearson'])}  "
            f"pairs {r['pairs_found']}/{r['pairs_total']}{_words_note(r)}"
        )
    for r in report["analogy"]:
        print(f"{r['file']}: {_analogy_line(r)}{_words_note(r)}")
        for s in r["sections"]:
            print(f"  {s['section']}: {_analogy_line(s)}")
    if (p := report.get("label_purity")) is not None:
        rows = ", ".join(f"{n} of label {label}" for label, n in p["rows"].items())
        print(
            f"{p['file']}: label purity {p['purity']:.3f} [{p['low']:.3f}, {p['high']:.3f}] "
            f"(k={p['k']}; words that are rows: {rows}; {p['not_rows']} are not)"
        )
    return 0


def _evaluate_all(args: argparse.Namespace, similarity: list[Any], analogy: list[Any]) -> int:
    """``evaluate --all SOURCE``: every method and option built from SOURCE, scored."""
    from embedgen.report import evaluate_all, markdown
    from embedgen.runs import is_run_folder, load_run

    _, corpus = _words_and_corpus(args, words=False)
    if is_run_folder(args.all):
        source: Any = load_run(args.all)
    else:
        source = _load_model(args, args.all)
    with _cancel_on_ctrl_c() as cancel, _progress("report", args, unit="matrix") as bar:
        records = evaluate_all(
            source,
            similarity,
            analogy,
            corpus=corpus,
            search_words=args.search_words,
            progress=bar,
            cancel=cancel,
        )
    if args.json:
        print(json.dumps(records, ensure_ascii=False, indent=2))
    else:
        print(markdown(records), end="")
    return 0


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _analogy_line(r: dict[str, Any]) -> str:
    return (
        f"3CosAdd {_score(r['accuracy_3cosadd'])}  3CosMul {_score(r['accuracy_3cosmul'])}  "
        f"questions {r['questions_found']}/{r['questions_total']} "
        f"({100 * r['coverage']:.1f}% covered)"
    )


def _words_note(r: dict[str, Any]) -> str:
    note = f"  pooled {len(r['pooled'])}  missing {len(r['missing'])}"
    if r["malformed"]:
        note += f"  malformed lines {len(r['malformed'])} (--json lists them)"
    return note


def cmd_export(args: argparse.Namespace) -> int:
    from embedgen.export import ExportFormat, export
    from embedgen.matrix import load_matrix

    matrix = load_matrix(args.matrix)
    dtype = matrix.dtype  # keep what the matrix was saved as
    path = export(matrix, ExportFormat(args.format), Path(args.out), dtype=dtype)
    print(f"{args.format} export of {matrix.shape[0]} x {matrix.shape[1]} written to {path}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from embedgen import tasks  # noqa: F401  (its tasks: matrix builds and estimates)
    from embedgen.errors import BadConfig
    from embedgen.jobs import run_worker

    if args.workers < 1:
        raise BadConfig(f"--workers {args.workers}: give at least 1.")
    run_worker(args.workers, args.worker_type, stop_with=args.stop_with)
    return 0


def _all_folders(kind: str = "runs") -> list[Path]:
    """The shared ``runs`` (or ``jobs``) folder, then each workspace's (an operator sees them
    all)."""
    from embedgen.paths import embedgen_home, users_dir

    roots = [embedgen_home() / kind]
    if users_dir().is_dir():
        roots += sorted(p / kind for p in users_dir().iterdir() if (p / kind).is_dir())
    return roots


def cmd_runs(args: argparse.Namespace) -> int:
    from embedgen.errors import BadConfig
    from embedgen.jobrecord import list_jobs
    from embedgen.runs import list_runs

    if args.compare is not None:
        return _compare_runs(args)
    extras = {"--words": args.words, "--k": args.k, "--matrix": args.matrix}
    given = [flag for flag, value in extras.items() if value is not None]
    if given:
        raise BadConfig(f"{', '.join(given)} go with --compare RUN RUN: name the runs to compare.")
    records = [r for root in _all_folders() for r in list_runs(root)]
    found = [j for root in _all_folders("jobs") for j in list_jobs(root)]
    if args.active:
        records = [r for r in records if r.status.active]
        found = [j for j in found if j.status.active]
    if not records and not found:
        print("No runs or jobs are queued or running." if args.active else "No runs yet.")
        return 0
    lines = []
    for r in records:
        f1 = r.best_f1  # while training: the best epoch so far
        score = "no epoch" if f1 is None else f"best F1 {f1:.3f}"
        what = f"training\t{len(r.history)} epochs, {score}"
        lines.append((r.when, f"{r.status}\t{r.when}\t{what}\t{r.folder}"))
    for j in found:
        said = j.message or j.result.get("folder", "")
        lines.append((j.when, f"{j.status}\t{j.when}\t{j.title}\t{said}\t{j.folder}"))
    for _, line in sorted(lines, reverse=True):
        print(line)
    return 0


def _compare_runs(args: argparse.Namespace) -> int:
    """``embedgen runs --compare RUN RUN ...``: the settings that differ, the metrics and, with
    --words, each word's neighbours in a matrix of each run, side by side."""
    from embedgen import compare
    from embedgen.errors import BadConfig
    from embedgen.runs import read_run_record

    if args.active:
        raise BadConfig("--compare lists the runs it is given; leave out --active.")
    if len(args.compare) < 2:
        raise BadConfig("--compare needs at least two runs: --compare RUN RUN [RUN ...].")
    words = _word_list(args.words)
    if not words and (args.k is not None or args.matrix is not None):
        raise BadConfig("--k and --matrix go with --words: the words whose neighbours to show.")
    k = 5 if args.k is None else args.k
    if k < 1:
        raise BadConfig(f"--k {k}: ask for at least 1 neighbour.")
    folders = [_run_named(spec).resolve() for spec in args.compare]
    twice = [f.name for i, f in enumerate(folders) if f in folders[:i]]
    if twice:
        raise BadConfig(f"Run '{twice[0]}' is given twice; give each run once.")
    records = [read_run_record(f) for f in folders]
    names = [r.name for r in records]
    differ = compare.settings_diff(records)
    print("Settings that differ")
    if differ:
        _print_table(["setting", *names], [[name, *values] for name, values in differ])
    else:
        print("  (none)")
    same = len(compare.same_settings(records))
    print(f"{same} other setting{'s are' if same != 1 else ' is'} the same.\n")
    print("Metrics (validation, at the best epoch)")
    _print_table(_METRIC_COLUMNS, [_metric_cells(m) for m in compare.metrics_table(records)])
    if words:
        _print_neighbours(records, words, k, args.matrix)
    return 0


_METRIC_COLUMNS = [
    "run",
    "model",
    "status",
    "epochs",
    "best epoch",
    "macro-F1",
    "accuracy",
    "val loss",
    "seconds",
]


def _metric_cells(m: Any) -> list[str]:
    def num(value: float | None, digits: int = 3) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    best = "—" if m.best_epoch is None else str(m.best_epoch)
    return [
        m.run,
        m.model,
        m.status,
        str(m.epochs),
        best,
        num(m.val_macro_f1),
        num(m.val_accuracy),
        num(m.val_loss),
        num(m.seconds, 1),
    ]


def _print_neighbours(records: list[Any], words: list[str], k: int, name: str | None) -> None:
    """The matrices compared, then each word's neighbours, one column a run, then the notes."""
    from embedgen import compare

    opened = compare.open_matrices(compare.matrices_to_compare(records, name))
    print("\nMatrices")
    for matrix, choice in opened:
        what = f"{choice.name}  ({matrix.label})" if matrix is not None else "none"
        print(f"  {choice.run}: {what}")
    names = [choice.run for _, choice in opened]
    for found in compare.neighbours_side_by_side([m for m, _ in opened], words, k=k):
        print(f"\nNeighbours of {found.word}")
        rows: list[list[str]] = []
        if any(len(a.pieces) > 1 for a in found.answers):
            rows.append(
                [f"({' + '.join(a.pieces)})" if len(a.pieces) > 1 else "" for a in found.answers]
            )
        for i in range(max(max(len(a.neighbours), bool(a.note)) for a in found.answers)):
            rows.append([_neighbour_cell(a, i) for a in found.answers])
        _print_table(names, rows)
    notes = list(dict.fromkeys(choice.note for _, choice in opened if choice.note))
    if notes:
        print("\nNotes")
        for note in notes:
            print(f"  - {note}")


def _neighbour_cell(answer: Any, i: int) -> str:
    if i < len(answer.neighbours):
        token, cosine = answer.neighbours[i]
        return f"{i + 1}. {token} {cosine:.3f}"
    return f"({answer.note})" if answer.note and i == 0 else ""


def _word_list(text: str | None) -> list[str]:
    """--words as a list (``compare.word_list``: 干净，服务 too)."""
    from embedgen.compare import word_list

    return word_list(text or "")


def _run_named(spec: str) -> Path:
    """The run folder ``spec`` names: a run folder's path, or the folder name of one run in
    the folders `embedgen runs` lists; BadRun when it names none, or several."""
    from embedgen.errors import BadRun
    from embedgen.paths import embedgen_home
    from embedgen.runs import is_run_folder, read_run_record

    path = Path(spec)
    if is_run_folder(path):
        return path
    found = [
        root / spec for root in _all_folders() if path.name == spec and is_run_folder(root / spec)
    ]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        where = ", ".join(str(f) for f in found)
        raise BadRun(
            f"'{spec}' names {len(found)} runs ({where}): give the folder of the one you mean."
        )
    if path.exists():
        read_run_record(path)  # says why it is no run folder
    raise BadRun(
        f"No run '{spec}': it is neither a run folder nor the name of a run in "
        f"{embedgen_home() / 'runs'} or a workspace. Give a run folder's path, or a name "
        "that `embedgen runs` lists."
    )


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    """Columns padded by their width on screen (a Chinese character takes two columns)."""
    table = [header, *rows]
    widths = [max(_width(row[c]) for row in table) for c in range(len(header))]
    for row in table:
        cells = [cell + " " * (w - _width(cell)) for cell, w in zip(row, widths, strict=True)]
        print("  " + "  ".join(cells).rstrip())


def _width(text: str) -> int:
    """Columns ``text`` takes in a terminal: two for wide (East Asian) characters."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def cmd_cancel(args: argparse.Namespace) -> int:
    from embedgen import jobs
    from embedgen.errors import BadRun
    from embedgen.jobrecord import is_job_folder
    from embedgen.runs import read_run_record

    folder = Path(args.run)
    if is_job_folder(folder):
        return _cancel_job(folder)
    record = read_run_record(folder)
    if not record.status.active:
        raise BadRun(
            f"Run '{folder.name}' is {record.status}, not queued or training: nothing to stop."
        )
    if record.task_id:  # the queue's: its worker watches for the cancel file
        if jobs.cancel(folder):
            print(f"Cancelled {folder.name} before a worker took it up; nothing is kept.")
        else:
            print(
                f"Asked {folder.name} to stop: it stops after its current batch (within a "
                "second or so) and keeps its finished epochs."
            )
        return 0
    pid = record.pid  # `embedgen train`: it stops on SIGTERM and keeps its best epoch
    if record.host != socket.gethostname() or pid is None:
        raise BadRun(
            f"Run '{folder.name}' is trained by `embedgen train` on {record.host}: stop "
            "that command there (Ctrl+C, or kill PID)."
        )
    os.kill(pid, signal.SIGTERM)
    print(
        f"Sent SIGTERM to `embedgen train` (pid {pid}): {folder.name} stops after its current "
        "batch and keeps its best finished epoch."
    )
    return 0


def _cancel_job(folder: Path) -> int:
    """Stop a queued or running job (a matrix build): one not yet taken ends at once; a
    running one sees the cancel file within a second and saves nothing."""
    from embedgen.errors import BadRun
    from embedgen.jobrecord import cancel_queued_job, read_job
    from embedgen.jobs import CANCEL_FILE

    record = read_job(folder)
    if not record.status.active:
        raise BadRun(
            f"Job '{folder.name}' is {record.status}, not queued or running: nothing to stop."
        )
    (folder / CANCEL_FILE).touch()
    if cancel_queued_job(folder):
        print(f"Cancelled {folder.name} before a worker took it up.")
    else:
        print(f"Asked {folder.name} to stop: it stops within a second or so and saves nothing.")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from embedgen.models import list_cached_models

    models = list_cached_models()
    if not models:
        print(
            "No models in the local Hugging Face cache. Give a local folder with --model instead."
        )
        return 0
    for m in models:
        print(f"{m.model_id}\t{m.revision[:12]}\t{m.size_bytes / 1e6:.0f} MB\t{m.path}")
    return 0


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


HEADER = {"auto": None, "yes": True, "no": False}  # --header: guess, or say


def _add_settings(parser: Any, cls: Any, follows: dict[str, str] | None = None) -> None:
    """A flag for each setting of the config dataclass ``cls``: its default, limits-aware help,
    type and choices all come from the field (``embedgen.fields``). ``follows`` names settings
    whose default follows the source instead (None until the command decides), with what the
    help says of it."""
    from embedgen.fields import specs

    follows = follows or {}
    for spec in specs(cls).values():
        if spec.flag == "":
            continue
        kwargs: dict[str, Any] = {"dest": spec.name, "help": spec.describe()}
        if spec.name in follows:
            kwargs["help"] += f" (default: {follows[spec.name]})"
        if isinstance(spec.default, bool):
            kwargs["action"] = "store_false" if spec.negated_flag else "store_true"
            kwargs["default"] = spec.default
            if spec.negated_flag:
                kwargs["help"] = f"turn off '{spec.label}' (on by default)" + (
                    f": {spec.help}" if spec.help else ""
                )
        elif spec.choices is not None:
            kwargs.update(default=str(spec.default), choices=spec.values)
        elif spec.text:
            kwargs.update(default=spec.default, metavar=spec.name.upper())
        else:
            kwargs.update(
                default=spec.default,
                type=int if spec.whole else float,
                metavar=spec.cli_flag.lstrip("-").replace("-", "_").upper(),
            )
            default = "" if spec.default is None else "; default %(default)s"
            kwargs["help"] += f" ({spec.range_text()}{default})"
        if spec.name in follows:
            kwargs["default"] = None
        parser.add_argument(spec.cli_flag, **kwargs)


def _settings(args: argparse.Namespace, cls: Any) -> dict[str, Any]:
    """The values of ``cls``'s settings as parsed (flags made by :func:`_add_settings`)."""
    from embedgen.fields import specs

    return {name: getattr(args, name) for name, s in specs(cls).items() if s.flag != ""}


def build_parser() -> argparse.ArgumentParser:
    """The ``embedgen`` parser: one subcommand per step of the data's path."""
    parser = argparse.ArgumentParser(
        prog="embedgen",
        description="Turn a pretrained transformer into a word-embedding matrix shaped by your "
        "own labelled text.",
    )
    parser.add_argument("--version", action="version", version=f"embedgen {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", "-q", action="store_true", help="only print the result")
    common.add_argument("--progress", action="store_true", help="progress bar even when piped")
    common.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (
        _train_parser,
        _matrix_parser,
        _neighbours_parser,
        _evaluate_parser,
        _export_parser,
        _worker_parser,
    ):
        add(sub, common)
    p = sub.add_parser("models", parents=[common], help="list models in the local HF cache")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser(
        "runs",
        parents=[common],
        help="list the runs in $EMBEDGEN_HOME and in every workspace, or compare some",
    )
    p.add_argument("--active", action="store_true", help="only those queued or training")
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="RUN",
        help="compare two or more runs (run folders, or names that `embedgen runs` lists): "
        "the settings that differ, the metrics, and with --words the neighbours",
    )
    p.add_argument(
        "--words",
        metavar="WORD,WORD",
        help="with --compare: words whose neighbours to show side by side (干净,服务)",
    )
    p.add_argument("--k", type=int, help="with --compare --words: neighbours a word (default 5)")
    p.add_argument(
        "--matrix",
        metavar="NAME",
        help="with --compare --words: the matrix of each run to use, by its folder name in "
        "RUN/matrices (default: the newest that all the runs have)",
    )
    p.set_defaults(func=cmd_runs)
    p = sub.add_parser(
        "cancel",
        parents=[common],
        help="stop a queued or training run (it keeps its finished epochs), or a queued job",
    )
    p.add_argument("run", metavar="RUN_OR_JOB_DIR")
    p.set_defaults(func=cmd_cancel)
    return parser


def _train_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    from embedgen.models import DEFAULT_MODEL
    from embedgen.train import FinetuneConfig

    p = sub.add_parser("train", parents=[common], help="fine-tune a head on a labelled table")
    p.add_argument("--model", default=DEFAULT_MODEL, help="hub id or local folder")
    p.add_argument("--data", required=True, help="CSV, TSV or XLSX file")
    p.add_argument("--text-col", required=True, help="text column: name or 1-based number")
    p.add_argument("--label-col", required=True, help="label column: name or 1-based number")
    p.add_argument(
        "--out", help="run folder (default: $EMBEDGEN_HOME/runs/<time>_<data>_<strategy>)"
    )
    p.add_argument(
        "--queue",
        action="store_true",
        help="queue the run for the workers (embedgen worker) and print its folder at once",
    )
    _add_settings(p, FinetuneConfig)
    p.add_argument("--header", default="auto", choices=list(HEADER))
    p.add_argument(
        "--sheet",
        default=None,
        help="xlsx sheet: its name, or its number from 1 (default: the first)",
    )
    _model_flags(p)
    p.set_defaults(func=cmd_train)


def _matrix_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    from embedgen.matrix import DTYPES, MatrixOptions
    from embedgen.postprocess import PostProcess
    from embedgen.words import WordOptions

    p = sub.add_parser("matrix", parents=[common], help="build an embedding matrix")
    p.add_argument("source", metavar="RUN_DIR_OR_MODEL")
    p.add_argument(
        "--out",
        help="output folder (default: RUN_DIR/matrices/<name>, or "
        "$EMBEDGEN_HOME/matrices/<model>/<name>; the name says method, layer, tuned or base, "
        "filters and post-processing). A plain model's matrices in the default place are a "
        "cache: the least recently used are removed to stay under matrix_cache_mb. A folder "
        "given here is never removed",
    )
    saved = p.add_mutually_exclusive_group()
    saved.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a matrix already saved in the output folder (without it, that is refused)",
    )
    saved.add_argument(
        "--keep-both",
        action="store_true",
        help="when a matrix is already saved in the output folder, keep it and save the new one "
        "beside it as NAME-2 (NAME-3, ...)",
    )
    _add_settings(
        p,
        MatrixOptions,
        follows={  # as on the Matrix page (_matrix_defaults)
            "method": "aggregated for word rows, contextual from a run, input from a model",
            "cjk_only": "on from a run trained on mostly Chinese data",
        },
    )
    p.add_argument(
        "--all-tokens",
        dest="cjk_only",
        action="store_false",
        help="keep every token, not only the CJK ones (the default from a run trained on "
        "mostly Chinese data is --cjk-only)",
    )
    _add_settings(p, PostProcess)
    rows = p.add_argument_group("word rows (instead of the model's tokens)")
    rows.add_argument("--words", metavar="LIST.txt", help="one word per line: the rows")
    _add_corpus_arguments(
        rows,
        "CSV/TSV/XLSX of texts: their words are the rows unless --words is given, and "
        "aggregated reads the words in them",
    )
    _add_settings(rows, WordOptions)
    p.add_argument("--dtype", default=DTYPES[0], choices=DTYPES, help="what matrix.npy holds")
    p.add_argument(
        "--queue",
        action="store_true",
        help="queue the build for the workers (embedgen worker) and print its job folder at once",
    )
    _model_flags(p)
    p.set_defaults(func=cmd_matrix)


def _add_corpus_arguments(parser: Any, what: str) -> None:
    """--corpus FILE and how to read it (the flags _words_and_corpus reads)."""
    parser.add_argument("--corpus", metavar="FILE", help=what)
    parser.add_argument("--text-col", help="the corpus's text column: name or 1-based number")
    parser.add_argument("--header", default="auto", choices=list(HEADER))
    parser.add_argument("--sheet", default=None, help="the corpus's xlsx sheet")
    parser.add_argument("--user-dict", metavar="FILE", help="a jieba user dictionary")


def _neighbours_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "neighbors",
        aliases=["neighbours"],
        parents=[common],
        help="nearest tokens, similarity, analogy",
    )
    p.add_argument("matrix", metavar="MATRIX_DIR")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--word", help="token to find neighbours of")
    what.add_argument("--pair", nargs=2, metavar=("A", "B"), help="cosine similarity of A and B")
    what.add_argument("--analogy", nargs=3, metavar=("A", "B", "C"), help="A : B :: C : ?")
    p.add_argument("--k", type=int, default=10)
    p.add_argument(
        "--chinese-only",
        action="store_true",
        help="answers among Chinese rows only: CJK characters, no Japanese form (乗, 駅), no "
        "##好 or ▁好 beside 好 (the app's 'Chinese rows only')",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_neighbors)


def _worker_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "worker",
        parents=[common],
        help="run the jobs queued by the app and the CLI (SQLite in $EMBEDGEN_HOME, or "
        "$EMBEDGEN_QUEUE_URL): trainings and matrix builds one at a time, and beside them, on "
        "one more thread, the short jobs (estimates, maps, trade-offs, scores)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="trainings and matrix builds run at once (default 1)",
    )
    p.add_argument(
        "--worker-type",
        choices=("thread", "process"),
        default="thread",
        help="threads in this process, or a process per worker (default thread)",
    )
    p.add_argument(
        "--stop-with",
        type=int,
        metavar="PID",
        help="stop, after the run under way, once process PID has ended (the app passes its "
        "own, so a worker it started does not outlive it idle)",
    )
    p.set_defaults(func=cmd_worker)


def _evaluate_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "evaluate",
        parents=[common],
        help="score a matrix on word-similarity and analogy files",
        description="Spearman and Pearson correlation on word-similarity files (word1 word2 "
        "score a line); 3CosAdd and 3CosMul accuracy on word2vec analogy files (': section' "
        "lines, then a b c d). Words that are not rows are pooled from their pieces and "
        "counted as pooled, unless --no-pool.",
    )
    p.add_argument("matrix", metavar="MATRIX_DIR", nargs="?")
    p.add_argument(
        "--all",
        metavar="RUN_DIR_OR_MODEL",
        help="instead of one matrix: build every method and option from this run or model and "
        "print a table of their scores (Markdown, or --json)",
    )
    _add_corpus_arguments(p, "with --all: texts that aggregated reads words in")
    p.add_argument(
        "--search-words",
        type=int,
        default=0,
        metavar="N",
        help="with --all: also give word matrices the N most frequent words of jieba's "
        "dictionary, so analogy answers are searched among more than the benchmarks' words",
    )
    _model_flags(p)
    p.add_argument(
        "--similarity",
        nargs="+",
        action="extend",
        default=[],
        metavar="FILE",
        help="word-similarity file(s): word1 word2 score, tab or space separated",
    )
    p.add_argument(
        "--analogy",
        nargs="+",
        action="extend",
        default=[],
        metavar="FILE",
        help="analogy file(s) in word2vec format (CA8, ...)",
    )
    p.add_argument(
        "--no-pool",
        dest="pool",
        action="store_false",
        help="count a word that is not a row as missing instead of pooling it from its pieces",
    )
    p.add_argument(
        "--label-words",
        metavar="FILE",
        help="label purity over the words of FILE (word and label a line, e.g. "
        "assets/sentiment_words_waimai.tsv): the share of each word's K nearest neighbours "
        "among those words that have its label, with a 95%% bootstrap interval",
    )
    p.add_argument("--k", type=int, default=10, help="neighbours per word for label purity")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    p.set_defaults(func=cmd_evaluate)


def _export_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    from embedgen.export import ExportFormat

    p = sub.add_parser("export", parents=[common], help="write word2vec, projector or zip files")
    p.add_argument("matrix", metavar="MATRIX_DIR")
    p.add_argument("--format", required=True, choices=[f.value for f in ExportFormat])
    p.add_argument("--out", required=True, help="output file (folder for projector)")
    p.set_defaults(func=cmd_export)


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    if not args.debug:
        for noisy in ("transformers", "huggingface_hub", "urllib3", "filelock", "jieba"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        with contextlib.suppress(Exception):
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``embedgen`` command; return its exit code."""
    from embedgen.errors import EmbedgenError

    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        from embedgen.atomic import remove_leftovers

        remove_leftovers()  # what killed writes left in $EMBEDGEN_HOME (an hour old or more)
        return func(args)
    except EmbedgenError as exc:
        if args.debug:
            raise
        print(f"embedgen {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("embedgen: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # the disk said no (full, no permission, no such folder): not a bug
        if args.debug:
            raise
        from embedgen.errors import disk_trouble

        print(f"embedgen {args.command}: error: {disk_trouble(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: one line unless --debug
        if args.debug:
            raise
        print(
            f"embedgen {args.command}: internal error: {type(exc).__name__}: {exc} "
            "(run again with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
