"""Building a matrix and saving it: the one path the command line and the Matrix page take.

Both find the same folder for a matrix (:func:`target_for`: its default place, in the user's
workspace when workspaces are on, or a folder the user names), follow the same rule when a
matrix is saved there already (:class:`IfSaved`: replace it, keep both with ``-2`` added to the
new one's name, or refuse before any work), and describe the result in the same words
(``manifest.describe``). Where they differ is only what they can offer: the page asks which
of the three, the command line takes it from its flags; a matrix the operator's disk budget
cannot keep stays in the page's session, while the command line asks for ``--out``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedgen.errors import AlreadySaved, NotKept
from embedgen.fields import Choice
from embedgen.matrix.build import build_matrix
from embedgen.matrix.estimate import BuildEstimate
from embedgen.matrix.folder import save_matrix, saved_matrix
from embedgen.matrix.naming import folder_for
from embedgen.matrix.types import EmbeddingMatrix, MatrixOptions, split_source
from embedgen.models import Encoder
from embedgen.paths import free_folder
from embedgen.progress import ProgressFn, stage
from embedgen.train import Run
from embedgen.words import Corpus, WordOptions, WordVocab, words_from_corpus


class IfSaved(Choice):
    """What a build does when a matrix is saved where it would save its own."""

    REPLACE = ("replace", "Replace the saved matrix (the new one is swapped in whole).")
    KEEP_BOTH = ("keep-both", "Keep the saved matrix; save the new one as NAME-2 (-3, ...).")
    REFUSE = ("refuse", "Build nothing, and say so.")


@dataclass(frozen=True)
class Target:
    """Where a matrix will be saved, and what is saved there now."""

    folder: Path
    rebuildable: bool  # a plain model's matrix in its default place: the matrix cache's
    existing: dict[str, Any] | None = None  # the manifest saved there ({}: unreadable)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def built(self) -> str:
        """When the matrix saved there was built ("2026-12-07 09:15"), or ""."""
        created = str((self.existing or {}).get("created", ""))
        return created[:16].replace("T", " ")

    def beside(self) -> Target:
        """The free folder beside this one, for keeping both (``NAME-2``, ``NAME-3``...)."""
        return Target(free_folder(self.folder), self.rebuildable, None)


def target_for(
    source: Encoder | Run,
    options: MatrixOptions,
    *,
    words: WordVocab | None = None,
    corpus: Corpus | None = None,
    user: str | None = None,
    out: str | os.PathLike[str] | None = None,
) -> Target:
    """Where the matrix ``options`` build from ``source`` is saved: ``out`` when given (the
    user's folder, never removed), else its default folder (``naming.folder_for``, in
    ``user``'s workspace), where a plain model's matrix joins the matrix cache."""
    if out is not None:
        folder, rebuildable = Path(out), False
    else:
        folder = folder_for(source, options, words=words, corpus=corpus, user=user)
        rebuildable = split_source(source)[0] is None
    return Target(folder, rebuildable, saved_matrix(folder))


def settle(target: Target, if_saved: IfSaved) -> Target:
    """The target to save in by ``if_saved``; :class:`AlreadySaved` when it refuses."""
    if target.existing is None or if_saved is IfSaved.REPLACE:
        return target
    if if_saved is IfSaved.KEEP_BOTH:
        return target.beside()
    built = f" (built {target.built})" if target.built else ""
    raise AlreadySaved(
        f"A matrix named '{target.name}' is already saved{built}; nothing was built. Replace "
        f"it, or keep both (the new one as {target.beside().name})."
    )


@dataclass(frozen=True)
class Saved:
    """A built matrix and where it was saved (``folder`` None: the disk budget could not keep
    it, ``not_kept`` says why)."""

    matrix: EmbeddingMatrix
    name: str
    folder: Path | None
    dtype: str
    not_kept: str = ""


def build_and_save(
    source: Encoder | Run,
    options: MatrixOptions,
    target: Target,
    *,
    words: WordVocab | None = None,
    corpus: Corpus | None = None,
    word_options: WordOptions | None = None,
    dtype: str = "float32",
    if_saved: IfSaved = IfSaved.REFUSE,
    estimate: BuildEstimate | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> Saved:
    """Build the matrix and save it in ``target`` (settled by ``if_saved`` before any work).

    ``word_options``: the rows are ``corpus``'s words, segmented here (it takes seconds).
    ``estimate`` names the building stage ("building (about 25 s for 17,134 rows …)").
    """
    target = settle(target, if_saved)
    if words is None and word_options is not None and corpus is not None:
        stage(progress, "segmenting your texts into words")
        words = words_from_corpus(corpus, word_options)
    stage(progress, f"building ({estimate.describe()})" if estimate else "building", "steps")
    matrix = build_matrix(
        source, options, words=words, corpus=corpus, progress=progress, cancel=cancel
    )
    stage(progress, "saving")
    try:
        save_matrix(matrix, target.folder, dtype=dtype, rebuildable=target.rebuildable)
    except NotKept as exc:  # bigger than the operator's matrix cache
        return Saved(matrix, target.name, None, dtype, str(exc))
    return Saved(matrix, target.name, target.folder, dtype)
