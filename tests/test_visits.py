"""Visits kept on the server (embedgen.visits): where they live, what a damaged one gives, and
that nothing a visitor sends names a path."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from embedgen import visits
from embedgen.paths import workspace


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EMBEDGEN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_a_visit_is_written_and_read_back(tmp_path: Path) -> None:
    folder = visits.visit_folder(None, visits.new_secret())
    assert folder is not None
    kept = visits.Visit(
        model=["/models/m3e", False],
        run="/home/runs/r1",
        matrices={"projected-tuned": {"folder": "/m", "dtype": "float32", "key": "k1"}},
        jobs={"map": {"folder": "/j", "tag": ["k1", {"projection": {"dims": 2}}]}},
    )
    visits.write_visit(folder, kept)
    assert visits.read_visit(folder) == kept


def test_the_folder_is_the_secrets_hash_never_the_secret_or_a_path(_home: Path) -> None:
    secret = visits.new_secret()
    folder = visits.visit_folder(None, secret)
    assert folder is not None and folder.parent == _home / "visits"
    assert secret not in str(folder) and len(folder.name) == 40
    assert visits.visit_folder(None, secret) == folder, "the same secret finds the same visit"
    assert visits.visit_folder(None, visits.new_secret()) != folder
    for bad in ("../../etc", "short", "a/b" * 10, "", None, "x" * 65):
        assert visits.visit_folder(None, bad) is None, bad


def test_with_workspaces_the_visit_is_the_users_whatever_the_address_says() -> None:
    folder = visits.visit_folder("alice@example.com", "whatever-the-address-says")
    assert folder == workspace("alice@example.com") / "visit"


def test_a_damaged_visit_restores_what_it_can(tmp_path: Path) -> None:
    folder = tmp_path / "v"
    folder.mkdir()
    (folder / visits.VISIT_FILE).write_text("{not json", encoding="utf-8")
    assert visits.read_visit(folder).empty
    (folder / visits.VISIT_FILE).write_text(
        json.dumps({"model": "not a list", "run": "/r", "matrices": [1, 2]}), encoding="utf-8"
    )
    back = visits.read_visit(folder)
    assert back.model is None and back.matrices == {} and back.run == "/r"
    assert visits.read_visit(tmp_path / "none").empty


def test_only_folders_in_the_visitors_space_are_taken_up(_home: Path) -> None:
    assert visits.within(_home / "runs" / "r1", None)
    assert not visits.within("/etc", None)
    assert not visits.within(_home / ".." / "elsewhere", None)
    assert visits.within(workspace("bob") / "runs" / "r", "bob")
    assert not visits.within(workspace("alice") / "runs" / "r", "bob")


def test_an_upload_is_kept_under_a_fixed_name() -> None:
    folder = visits.visit_folder(None, visits.new_secret())
    assert folder is not None
    visits.keep_upload(folder, b"text,label\n")
    assert visits.kept_upload(folder) == b"text,label\n"
    assert [p.name for p in folder.iterdir()] == [visits.UPLOAD_FILE]


def test_old_visits_are_removed_and_recent_ones_kept() -> None:
    old, new = (visits.visit_folder(None, visits.new_secret()) for _ in range(2))
    assert old is not None and new is not None
    visits.write_visit(old, visits.Visit(run="/r"))
    visits.write_visit(new, visits.Visit(run="/r"))
    long_ago = time.time() - (visits.KEPT_DAYS + 1) * 86400
    os.utime(old / visits.VISIT_FILE, (long_ago, long_ago))
    assert visits.remove_old_visits() == 1
    assert not old.exists() and new.exists()


def test_a_benchmark_file_is_kept_by_its_hash_and_read_back_only_whole(tmp_path: Path) -> None:
    folder = tmp_path / "visit"
    raw = "好\t坏\t1\n".encode()
    sha = visits.keep_benchmark(folder, raw)
    assert [p.name for p in folder.iterdir()] == [f"benchmark-{sha}.txt"], "named by its hash"
    assert visits.kept_benchmark(folder, sha) == raw
    assert visits.kept_benchmark(folder, "../visit.json") is None, "a record names no path"
    (folder / f"benchmark-{sha}.txt").write_bytes(b"changed")
    assert visits.kept_benchmark(folder, sha) is None, "bytes that are not the ones kept"
    record = visits.Visit(benchmarks={"similarity": [{"name": "mine.txt", "sha256": sha}]})
    assert visits.Visit.from_dict(record.as_dict()) == record
