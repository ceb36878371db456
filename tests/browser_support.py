"""Helpers for the real-browser test: a Streamlit server process and a headless Chromium."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HEALTH_TIMEOUT = 60.0
# Every real-browser test module: ``pytestmark = BROWSER_TEST``.
BROWSER_TEST = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} is missing: install Debian's chromium (CI does it in .ci/run)",
    ),
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StreamlitServer:
    """``streamlit run app.py`` (or another ``script``) on a free localhost port.

    Its output goes to ``log_path``, copied to test-artifacts/browser/ under the same name on
    stop.
    """

    def __init__(
        self,
        log_path: Path,
        env: dict[str, str],
        script: Path = ROOT / "app.py",
        address: str | None = "127.0.0.1",
    ) -> None:
        """``address`` None leaves the listening address to the project's .streamlit/config.toml."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        where = ["--server.address", address] if address is not None else []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                str(script),
                "--server.headless",
                "true",
                "--server.port",
                str(self.port),
                *where,
                "--browser.gatherUsageStats",
                "false",
                "--server.fileWatcherType",
                "none",
                "--server.runOnSave",
                "false",
            ],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"streamlit exited with code {self.proc.returncode} before it answered.\n"
                    + self.log_tail()
                )
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.read().decode().strip() == "ok":
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        raise RuntimeError(f"streamlit did not answer within {timeout:.0f} s.\n" + self.log_tail())

    def log_tail(self, lines: int = 60) -> str:
        self._log.flush()
        text = self.log_path.read_text("utf-8", errors="replace").splitlines()
        return "--- streamlit log (tail) ---\n" + "\n".join(text[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / self.log_path.name).write_bytes(self.log_path.read_bytes())


def screenshot(page: Any, name: str) -> Path:
    """A full-page PNG of the app as it is now, in test-artifacts/browser/.

    Streamlit scrolls inside its main container, not the document, so ``full_page`` alone
    would stop at the window: the window is made as tall as the content for the shot.
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    size = page.viewport_size
    height = page.evaluate(
        """() => {
            const main = document.querySelector('[data-testid="stMain"]')
                || document.querySelector('section.main');
            const inner = main ? main.scrollHeight : 0;
            return Math.max(inner, document.documentElement.scrollHeight);
        }"""
    )
    tall = max(size["height"], min(int(height), 6000))
    try:
        if tall != size["height"]:
            page.set_viewport_size({"width": size["width"], "height": tall})
            page.wait_for_timeout(300)  # let charts resize to the new window
        page.screenshot(path=str(path), full_page=True)
    finally:
        if tall != size["height"]:
            page.set_viewport_size(size)
    return path


@contextmanager
def report_failure(page: Any, server: StreamlitServer) -> Iterator[None]:
    """On any failure: a screenshot of the page as it was, and the server log's tail."""
    try:
        yield
    except BaseException:
        try:
            shot = screenshot(page, "failure")
            print(f"\nscreenshot of the failing page: {shot}")  # noqa: T201
        except Exception as exc:  # the original failure matters more
            print(f"\n(no failure screenshot: {exc})")  # noqa: T201
        print("\n" + server.log_tail())  # noqa: T201
        raise


@contextmanager
def app_server(home: Path, allowed: Path, log_path: Path) -> Iterator[StreamlitServer]:
    """The app on a free port with its own ``$EMBEDGEN_HOME``, offline, letting visitors open
    folders under ``allowed`` (the tests' tiny models); the log's tail is printed on failure."""
    srv = StreamlitServer(
        log_path,
        {
            "EMBEDGEN_HOME": str(home),
            "EMBEDGEN_ALLOWED_ROOTS": str(allowed),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        },
    )
    try:
        srv.wait_healthy()
        yield srv
    except BaseException:
        print("\n" + srv.log_tail())  # noqa: T201
        raise
    finally:
        srv.stop()
