"""Browsing at machine speed: pushing and popping case screens while their mounts and workers run.

Modelled on the crash reported in issue 17: Enter on a result, Escape 0.1-0.4 s later, Down,
repeated, killed the app within 4 to 15 rounds (``No Tab with id ...`` from Tabs' mount,
``NoMatches: HeaderTitle``). Here the same keys, and the case screen's own, arrive faster
than the app handles them: each is posted without waiting for the last one to be handled
(``pilot.press`` would wait for the app to idle, which hides the race), with random short
pauses in between. Before the fixes this test failed within 150 rounds on every seed tried.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from textual import events
from tui_support import SIZE, make_app, settle, wait_for

from medpix_tui.bundle import Bundle
from medpix_tui.tui.screens.search import SearchScreen

pytestmark = pytest.mark.asyncio

KEYS = ("enter", "escape", "down", "n", "p", "right_square_bracket", "left_square_bracket", "f")
CHARACTERS = {"n": "n", "p": "p", "f": "f", "right_square_bracket": "]", "left_square_bracket": "["}
WEIGHTS = (4, 4, 2, 1, 1, 1, 1, 1)
PAUSES = (0.0, 0.0, 0.005, 0.02, 0.05, 0.1)
ROUNDS = 300


async def test_random_browsing_at_machine_speed_never_crashes(real_bundle: Bundle) -> None:
    rng = random.Random(17)  # a fixed seed: a failure replays
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("down")  # into the results, where Enter opens a case
        for _ in range(ROUNDS):
            for key in rng.choices(KEYS, weights=WEIGHTS, k=3):
                app.post_message(events.Key(key, CHARACTERS.get(key)))
                await asyncio.sleep(rng.choice(PAUSES))  # the app runs meanwhile
            assert app.is_running and app._exception is None
        await settle(pilot)  # every key handled before the app is asked to close
        for _ in range(3):  # back to the results, however deep the last keys went
            if isinstance(app.screen, SearchScreen):
                break
            await pilot.press("escape")
            await settle(pilot)
        await wait_for(pilot, lambda: isinstance(app.screen, SearchScreen))
        assert app.is_running and app._exception is None
        assert app.result is not None and len(app.screen_stack) == 1
