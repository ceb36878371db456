"""Load an encoder (model + tokenizer + facts about it) from a hub id or a local folder."""

from __future__ import annotations

import logging
import os
import pickle
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel

from embedgen.atomic import sha256_file
from embedgen.errors import ModelNotAvailable, NotAllowed
from embedgen.paths import hub_cache_dir, users_dir
from embedgen.settings import in_other_workspace, resolve_quietly, under_any

log = logging.getLogger(__name__)

DEFAULT_MODEL = "bert-base-chinese"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class ModelInfo:
    """Facts about a loaded encoder, shown to users and written into manifests."""

    model_id: str  # what the user asked for: hub id or folder
    source: str  # "local folder" or "hub cache" or "hub download"
    path: str  # folder the files were read from
    revision: str  # hub commit hash, or sha256 of the weights for a folder
    architecture: str
    model_type: str
    vocab_size: int  # rows of the token-embedding matrix
    tokenizer_size: int  # ids the tokenizer can produce: len(tokenizer), added tokens included
    hidden_size: int
    num_layers: int
    added_tokens: int = 0  # of tokenizer_size, tokens added on top of the base vocabulary
    # Embedding rows no token id reaches: tables are often padded (to a multiple of 8, or
    # left longer than the tokenizer), so the tokenizer never produces these ids.
    rows_without_token: int = 0
    tokens_without_row: int = 0  # tokens added after training, with no embedding row

    @property
    def token_rows(self) -> int:
        """Return how many rows a "tokens" matrix can have before its filters: the ids that
        both the tokenizer produces and the embedding table holds."""
        return min(self.vocab_size, self.tokenizer_size)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Encoder:
    """A transformer encoder with its tokenizer; the model is never mutated in place."""

    model: PreTrainedModel
    tokenizer: Any
    info: ModelInfo

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def _hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}


def _not_available(spec: str, why: str) -> ModelNotAvailable:
    return ModelNotAvailable(
        f"Model '{spec}' cannot be loaded: {why}. To use it offline, download it on a machine "
        f"with internet (`hf download {spec} --local-dir {Path(spec).name}`), copy that folder "
        "here and give its path instead of the id; or choose a model from the local cache "
        "(`embedgen models`)."
    )


def _weights_digest(folder: Path) -> str:
    """Hub snapshot hash when the folder is a cache snapshot, else sha256 of the weight file."""
    if folder.parent.name == "snapshots":
        return folder.name
    for name in WEIGHT_FILES:
        if (folder / name).exists():
            return "sha256:" + sha256_file(folder / name)
    return "unknown"


def _looks_like_path(spec: str) -> bool:
    """A folder name rather than a hub id (``org/name``, which may hold dots: ``bge-v1.5``)."""
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec


def _resolve_folder(
    spec: str,
    allow_download: bool,
    allowed_roots: Sequence[Path] | None,
    user: str | None,
    allow_pickle: bool = False,
) -> tuple[Path, str]:
    """Return the local folder holding the model's files and where it came from.

    With ``allowed_roots`` (the app), a folder is only opened when it lies under one of them
    and in no workspace but ``user``'s; a folder outside them and a folder that is not there
    get the same message.
    """
    path = Path(spec).expanduser()
    if allowed_roots is not None:
        resolved = resolve_quietly(path)
        inside = (
            resolved is not None
            and under_any(resolved, allowed_roots)
            and not in_other_workspace(resolved, user)
        )
        if not inside and _looks_like_path(spec):
            raise NotAllowed(
                f"'{spec}' is not a model folder you can open here: it is not there, or it "
                "lies outside the folders the operator of this server allows. Use a hub id or "
                "a model from the cache, or ask the operator."
            )
        local = inside and path.is_dir()  # a bare name outside the roots is a hub id
    else:
        local = path.is_dir()
    if local:
        if not (path / "config.json").exists():
            raise ModelNotAvailable(
                f"Folder '{spec}' has no config.json, so it is not a saved model. Point to the "
                "folder written by save_pretrained() (it holds config.json, model.safetensors "
                "and the tokenizer files)."
            )
        return path, "local folder"
    if _looks_like_path(spec):
        raise _not_available(spec, "no such folder")
    return _from_hub(spec, allow_download, allow_pickle)


