"""Smoke test in a real terminal: the app under tmux, driven by keys, read back from the pane."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from medpix_tui.bundle import Bundle

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
WIDTH, HEIGHT = 100, 32


class Tmux:
    """One detached session on a private server, so nothing touches the user's tmux."""

    def __init__(self, socket: str, session: str) -> None:
        self.socket, self.session = socket, session

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True).stdout

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.session, *keys)

    def text(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session)

    def wait_for(self, needle: str, timeout: float = 45.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if needle in text:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} did not appear; the pane shows:\n{text}")
            time.sleep(0.2)


@pytest.fixture
def tmux(real_bundle: Bundle, tmp_path: Path) -> Iterator[Tmux]:
    session = Tmux(f"medpix-test-{os.getpid()}", "medpix")
    app = f"{shlex.quote(sys.executable)} -c 'from medpix_tui.cli import main; main()' --bundle {shlex.quote(str(real_bundle.root))}"
    command = f"{app}; echo exited with status $?; sleep 60"  # a crash stays readable in the pane
    env = {"HOME": str(tmp_path), "TERM": "xterm-256color"}  # SQL history goes to the temporary home
    session.run("new-session", "-d", "-s", session.session, "-x", str(WIDTH), "-y", str(HEIGHT),
                "-c", str(tmp_path), *[a for k, v in env.items() for a in ("-e", f"{k}={v}")], command)
    try:
        yield session
    finally:
        subprocess.run(["tmux", "-L", session.socket, "kill-server"], capture_output=True)


def test_search_and_read_a_case_in_a_real_terminal(tmux: Tmux, real_bundle: Bundle) -> None:
    images = real_bundle.store.count("Image_Descriptions")
    tmux.wait_for(f"{images} images ·")
    tmux.keys("glioma")
    hits = len(real_bundle.store.keyword_search("glioma", limit=0))
    tmux.wait_for(f'{hits} images · ')
    tmux.keys("Enter")  # into the results
    time.sleep(0.3)
    tmux.keys("Enter")  # open the first result
    first = real_bundle.store.keyword_search("glioma", limit=1)[0][1]
    text = tmux.wait_for("result 1 of")
    assert first["U_id"] in text
    text = tmux.wait_for("History")
    case = real_bundle.store.get_case(first["U_id"])
    assert case["Case"]["History"].split()[0] in text
    tmux.keys("n")
    tmux.wait_for("result 2 of")
    tmux.keys("Escape")
    tmux.wait_for(f"{hits} images · ")
    tmux.keys("C-q")
