"""The app's own default path against the same work done by the library from the command line.

Drives the real app in headless Chromium (Debian's /usr/bin/chromium, as the browser test
does): load a model from a folder, take the sample data, train with the page's defaults, build
the Matrix page's default matrix, compute the Explore page's default map. Then runs the same
three jobs in a fresh Python process through the library functions the CLI calls (model load
not timed), each side with its own empty $EMBEDGEN_HOME so neither reads the other's caches.
Last, the app trains again while a map is being computed (a 3D map, not cached), to see a job
run beside another.

Times in the app are from the click to the result on screen, so they include the page's own
work (the matrix build measures its speed on a sample first). Print a markdown table; with
--out, also write it there.

    bash ../shared/tools/build-e5-small.sh /root/.embedgen/models/e5-small python
    python bench/bench_app.py --model /root/.embedgen/models/e5-small --out bench/results/app.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

LONG = 1_800_000  # ms: Playwright waits


def app_side(model: str, data: Path, home: Path, shots: Path | None) -> dict[str, float]:
    from browser_support import CHROMIUM, CHROMIUM_ARGS, StreamlitServer
    from playwright.sync_api import expect, sync_playwright

    env = {
        "EMBEDGEN_HOME": str(home),
        "EMBEDGEN_ALLOWED_ROOTS": os.pathsep.join([model, str(home)]),
    }
    server = StreamlitServer(home / "server.log", env, address=None)
    times: dict[str, float] = {}

    def idle(page) -> None:
        page.wait_for_timeout(400)
        page.get_by_test_id("stStatusWidget").filter(has_text="Running").wait_for(
            state="hidden", timeout=LONG
        )

    def goto(page, label: str) -> None:
        page.get_by_test_id("stSidebarNav").get_by_role("link", name=label, exact=True).click()
        page.wait_for_url(f"**/{label}*")  # the Train page may add ?run=
        idle(page)

    def shot(page, name: str) -> None:
        if shots is not None:
            idle(page)
            page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

    try:
        server.wait_healthy()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            page = browser.new_context(viewport={"width": 1300, "height": 900}).new_page()
            page.goto(server.url)
            expect(page.get_by_role("heading", name="embedgen")).to_be_visible(timeout=LONG)
            goto(page, "Model")
            page.get_by_text("Folder on this machine", exact=True).click()
            idle(page)
            field = page.get_by_label("Folder", exact=True)
            field.fill(model)
            field.press("Enter")
            idle(page)
            page.get_by_role("button", name="Load model").click()
            expect(page.get_by_text("BertModel", exact=True)).to_be_visible(timeout=LONG)
            goto(page, "Data")
            if data.name == "sample_reviews.csv":
                page.get_by_text("Sample dataset", exact=False).first.click()
            else:
                page.locator("input[type=file]").set_input_files(str(data))
            idle(page)

            goto(page, "Train")
            started = time.monotonic()
            page.get_by_role("button", name="Start training").click()
            expect(page.get_by_text("Best epoch")).to_be_visible(timeout=LONG)
            times["train"] = time.monotonic() - started
            shot(page, "train")

            goto(page, "Matrix")
            started = time.monotonic()
            page.get_by_role("button", name="Build matrix").click()
            expect(page.get_by_text("Matrices in this session")).to_be_visible(timeout=LONG)
            times["matrix"] = time.monotonic() - started
            shot(page, "matrix")

            goto(page, "Explore")
            page.get_by_role("tab", name="Map").click()
            idle(page)
            started = time.monotonic()
            page.get_by_role("button", name="Compute map").click()
            chart = page.get_by_role("tabpanel").get_by_test_id("stPlotlyChart")
            expect(chart).to_be_visible(timeout=LONG)
            times["map"] = time.monotonic() - started
            shot(page, "map")

            # A job beside another: a 3D map (not cached) starts, then training again.
            page.get_by_text("3", exact=True).click()
            idle(page)
            page.get_by_role("button", name="Compute map").click()
            page.wait_for_timeout(1000)
            goto(page, "Train")
            started = time.monotonic()
            page.get_by_role("button", name="Start training").click()
            page.wait_for_timeout(1500)
            expect(page.get_by_text("Best epoch")).to_be_visible(timeout=LONG)
            times["train beside a map"] = time.monotonic() - started
            browser.close()
    finally:
        server.stop()
    return times


# The same jobs through the library, as `embedgen train` / `embedgen matrix` run them; the map
# as the Explore page asks for it (its default options).
CLI_SIDE = r"""
import json, sys, time
from embedgen.data import prepare
from embedgen.matrix import MatrixOptions, build_matrix, default_method, save_matrix
from embedgen.models import load_encoder
from embedgen.paths import new_run_folder
from embedgen.projection import ProjectionOptions, project
from embedgen.runs import train_and_save
from embedgen.table import read_table
from embedgen.tokens import mostly_cjk
from embedgen.train import FinetuneConfig
model, data_path, out = sys.argv[1:4]
encoder = load_encoder(model)
table = read_table(data_path)
data = prepare(table, sys.argv[5], sys.argv[6])
times = {}
t = time.perf_counter()
run = train_and_save(encoder, data, FinetuneConfig(), new_run_folder(table.name, "head"))
times["train"] = time.perf_counter() - t
t = time.perf_counter()
options = MatrixOptions(method=default_method(True), cjk_only=mostly_cjk(data.texts))
matrix = build_matrix(run, options)
save_matrix(matrix, out)
times["matrix"] = time.perf_counter() - t
t = time.perf_counter()
project(matrix, ProjectionOptions(**json.loads(sys.argv[4])))
times["map"] = time.perf_counter() - t
print(json.dumps(times))
"""


def cli_side(
    model: str, data: Path, home: Path, options: dict, columns: tuple[str, str]
) -> dict[str, float]:
    env = {**os.environ, "EMBEDGEN_HOME": str(home)}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            CLI_SIDE,
            model,
            str(data),
            str(home / "m"),
            json.dumps(options),
            *columns,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def cli_commands(model: str, data: Path, home: Path, columns: tuple[str, str]) -> dict[str, float]:
    """The same training and matrix as `embedgen` commands, whole (start, imports, model load):
    what a user of the command line waits for."""
    env = {**os.environ, "EMBEDGEN_HOME": str(home)}
    run = home / "run"
    times = {}
    for step, argv in (
        ("train", ["train", "--model", model, "--data", str(data), "--text-col", columns[0],
                   "--label-col", columns[1], "--out", str(run), "-q"]),
        ("matrix", ["matrix", str(run), "--method", "contextual", "--cjk-only", "--out",
                    str(home / "m"), "-q"]),
    ):  # fmt: skip
        started = time.monotonic()
        subprocess.run(["embedgen", *argv], env=env, check=True, capture_output=True, cwd=ROOT)
        times[step] = time.monotonic() - started
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model folder (e.g. e5-small)")
    parser.add_argument("--data", default=str(ROOT / "assets" / "sample_reviews.csv"))
    parser.add_argument("--text-col", default="text", help="the data's text column")
    parser.add_argument("--label-col", default="label", help="the data's label column")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", help="also write the table to this file")
    parser.add_argument("--shots", help="save screenshots of the app's results here")
    args = parser.parse_args()
    data = Path(args.data)
    shots = Path(args.shots) if args.shots else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, float, float, float | None]] = []
    results: dict[str, list[tuple[float, float, float | None]]] = {}
    for _ in range(args.repeats):
        with (
            tempfile.TemporaryDirectory() as a,
            tempfile.TemporaryDirectory() as c,
            tempfile.TemporaryDirectory() as d,
        ):
            app = app_side(args.model, data, Path(a), shots)
            columns = (args.text_col, args.label_col)
            lib = cli_side(args.model, data, Path(c), {}, columns)  # the page's map: defaults
            cmd = cli_commands(args.model, data, Path(d), columns)
        for step in ("train", "matrix", "map"):
            results.setdefault(step, []).append((app[step], lib[step], cmd.get(step)))
        results.setdefault("train beside a map", []).append(
            (app["train beside a map"], lib["train"], cmd["train"])
        )
    for step, triples in results.items():
        triples.sort(key=lambda p: p[0] / p[1])
        rows.append((step, *triples[len(triples) // 2]))
    lines = [
        f"Model `{Path(args.model).name}`, data `{data.name}`, {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}), {args.repeats} run(s), median ratio.",
        "",
        "| job | app (click to result) | library call (model loaded) | app / library "
        "| `embedgen` command (whole) | app / command |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for step, app_s, lib_s, cmd_s in rows:
        command = f"{cmd_s:.1f} s | {app_s / cmd_s:.2f}" if cmd_s else "(no command) | –"
        lines.append(
            f"| {step} | {app_s:.1f} s | {lib_s:.1f} s | {app_s / lib_s:.2f} | {command} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
