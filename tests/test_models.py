"""Loading encoders: local folders, the hub cache, and clear answers when a model is missing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from embedgen.errors import ModelNotAvailable
from embedgen.models import list_cached_models, load_encoder


def test_local_folder_loads_with_facts_about_the_model(tiny_model_dir: Path) -> None:
    enc = load_encoder(str(tiny_model_dir), allow_download=False)
    info = enc.info
    assert info.architecture == "BertModel"
    assert info.source == "local folder"
    assert info.hidden_size == 32 and info.num_layers == 2
    assert info.vocab_size == enc.model.get_input_embeddings().weight.shape[0]
    assert info.tokenizer_size == len(enc.tokenizer)
    assert info.revision.startswith("sha256:")
    assert enc.tokenizer.tokenize("好坏") == ["好", "坏"]


def test_revision_changes_when_weights_change(tiny_model_dir: Path, tmp_path: Path) -> None:
    from conftest import build_tiny_bert

    other = build_tiny_bert(tmp_path / "other", seed=1)
    a = load_encoder(str(tiny_model_dir), allow_download=False).info.revision
    b = load_encoder(str(other), allow_download=False).info.revision
    assert a != b


def test_uncached_hub_id_fails_fast_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelNotAvailable) as err:
        load_encoder("no-such-org/no-such-model")
    assert time.perf_counter() - start < 10
    message = str(err.value)
    assert "no-such-org/no-such-model" in message
    assert "local folder" in message or "folder" in message
    assert "download" in message


def test_unreachable_hub_is_reported_without_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://embedgen-test.invalid")
    monkeypatch.setenv("HF_HOME", "/nonexistent-embedgen-cache")
    start = time.perf_counter()
    with pytest.raises(ModelNotAvailable, match="cannot be reached"):
        load_encoder("no-such-org/no-such-model")
    assert time.perf_counter() - start < 10


def test_folder_without_config_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelNotAvailable, match="config.json"):
        load_encoder(str(tmp_path))


def test_missing_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelNotAvailable, match="no such folder"):
        load_encoder(str(tmp_path / "nope"))


def test_empty_spec_asks_for_a_model() -> None:
    with pytest.raises(ModelNotAvailable, match="No model given"):
        load_encoder("  ")


def test_model_needing_remote_code_is_refused_unless_allowed(tmp_path: Path) -> None:
    import json

    folder = tmp_path / "remote"
    folder.mkdir()
    config = {
        "model_type": "embedgen-custom",
        "auto_map": {"AutoConfig": "modeling.CustomConfig", "AutoModel": "modeling.CustomModel"},
    }
    (folder / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "ran.txt"
    (folder / "modeling.py").write_text(f"open({str(marker)!r}, 'w').write('remote code ran')\n")
    with pytest.raises(ModelNotAvailable, match="remote code|own code"):
        load_encoder(str(folder))
    assert not marker.exists(), "the repository's code must not run without consent"


def test_cache_listing_finds_snapshots(tmp_path: Path, tiny_model_dir: Path) -> None:
    import shutil

    snap = tmp_path / "hub" / "models--acme--tiny-zh" / "snapshots" / ("a" * 40)
    shutil.copytree(tiny_model_dir, snap)
    refs = tmp_path / "hub" / "models--acme--tiny-zh" / "refs"
    refs.mkdir()
    (refs / "main").write_text("a" * 40)
    (tmp_path / "hub" / "models--acme--tiny-zh" / "blobs").mkdir()
    found = list_cached_models(tmp_path / "hub")
    assert [m.model_id for m in found] == ["acme/tiny-zh"]
    assert found[0].revision == "a" * 40


def test_cache_listing_of_missing_cache_is_empty(tmp_path: Path) -> None:
    assert list_cached_models(tmp_path / "none") == []


def test_cached_hub_id_loads_from_the_cache(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    repo = tmp_path / "hub" / "models--acme--tiny-zh"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / ("b" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("b" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = load_encoder("acme/tiny-zh")
    assert enc.info.source == "hub cache"
    assert enc.info.revision == "b" * 40


def _pickled_copy(tiny_model_dir: Path, folder: Path) -> Path:
    """The tiny model with its weights as pytorch_model.bin (a pickle) instead of safetensors."""
    import shutil

    import torch
    from safetensors.torch import load_file

    shutil.copytree(tiny_model_dir, folder)
    weights = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(weights, folder / "pytorch_model.bin")
    return folder


def test_pickled_only_weights_are_refused_unless_allowed(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = _pickled_copy(tiny_model_dir, tmp_path / "pickled")
    with pytest.raises(ModelNotAvailable, match="only as pytorch_model.bin") as err:
        load_encoder(str(folder), allow_download=False)
    assert "safetensors" in str(err.value) and "allow_pickled_weights" in str(err.value)
    allowed = load_encoder(str(folder), allow_download=False, allow_pickle=True)
    safe = load_encoder(str(tiny_model_dir), allow_download=False)
    a = allowed.model.get_input_embeddings().weight
    assert (a == safe.model.get_input_embeddings().weight).all()


def test_a_pickle_that_runs_code_never_runs(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Refused without reading it; allowed, torch reads weights only and says no (one line)."""
    import pickle
    import shutil

    folder = tmp_path / "evil"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "ran.txt"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ModelNotAvailable, match="only as pytorch_model.bin"):
        load_encoder(str(folder), allow_download=False)
    with pytest.raises(ModelNotAvailable, match="cannot be loaded") as err:
        load_encoder(str(folder), allow_download=False, allow_pickle=True)
    assert "\n" not in str(err.value)
    assert not marker.exists(), "the pickle's code must not run"


def test_model_folders_among_the_allowed_roots_are_found_and_nothing_else(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Model page lists these, so an offline model is picked, not typed (issue 21)."""
    import os
    import shutil

    from embedgen.models import list_model_folders
    from embedgen.paths import users_dir, workspace

    home = tmp_path / "home"
    monkeypatch.setenv("EMBEDGEN_HOME", str(home))
    mine = shutil.copytree(tiny_model_dir, home / "models" / "m3e-small")
    top = shutil.copytree(tiny_model_dir, tmp_path / "srv" / "e5-small")
    shutil.copytree(tiny_model_dir, home / "runs" / "r1" / "encoder")  # a run's: too deep
    shutil.copytree(tiny_model_dir, workspace("alice@example.com") / "models" / "hers")
    (home / "models" / "configs-only").mkdir()
    (home / "models" / "configs-only" / "config.json").write_text("{}", "utf-8")
    os.symlink(top, home / "models" / "link")
    found = list_model_folders([home, tmp_path / "srv", tmp_path / "nowhere"])
    assert found == sorted([mine.resolve(), top.resolve()]), found
    assert users_dir().is_dir(), "the workspaces were there to be skipped"
