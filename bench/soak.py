"""Soak test on localhost: N simulated users on one app server for a few minutes.

    python bench/soak.py [--users 3] [--minutes 3] [--out bench/results/soak.md]

Starts the real app (``streamlit run app.py``) with an empty ``$EMBEDGEN_HOME`` and a tiny
random-init BERT, then N users, each a headless Chromium of its own in a process of its own,
who load the model, upload 120 labelled rows, and then until the time is up: queue a training
(2 epochs, through the app's worker), build a matrix (``--method``, projected by default; a
worker's job), with ``--maps`` compute a map of it (a worker's job), and ask Explore for the
neighbours of a few tokens. ``--model DIR``: a real model instead of the tiny BERT. Counted:
each finished action ("requests served"), errors (a step that failed or timed out, or a
Streamlit exception box on the page; must be 0), and the resident memory of the server and of
its training worker, every 5 s. Prints a Markdown summary and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

LONG = 300_000  # ms: a training waits behind the other users' in the queue


def rss_mib(pid: int, field: str = "VmRSS") -> float | None:
    """A process's resident memory in MiB: all of it (VmRSS), or its own allocations alone
    (RssAnon: without the pages of files it maps, which the kernel shares and can drop)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def user(
    n: int,
    url: str,
    model_dir: str,
    csv_path: str,
    home: str,
    until: float,
    out: mp.Queue,
    shots: str,
    method_name: str = "projected",
    maps: bool = False,
) -> None:
    """One simulated user; puts (user, action, seconds, error or None) on ``out``."""
    from browser_support import CHROMIUM, CHROMIUM_ARGS
    from conftest import NEGATIVE, POSITIVE  # tokens the tiny model has (and real ones)
    from playwright.sync_api import expect, sync_playwright

    tokens = (*POSITIVE[:2], *NEGATIVE[:2]) if "tiny" in model_dir else ("好", "美", "坏", "差")

    expect.set_options(timeout=LONG)

    def idle(page) -> None:
        page.wait_for_timeout(300)
        page.get_by_test_id("stStatusWidget").filter(has_text="Running").wait_for(
            state="hidden", timeout=LONG
        )

    def goto(page, label: str) -> None:
        page.get_by_test_id("stSidebarNav").get_by_role("link", name=label, exact=True).click()
        page.wait_for_url(f"**/{label}*")  # the Train page may add ?run=
        idle(page)

    def step(page, action: str, work) -> bool:
        started = time.monotonic()
        try:
            work()
            idle(page)
            if page.get_by_test_id("stException").count():
                raise RuntimeError("a Streamlit exception is on the page")
        except Exception as exc:  # counted and shown, the soak goes on
            page.screenshot(path=f"{shots}/user{n}-{action}-{int(time.time())}.png")
            out.put((n, action, time.monotonic() - started, f"{type(exc).__name__}: {exc}"))
            return False
        out.put((n, action, time.monotonic() - started, None))
        return True

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_context(viewport={"width": 1300, "height": 900}).new_page()
        page.set_default_timeout(LONG)

        def load_model() -> None:
            page.goto(url)
            expect(page.get_by_role("heading", name="embedgen")).to_be_visible()
            goto(page, "Model")
            page.get_by_text("Folder on this machine", exact=True).click()
            folder = page.get_by_label("Folder", exact=True)
            folder.fill(model_dir)
            folder.press("Enter")
            idle(page)
            page.get_by_role("button", name="Load model").click()
            expect(page.get_by_text("BertModel", exact=True)).to_be_visible()

        def upload() -> None:
            goto(page, "Data")
            page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(csv_path)
            expect(page.get_by_text("All 120 rows are usable.")).to_be_visible()

        runs = Path(home) / "runs"
        stem = Path(csv_path).stem

        def finished_runs() -> int:  # this user's: run folders are named for the data file
            return sum(
                '"status": "finished"' in (f / "run.json").read_text("utf-8")
                for f in runs.glob(f"*_{stem}_head")
                if (f / "run.json").is_file()
            )

        def train() -> None:
            goto(page, "Train")
            for label, value in (("Epochs", "2"), ("Projection size d", "8")):
                box = page.get_by_label(label, exact=True)
                box.fill(value)
                box.press("Tab")
            before = finished_runs()
            page.get_by_role("button", name="Start training").click()
            end = time.time() + LONG / 1000
            while finished_runs() == before:  # the page still shows the last run's result
                if time.time() > end:
                    raise TimeoutError("the training did not finish")
                time.sleep(0.5)
            goto(page, "Train")  # the page takes the finished run as this session's
            expect(page.get_by_text("Best epoch")).to_be_visible()

        jobs_dir = Path(home) / "jobs"

        def finished_jobs(kind: str) -> int:  # everyone's: counted before and after a click
            return sum(
                '"status": "finished"' in (f / "job.json").read_text("utf-8")
                for f in jobs_dir.glob(f"*_{kind}_*")
                if (f / "job.json").is_file()
            )

        def wait_jobs(kind: str, before: int, replace=None) -> None:
            end = time.time() + LONG / 1000
            while finished_jobs(kind) <= before:
                if replace is not None and replace.is_visible():  # the last round's matrix
                    replace.click()
                if time.time() > end:
                    raise TimeoutError(f"the {kind} job did not finish")
                time.sleep(0.5)

        def matrix() -> None:
            goto(page, "Matrix")
            if method_name:
                method = page.get_by_role("radiogroup", name="Method")
                method.get_by_text(method_name, exact=True).click()
                idle(page)
            before = finished_jobs("matrix")
            page.get_by_role("button", name="Build matrix").click()
            wait_jobs("matrix", before, page.get_by_role("button", name="Replace it"))
            idle(page)
            expect(page.get_by_text("Matrices in this session")).to_be_visible()

        def map_() -> None:
            goto(page, "Explore")
            page.get_by_role("tab", name="Map").click()
            idle(page)
            compute = page.get_by_role("button", name="Compute map")
            chart = page.get_by_role("tabpanel").get_by_test_id("stPlotlyChart")
            # The tab draws one or the other; counting the button before either was drawn
            # skipped the click and waited 300 s for a chart (one error in 68 requests).
            expect(compute.or_(chart).first).to_be_visible()
            if compute.count():
                before = finished_jobs("map")
                compute.click()
                wait_jobs("map", before)
                idle(page)
            expect(page.get_by_role("tabpanel").get_by_test_id("stPlotlyChart")).to_be_visible()

        def neighbours(token: str) -> Callable[[], None]:
            def ask() -> None:
                goto(page, "Explore") if "Explore" not in page.url else None
                page.get_by_role("tab", name="Neighbours").click()  # after a map: its tab
                box = page.get_by_label("Token or word")
                box.fill(token)
                box.press("Enter")
                idle(page)
                expect(page.get_by_test_id("stDataFrame").first).to_be_visible(timeout=60_000)

            return ask

        if not (step(page, "load model", load_model) and step(page, "upload", upload)):
            browser.close()
            return
        while time.time() < until:
            step(page, "train", train)
            step(page, "matrix", matrix)
            if maps:
                step(page, "map", map_)
            for token in tokens:
                step(page, "neighbours", neighbours(token))
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.md")
    parser.add_argument("--model", help="a model folder (default: a tiny random BERT)")
    parser.add_argument(
        "--method", default="projected", help="the matrix each round builds ('': the default)"
    )
    parser.add_argument("--maps", action="store_true", help="each round also computes a map")
    args = parser.parse_args()

    from browser_support import StreamlitServer
    from conftest import build_tiny_bert, synthetic_rows, write_csv

    work = Path(tempfile.mkdtemp(prefix="embedgen-soak-"))
    home = work / "home"
    shots = work / "shots"
    shots.mkdir()
    model_dir = Path(args.model) if args.model else build_tiny_bert(work / "tiny")
    roots = os.pathsep.join([str(work), str(model_dir)])
    env = {"EMBEDGEN_HOME": str(home), "EMBEDGEN_ALLOWED_ROOTS": roots}
    server = StreamlitServer(work / "server.log", env)
    results: list[tuple[int, str, float, str | None]] = []
    memory: list[tuple[float, float | None, float | None, float | None]] = []
    started = time.time()
    try:
        server.wait_healthy()
        until = time.time() + 60 * args.minutes
        ctx = mp.get_context("spawn")  # each user a fresh process: Playwright does not fork
        out = ctx.Queue()
        users = [
            ctx.Process(
                target=user,
                args=(
                    n,
                    server.url,
                    str(model_dir),
                    str(write_csv(work / f"reviews-user{n}.csv", synthetic_rows(120, seed=n))),
                    str(home),
                    until,
                    out,
                    str(shots),
                    args.method,
                    args.maps,
                ),
            )
            for n in range(args.users)
        ]
        for p in users:
            p.start()
        while any(p.is_alive() for p in users):
            while not out.empty():
                results.append(out.get())
            workers = [int(b.name.rsplit("-", 1)[1]) for b in (home / "queue").glob("worker-*")]
            memory.append(
                (
                    time.time() - started,
                    rss_mib(server.proc.pid),
                    sum(filter(None, (rss_mib(w) for w in workers))) or None,
                    rss_mib(server.proc.pid, "RssAnon"),
                )
            )
            time.sleep(5)
        while not out.empty():
            results.append(out.get())
    except Exception:
        traceback.print_exc()
    finally:
        server.stop()
        import signal

        for beat in (home / "queue").glob("worker-*"):
            try:
                os.kill(int(beat.name.rsplit("-", 1)[1]), signal.SIGTERM)
            except (ValueError, ProcessLookupError):
                pass

    served = [r for r in results if r[3] is None]
    errors = [r for r in results if r[3] is not None]
    by_action: dict[str, list[float]] = {}
    for _, action, seconds, _ in served:
        by_action.setdefault(action, []).append(seconds)
    server_mem = [m[1] for m in memory if m[1] is not None]
    worker_mem = [m[2] for m in memory if m[2] is not None]
    lines = [
        f"{args.users} users, {args.minutes:g} min, {args.model or 'tiny BERT'}, matrix "
        f"{args.method or 'default'}{', maps' if args.maps else ''}, {platform.machine()}, "
        f"{os.cpu_count()} cores · {time.time() - started:.0f} s in all",
        "",
        f"requests served: {len(served)}; errors: {len(errors)}",
        "",
        "| action | served | median s | slowest s |",
        "| --- | ---: | ---: | ---: |",
    ]
    for action, times in by_action.items():
        times.sort()
        median = times[len(times) // 2]
        lines.append(f"| {action} | {len(times)} | {median:.1f} | {times[-1]:.1f} |")
    if server_mem:
        lines += [
            "",
            f"server memory (RSS): {server_mem[0]:.0f} MiB at the start, {max(server_mem):.0f} "
            f"at most, {server_mem[-1]:.0f} at the end",
        ]
        after = [m[1] for m in memory if m[1] is not None and m[0] >= 60]
        if after:
            lines.append(
                f"after the first minute: {after[0]:.0f} MiB at 60 s, {max(after):.0f} at most "
                f"(+{max(after) - after[0]:.0f} MiB), {after[-1]:.0f} at the end"
            )
        anon = [m[3] for m in memory if m[3] is not None and m[0] >= 60]
        if anon:
            lines.append(
                f"the server's own allocations (RssAnon) after the first minute: {anon[0]:.0f} "
                f"MiB at 60 s, {max(anon):.0f} at most (+{max(anon) - anon[0]:.0f} MiB), "
                f"{anon[-1]:.0f} at the end"
            )
        marks = [m for i, m in enumerate(memory) if m[1] is not None and i % 6 == 0]
        lines.append(
            "server memory every 30 s (MiB, RSS / RssAnon): "
            + ", ".join(f"{m[1]:.0f} / {m[3] or 0:.0f} at {m[0]:.0f} s" for m in marks)
        )
    if worker_mem:
        lines.append(
            f"training worker memory (RSS): {worker_mem[0]:.0f} MiB first seen, "
            f"{max(worker_mem):.0f} at most, {worker_mem[-1]:.0f} at the end"
        )
    for n, action, _, error in errors[:10]:
        lines.append(f"- error: user {n}, {action}: {error[:300]}")
    text = "\n".join(lines) + "\n"
    print(text)
    print(f"(screenshots of errors, server log: {work})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
