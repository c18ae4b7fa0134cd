"""Helpers for the served-app tests: a `medpix-tui serve` process and a headless Chromium.

The browser is Debian's chromium driven by Selenium 4, started as the environment notes
require (no background networking: the closed network refuses it). What the served
terminal shows is read from the bytes its websocket receives (a script added before the
page loads keeps them), since xterm.js draws on a canvas.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ANSI = re.compile(r"\x1b\[[0-9;?<>=$]*[A-Za-z~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][A-Z0-9]|\x1b[=>78]")
KEEP_WEBSOCKET_BYTES = """
window.__rx = [];
const NativeWebSocket = window.WebSocket;
window.WebSocket = function (url, protocols) {
  const ws = protocols ? new NativeWebSocket(url, protocols) : new NativeWebSocket(url);
  ws.addEventListener('message', (event) => {
    if (typeof event.data === 'string') return;
    const keep = (buffer) => window.__rx.push(new TextDecoder().decode(buffer));
    if (event.data.arrayBuffer) event.data.arrayBuffer().then(keep); else keep(event.data);
  });
  return ws;
};
window.WebSocket.prototype = NativeWebSocket.prototype;
"""


def need_browser() -> None:
    """Skip, saying why, where the browser cannot run (CI installs it in .ci/run)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium", reason="selenium not installed (the [test] extra has it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until it returns something true; fail naming ``what``.

    The timeout is a last resort for a hung server, far beyond what a loaded host needs.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def tree(root: Path) -> set[str]:
    """Every path under ``root`` (what a check of 'nothing written' compares)."""
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


class Served:
    """A running ``medpix-tui serve`` with a private home, temp dir and working folder."""

    def __init__(self, bundle: Path, root: Path, *args: str) -> None:
        self.root = root
        self.cwd, self.home, self.tmp = root / "cwd", root / "home", root / "tmp"
        for folder in (self.cwd, self.home, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDPIX_", "XDG_"))}
        env.update(HOME=str(self.home), TMPDIR=str(self.tmp), PYTHONPATH=str(Path(__file__).parents[1]))
        self.log = root / "serve.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "medpix_tui", "--bundle", str(bundle), "serve", "--port", str(self.port), *args],
            cwd=self.cwd, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
        )
        self.url = wait_for(self._printed_url, 300, "the start line with the URL")

    def _printed_url(self) -> str | None:
        if self.process.poll() is not None:
            raise AssertionError(f"serve exited {self.process.returncode}: {self.log.read_text()}")
        match = re.search(r"open (http://\S+)", self.log.read_text())
        return match.group(1) if match else None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def served(bundle: Path, *args: str) -> Iterator[Served]:
    root = Path(tempfile.mkdtemp(prefix="medpix-serve-test-"))
    server = Served(bundle, root, *args)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def browser(downloads: Path) -> Iterator[Any]:
    """Headless Chromium that keeps what the served terminal receives and downloads into ``downloads``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="medpix-chromium-")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,900", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": KEEP_WEBSOCKET_BYTES})
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screen_text(driver: Any) -> str:
    """Everything the terminal has received, escape sequences removed."""
    return ANSI.sub("", driver.execute_script("return (window.__rx || []).join('')") or "")


def received_since(driver: Any, mark: int) -> str:
    """What the terminal received after ``mark`` (a length of :func:`screen_text`)."""
    return screen_text(driver)[mark:]


def type_keys(driver: Any, *keys: str) -> None:
    """Type into the served terminal (xterm.js reads its hidden textarea)."""
    from selenium.webdriver.common.by import By

    area = driver.find_element(By.CSS_SELECTOR, ".xterm-helper-textarea")
    for key in keys:
        area.send_keys(key)


def press_ctrl(driver: Any, letter: str) -> None:
    """ctrl+``letter`` as one chord on the terminal's textarea (a click first would land in the app)."""
    from selenium.webdriver.common.keys import Keys

    type_keys(driver, Keys.CONTROL + letter)


def finished_downloads(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.endswith((".crdownload", ".tmp")))


#: A server whose "app" is ``sleep``: it never quits when asked and ignores its stdin closing, the
#: worst case for ending sessions and for orphans.
STUBBORN_SERVER = """
import sys
from pathlib import Path
from medpix_tui.web.server import MedpixServer, ServeConfig
config = ServeConfig.make(Path(sys.argv[1]), host=sys.argv[4], port=int(sys.argv[2]),
                          max_sessions=int(sys.argv[3]), token=None, idle="30m")
MedpixServer(config, command="exec sleep 600").serve()
"""


@contextmanager
def stubborn_served(max_sessions: int = 8, host: str = "127.0.0.1") -> Iterator[Served]:
    """A :class:`Served` running :data:`STUBBORN_SERVER` (no bundle is opened) on ``host``."""
    root = Path(tempfile.mkdtemp(prefix="medpix-serve-test-"))
    server = Served.__new__(Served)
    server.root, server.port, server.log = root, free_port(), root / "serve.log"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    server.process = subprocess.Popen([sys.executable, "-c", STUBBORN_SERVER, str(root), str(server.port),
                                       str(max_sessions), host], env=env, stdout=server.log.open("w"),
                                      stderr=subprocess.STDOUT)
    try:
        server.url = wait_for(server._printed_url, 300, "the start line with the URL")
        yield server
    finally:
        if server.process.poll() is None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux: read from /proc)."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat_file.parent.name))
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