def _from_hub(spec: str, allow_download: bool, allow_pickle: bool) -> tuple[Path, str]:
    """The cached snapshot of hub id ``spec``, downloaded first when allowed and reachable.

    Only configs, tokenizers and safetensors weights are fetched (pickled weights only when a
    repository has nothing else), never a repository's code.
    """
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.txt", "*.model", "*.safetensors"]
    try:
        folder = snapshot_download(
            spec, local_files_only=True, allow_patterns=patterns, cache_dir=hub_cache_dir()
        )
        return Path(folder), "hub cache"
    except Exception as cache_miss:  # any miss means "not cached"
        log.debug("'%s' not in the local cache (%s)", spec, type(cache_miss).__name__)
    if not allow_download or _offline():
        raise _not_available(
            spec, "it is not in the local Hugging Face cache and downloads are off"
        )
    if not _hub_reachable():
        raise _not_available(
            spec,
            "it is not in the local Hugging Face cache and the Hugging Face hub cannot be reached",
        )
    try:
        folder = snapshot_download(spec, allow_patterns=patterns, cache_dir=hub_cache_dir())
    except Exception as exc:
        raise _not_available(spec, f"download failed ({type(exc).__name__}: {exc})") from exc
    if allow_pickle and not any(Path(folder, w).exists() for w in SAFE_WEIGHTS):
        # Older repos ship only pickled weights; fetched only where the operator allows them
        # (loading refuses them otherwise), still never remote code.
        folder = snapshot_download(
            spec, allow_patterns=[*patterns, "pytorch_model.bin"], cache_dir=hub_cache_dir()
        )
    return Path(folder), "hub download"


def _refuse_pickles(spec: str, folder: Path, allow_pickle: bool) -> bool:
    """Whether ``folder`` holds safetensors weights; refused when its only weights are pickled
    and pickles are not allowed (a pickle can run any code while it is read)."""
    safetensors = any((folder / name).exists() for name in SAFE_WEIGHTS)
    pickled = any((folder / name).exists() for name in PICKLED_WEIGHTS)
    if pickled and not safetensors and not allow_pickle:
        raise ModelNotAvailable(
            f"Model '{spec}' holds its weights only as pytorch_model.bin, a Python pickle, which "
            "can run code while it is read, so embedgen reads safetensors weights only. Convert "
            "the model once where you trust it (save_pretrained writes model.safetensors), or "
            "the operator can allow pickled weights: allow_pickled_weights in "
            "$EMBEDGEN_HOME/config.toml for the app, --allow-pickled-weights on the command line."
        )
    return safetensors


def _load_parts(
    spec: str, folder: Path, trust_remote_code: bool, allow_pickle: bool = False
) -> tuple[Any, Any, Any]:
    """The config, tokenizer and model in ``folder``, with one message for what goes wrong."""
    safetensors = _refuse_pickles(spec, folder, allow_pickle)
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
        model = AutoModel.from_pretrained(
            folder,
            config=config,
            trust_remote_code=trust_remote_code,
            use_safetensors=True if safetensors else None,
        )
    except ValueError as exc:
        if "trust_remote_code" in str(exc) and not trust_remote_code:
            raise ModelNotAvailable(
                f"Model '{spec}' needs its own code from the repository to run, and embedgen runs "
                "a model's code only when asked to: --trust-remote-code on the command line; in "
                "the app only where the operator of the server allows it, with the checkbox the "
                "Model page then shows. Only allow it for repositories you trust."
            ) from exc
        raise ModelNotAvailable(f"Model '{spec}' cannot be loaded: {exc}") from exc
    except pickle.UnpicklingError as exc:
        raise ModelNotAvailable(
            f"Model '{spec}' cannot be loaded: its pytorch_model.bin holds more than weights, "
            "so torch refused to read it (it reads weights only, since a pickle can run code). "
            "Use the model's safetensors weights."
        ) from exc
    except (OSError, KeyError, RuntimeError, EOFError) as exc:  # the last two: a cut file
        raise ModelNotAvailable(
            f"Model '{spec}' cannot be loaded from {folder}: {type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}. Check "
            "that the folder holds the model's config, weights and tokenizer files."
        ) from exc
    return config, tokenizer, model


