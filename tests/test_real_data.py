"""The whole path on real public data from ../shared (skipped where it is absent)."""

from __future__ import annotations

from pathlib import Path

from embedgen.data import prepare
from embedgen.matrix import MatrixOptions, build_matrix, load_matrix, save_matrix
from embedgen.runs import load_run, save_run
from embedgen.table import read_table
from embedgen.train import FinetuneConfig, finetune


def test_waimai_head_run_exports_a_matrix_matching_its_vocab(
    shared_data: Path, tiny_encoder, tmp_path: Path
) -> None:
    table = read_table(shared_data / "classification" / "waimai_10k.csv")
    data = prepare(table, "review", "label")
    assert len(data) == 11987 and data.label_names == ("0", "1")
    run = finetune(tiny_encoder, data, FinetuneConfig(epochs=1, dim=16, batch_size=64))
    assert len(run.history) == 1
    assert run.data_summary["rows_train"] + run.data_summary["rows_validation"] == 11987
    save_run(run, tmp_path / "run")
    matrix = build_matrix(load_run(tmp_path / "run"), MatrixOptions(method="projected"))
    save_matrix(matrix, tmp_path / "matrix")
    lines = (tmp_path / "matrix" / "vocab.txt").read_text("utf-8").splitlines()
    back = load_matrix(tmp_path / "matrix")
    assert back.vectors.shape == (len(lines), 16)
    assert back.manifest["run"]["dataset"]["source"] == "waimai_10k.csv"
    assert back.manifest["run"]["dataset"]["rows_used"] == 11987
