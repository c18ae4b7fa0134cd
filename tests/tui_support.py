"""Helpers for the TUI tests: a deterministic app over the session bundle, and waiting that is not sleeping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.worker import WorkerState
from textual_image._terminal import CellSize, get_cell_size

from medpix_tui.bundle import Bundle
from medpix_tui.tui.app import MedpixApp

# Half-block images are sized from the terminal's cell size; pin it so snapshots do not
# depend on the terminal pytest happens to run in.
get_cell_size._result = CellSize(10, 20)

SIZE = (100, 32)


def make_app(bundle: Bundle, save_dir: Path | None = None, *, preload_model: bool = False) -> MedpixApp:
    """The app as tests use it: half-block images, no SQL history file, saves in ``save_dir``.

    The model loads only when a test asks for it (as the app does on the first model key),
    so the other tests do not wait for it.
    """
    return MedpixApp(bundle, image_renderer="halfcell", history_path=None, save_dir=save_dir,
                     preload_model=preload_model)


async def settle(pilot: Pilot, pause: float = 0.0) -> None:
    """Let timers fire and every worker finish, then let the screen catch up.

    Idle means no worker pending or running on two looks in a row: a finished worker's
    message can start the next one (a facet count after the titles) between two looks.
    """
    if pause:
        await pilot.pause(pause)
    idle = 0
    for _ in range(200):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        busy = any(w.state in (WorkerState.PENDING, WorkerState.RUNNING) for w in pilot.app.workers)
        idle = 0 if busy else idle + 1
        if idle == 2:
            return


async def wait_for(pilot: Pilot, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    """Pause until ``predicate()`` holds (workers run meanwhile); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.05)
        await asyncio.sleep(0)


async def type_text(pilot: Pilot, text: str) -> None:
    """Type ``text`` key by key into the focused widget."""
    await pilot.press(*[{" ": "space"}.get(c, c) for c in text])


def burst(pilot: Pilot, *keys: str) -> None:
    """Queue ``keys`` at once, as a fast typist or a paste delivers them (``pilot.press`` lets the app
    go idle after each key, which hides what a key's action leaves for the next ones)."""
    from textual import events

    driver = pilot.app._driver
    assert driver is not None
    for key in keys:
        event = events.Key(key, {"slash": "/", "space": " "}.get(key, key if len(key) == 1 else None))
        event.set_sender(pilot.app)
        driver.send_message(event)  # as the terminal's driver does, and pilot.press, without its waits


async def open_screen(pilot: Pilot, key: str, screen_class: type) -> Any:
    """Press the mode's key, wait until its screen is the one shown and has settled; return it."""
    await pilot.press(key)
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, screen_class))
    await settle(pilot)
    return pilot.app.screen
