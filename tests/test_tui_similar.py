"""Pilot tests of similar cases (F7): from a typed history on the search screen, and like the open case."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Input, Static
from tui_support import SIZE, make_app, settle, type_text, wait_for

from medpix_tui.bundle import Bundle
from medpix_tui.model.case_text import similar_cases
from medpix_tui.tui.screens.case import CaseScreen
from medpix_tui.tui.screens.search import SearchScreen
from medpix_tui.tui.screens.similar import HistoryDialog, K, SimilarCasesScreen

pytestmark = pytest.mark.asyncio

HISTORY = "elderly man with hematuria; the bladder wall is thickened with an outpouching"


async def test_similar_cases_from_a_typed_history_then_like_the_open_case(real_bundle: Bundle) -> None:
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("f7")
        await wait_for(pilot, lambda: isinstance(app.screen, HistoryDialog))
        dialog = app.screen
        # loading from the first key (or, when an earlier test of this process left torch loaded, ready at once)
        assert str(dialog.query_one("#history-model", Static).render()) in (
            "Loading the sentence model…", "The sentence model is ready.")
        await type_text(pilot, HISTORY)  # keys are answered while the model loads
        assert dialog.query_one("#history-text", Input).value == HISTORY
        await wait_for(pilot, lambda: app.sentence_encoder is not None, timeout=120)
        await wait_for(pilot, lambda: "ready" in str(dialog.query_one("#history-model", Static).render()))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, SimilarCasesScreen) and app.screen.rows, timeout=60)
        listed = app.screen
        expected = similar_cases(real_bundle, HISTORY, K, encoder=app.sentence_encoder)
        assert [r["case"] for r in listed.rows] == [r["case"] for r in expected]
        table = listed.query_one("#similar-table", DataTable)
        assert table.row_count == len(expected) and app.focused is table
        assert any("bladder" in (r["title"] or "").lower() or "diverticul" in (r["title"] or "").lower()
                   for r in listed.rows[:5])

        await pilot.press("down", "enter")  # the second case; n walks on down the list
        await wait_for(pilot, lambda: isinstance(app.screen, CaseScreen) and app.screen.case is not None)
        case = app.screen
        assert case.case["U_id"] == listed.rows[1]["case"]
        await pilot.press("n")
        await wait_for(pilot, lambda: case.case is not None and case.case["U_id"] == listed.rows[2]["case"])
        await settle(pilot)
        assert table.cursor_row == 2

        await pilot.press("f7")  # like the open case: the encoder is kept, the case itself left out
        await wait_for(pilot, lambda: isinstance(app.screen, SimilarCasesScreen) and app.screen is not listed
                       and app.screen.rows)
        like = app.screen
        uid = listed.rows[2]["case"]
        assert like.sub_title == f"cases like {uid}" and uid not in {r["case"] for r in like.rows}
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is case)
        await pilot.press("escape", "escape")
        await wait_for(pilot, lambda: isinstance(app.screen, SearchScreen))