def load_encoder(
    spec: str = DEFAULT_MODEL,
    *,
    allow_download: bool = True,
    trust_remote_code: bool = False,
    device: torch.device | str | None = None,
    allowed_roots: Sequence[Path] | None = None,
    user: str | None = None,
    allow_pickle: bool = False,
) -> Encoder:
    """Load the encoder named by ``spec`` (hub id or local folder), preferring safetensors weights.

    Remote code in a model repository never runs unless ``trust_remote_code`` is set.
    ``allowed_roots`` limits local folders to those beneath them (the app passes the
    operator's roots; the command line, the operator's own tool, passes none); among the
    users' workspaces (``embedgen.paths.workspace``) only ``user``'s own opens. Weights only
    pickled (``pytorch_model.bin``) are refused unless ``allow_pickle``.
    """
    spec = str(spec).strip()
    if not spec:
        raise ModelNotAvailable(
            "No model given. Enter a hub id such as bert-base-chinese or a folder."
        )
    folder, source = _resolve_folder(spec, allow_download, allowed_roots, user, allow_pickle)
    if source == "local folder":
        # Runs record this id; an absolute path keeps them usable from any working directory.
        spec = str(folder.resolve())
        folder = Path(spec)
    config, tokenizer, model = _load_parts(spec, folder, trust_remote_code, allow_pickle)
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embeddings is None or not hasattr(embeddings, "weight"):
        raise ModelNotAvailable(
            f"Model '{spec}' ({type(model).__name__}) has no token-embedding layer, so it cannot "
            "give a word-embedding matrix. Choose a text encoder such as BERT, RoBERTa or XLM-R."
        )
    model.eval()
    if device is not None:
        model.to(device)
    info = _model_info(spec, source, folder, config, tokenizer, model)
    log.info(
        "Loaded %s (%s, %d tokens, hidden %d, %d layers) from %s",
        spec,
        info.architecture,
        info.vocab_size,
        info.hidden_size,
        info.num_layers,
        source,
    )
    return Encoder(model=model, tokenizer=tokenizer, info=info)


def _model_info(
    spec: str, source: str, folder: Path, config: Any, tokenizer: Any, model: Any
) -> ModelInfo:
    """What a loaded model is: its id, where it came from, its sizes, and how its embedding
    rows and its tokenizer's tokens differ."""
    embeddings = model.get_input_embeddings()
    rows, tokens = int(embeddings.weight.shape[0]), len(tokenizer)
    base = getattr(tokenizer, "vocab_size", tokens)
    return ModelInfo(
        model_id=spec,
        source=source,
        path=str(folder),
        revision=_weights_digest(folder),
        architecture=type(model).__name__,
        model_type=str(getattr(config, "model_type", "unknown")),
        vocab_size=rows,
        tokenizer_size=tokens,
        hidden_size=int(getattr(config, "hidden_size", embeddings.weight.shape[1])),
        num_layers=int(getattr(config, "num_hidden_layers", 0)),
        added_tokens=max(0, tokens - int(base)) if isinstance(base, int) else 0,
        rows_without_token=max(0, rows - tokens),
        tokens_without_row=max(0, tokens - rows),
    )


@dataclass(frozen=True)
class CachedModel:
    """A model found in the local Hugging Face cache."""

    model_id: str
    revision: str
    size_bytes: int
    path: str


WEIGHT_SUFFIXES = (".safetensors", ".bin")
MODEL_FOLDER_DEPTH = 2  # a root's models/m3e-small, not a run's runs/<run>/encoder


def _is_model_folder(folder: Path) -> bool:
    try:
        names = [p.name for p in folder.iterdir()]
    except OSError:
        return False
    return "config.json" in names and any(n.endswith(WEIGHT_SUFFIXES) for n in names)


def list_model_folders(roots: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Model folders (a config.json beside weights) at most :data:`MODEL_FOLDER_DEPTH` below
    each of ``roots`` (the operator's allowed folders), so a visitor picks one instead of
    typing its path. The Hugging Face cache is left to :func:`list_cached_models`, and the
    users' workspaces, links and hidden folders are never looked into."""
    skip = {p for p in (resolve_quietly(hub_cache_dir()), resolve_quietly(users_dir())) if p}
    found: set[Path] = set()

    def walk(folder: Path, depth: int) -> None:
        if folder in skip or folder.name.startswith("."):
            return
        if _is_model_folder(folder):
            found.add(folder)
            return
        if depth == 0:
            return
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
        except OSError:
            return
        for child in children:
            walk(child, depth - 1)

    for root in roots:
        resolved = resolve_quietly(root)
        if resolved is not None and resolved.is_dir():
            walk(resolved, MODEL_FOLDER_DEPTH)
    return sorted(found)


def list_cached_models(cache_dir: str | os.PathLike[str] | None = None) -> list[CachedModel]:
    """Return the models in the local Hugging Face cache that have a config.json, by id."""
    from huggingface_hub import scan_cache_dir

    try:
        info = scan_cache_dir(cache_dir or hub_cache_dir())
    except Exception as exc:  # a missing or unreadable cache means "none"
        log.info("No usable Hugging Face cache: %s", exc)
        return []
    found = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        for rev in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
            if any(f.file_name == "config.json" for f in rev.files):
                found.append(
                    CachedModel(
                        repo.repo_id, rev.commit_hash, rev.size_on_disk, str(rev.snapshot_path)
                    )
                )
                break
    return sorted(found, key=lambda m: m.model_id)
