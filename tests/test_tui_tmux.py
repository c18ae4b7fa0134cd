"""In a real terminal: the app under tmux, driven by keys, read back from the pane.

Every wait is for something on screen; the deadlines only stop a hung run (a loaded
2-core host can take a minute to start the first time), they never decide a pass.
"""

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
#: Only a hung app takes this long; a slow one is waited for.
HUNG = 300.0


class Tmux:
    """One detached session on a private server, so nothing touches the user's tmux."""

    def __init__(self, socket: str, session: str) -> None:
        self.socket, self.session = socket, session

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True).stdout

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.session, *keys)

    def text(self) -> str:
        return self.run("capture-pane", "-p", "-J", "-t", self.session)

    def wait_for(self, needle: str, timeout: float = HUNG) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if needle in text:
                return text
            if "exited with status" in text and "exited with status" not in needle:
                raise AssertionError(f"the app exited while waiting for {needle!r}:\n{text}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} did not appear; the pane shows:\n{text}")
            time.sleep(0.1)


def start(real_bundle: Bundle, tmp_path: Path, prelude: str = "") -> Tmux:
    session = Tmux(f"medpix-tui-test-{os.getpid()}-{tmp_path.name}", "medpix")
    code = f"{prelude}from medpix_tui.cli import main; main()"
    app = f"{shlex.quote(sys.executable)} -c {shlex.quote(code)} --bundle {shlex.quote(str(real_bundle.root))}"
    command = f"{app}; echo exited with status $?; sleep 600"  # a crash stays readable in the pane
    env = {"HOME": str(tmp_path), "TERM": "xterm-256color", "XDG_STATE_HOME": str(tmp_path / "state"),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_DATA_HOME": str(tmp_path / "data")}
    session.run("new-session", "-d", "-s", session.session, "-x", str(WIDTH), "-y", str(HEIGHT),
                "-c", str(tmp_path), *[a for k, v in env.items() for a in ("-e", f"{k}={v}")], command)
    return session


@pytest.fixture
def tmux(real_bundle: Bundle, tmp_path: Path) -> Iterator[Tmux]:
    session = start(real_bundle, tmp_path)
    try:
        yield session
    finally:
        subprocess.run(["tmux", "-L", session.socket, "kill-server"], check=False, capture_output=True)


def open_highlighted(tmux: Tmux) -> str:
    """Enter until a case shows: the first Enter may still reach the search box, which moves to the results."""
    for _ in range(20):
        tmux.keys("Enter")
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            text = tmux.text()
            if "result 1 of" in text:
                return text
            time.sleep(0.1)
    return tmux.wait_for("result 1 of")


def test_search_and_read_a_case_in_a_real_terminal(tmux: Tmux, real_bundle: Bundle) -> None:
    images = real_bundle.store.count("Image_Descriptions")
    tmux.wait_for(f"{images} images ·")
    tmux.keys("glioma")
    hits = len(real_bundle.store.keyword_search("glioma", limit=0))
    tmux.wait_for(f'{hits} images · ')
    text = open_highlighted(tmux)
    first = real_bundle.store.keyword_search("glioma", limit=1)[0][1]
    assert first["U_id"] in text
    text = tmux.wait_for("History")
    case = real_bundle.store.get_case(first["U_id"])
    assert case["Case"]["History"].split()[0] in text
    tmux.keys("n")
    tmux.wait_for("result 2 of")
    tmux.keys("Escape")
    tmux.wait_for(f"{hits} images · ")
    tmux.keys("C-q")
    assert "exited with status 0" in tmux.wait_for("exited with status")


def test_forty_rounds_of_fast_browsing_leave_the_app_alive(tmux: Tmux, real_bundle: Bundle) -> None:
    images = real_bundle.store.count("Image_Descriptions")
    tmux.wait_for(f"{images} images ·")
    tmux.keys("Down")
    for _ in range(40):  # the reported crash: Enter, Escape 0.1 s later, Down
        for key in ("Enter", "Escape", "Down"):
            tmux.keys(key)
            time.sleep(0.1)  # the user's pace between keys, not a wait for a result
    text = tmux.text()
    assert "Traceback" not in text and "exited with status" not in text, text
    tmux.keys("Escape")
    tmux.wait_for(f"{images} images ·")
    tmux.keys("C-q")
    text = tmux.wait_for("exited with status")
    assert "exited with status 0" in text and "Traceback" not in text, text


def test_an_internal_error_exits_1_with_one_line_naming_the_log(real_bundle: Bundle, tmp_path: Path) -> None:
    # a fault injected into one action stands for any bug the keys may reach
    prelude = ("from medpix_tui.tui.screens import search as s; "
               "s.SearchScreen.action_reset = lambda self: 1 / 0; ")
    session = start(real_bundle, tmp_path, prelude)
    try:
        session.wait_for(f"{real_bundle.store.count('Image_Descriptions')} images ·")
        session.keys("C-r")
        text = session.wait_for("exited with status")
        assert "exited with status 1" in text, text
        assert "Traceback" not in text
        logs = list((tmp_path / "state").rglob("crash-*.log"))
        assert len(logs) == 1 and "ZeroDivisionError" in logs[0].read_text()
        assert str(logs[0]) in text.replace("\n", "")
    finally:
        subprocess.run(["tmux", "-L", session.socket, "kill-server"], check=False, capture_output=True)
