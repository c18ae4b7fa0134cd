"""The search a bundle was left on survives a restart; a corrupt or foreign state file is ignored with a notice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import Input, SelectionList
from tui_support import SIZE, settle, type_text, wait_for

from medpix_tui.bundle import Bundle
from medpix_tui.tui.app import MedpixApp
from medpix_tui.tui.remember import state_path
from medpix_tui.tui.widgets.results import ResultsTable


def make(bundle: Bundle, state: Path) -> MedpixApp:
    return MedpixApp(bundle, image_renderer="halfcell", history_path=None, state_dir=state)


@pytest.mark.asyncio
async def test_query_facets_and_position_survive_a_restart(real_bundle: Bundle, tmp_path: Path) -> None:
    first = make(real_bundle, tmp_path)
    async with first.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await type_text(pilot, "fracture")
        await wait_for(pilot, lambda: first.result is not None and first.result.request.keywords == "fracture")
        await settle(pilot)
        first.screen.query_one("#facet-modality", SelectionList).select("CT")
        await wait_for(pilot, lambda: first.result is not None
                       and first.result.request.facets.get("modality") == {"CT"})
        await settle(pilot)
        table = first.screen.query_one(ResultsTable)
        table.focus()
        await pilot.press("down", "down", "down")
        position = table.current_name
        names = first.result.names
        await pilot.press("ctrl+q")
    kept = state_path(tmp_path, real_bundle)
    assert kept is not None and json.loads(kept.read_text())["position"] == position

    second = make(real_bundle, tmp_path)
    async with second.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: second.result is not None
                       and second.result.request.facets.get("modality") == {"CT"})
        await settle(pilot)
        assert second.screen.query_one("#keywords", Input).value == "fracture"
        assert second.result.names == names
        assert second.screen.query_one(ResultsTable).current_name == position


@pytest.mark.parametrize("content", ["{not json", json.dumps({"kind": "something else"}),
                                     json.dumps({"kind": "medpix-tui search state", "format": 1, "bundle": "0" * 64})])
@pytest.mark.asyncio
async def test_a_corrupt_or_foreign_state_is_ignored_with_a_notice(real_bundle: Bundle, tmp_path: Path,
                                                                   content: str) -> None:
    path = state_path(tmp_path, real_bundle)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    app = make(real_bundle, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.result is not None)
        await settle(pilot)
        assert app.result.request.keywords == "" and app.screen.query_one("#keywords", Input).value == ""
        assert any("remembered search" in n.message and "starting afresh" in n.message for n in app._notifications)


def test_the_remembered_request_is_the_typed_one_in_the_same_file_format(real_bundle: Bundle, tmp_path: Path) -> None:
    """The model's answer (``within``) belongs to one run; untick-only facets are dropped; the JSON keys stay."""
    from medpix_tui.session import SearchRequest
    from medpix_tui.store import CASES
    from medpix_tui.tui.remember import Remembered, read_state, write_state

    facets = {"modality": frozenset({"CT"}), "sex": frozenset()}
    typed = SearchRequest("glioma", CASES, (("Case.Title", "tumou?r"),), facets,
                          within=("MPX1009_synpic46283",), within_label="similar to MPX1009_synpic46283")
    kept = Remembered.of(typed, "MPX1009_synpic46283")
    assert kept.request == SearchRequest("glioma", CASES, (("Case.Title", "tumou?r"),), {"modality": frozenset({"CT"})})
    assert not kept.empty and Remembered.of(SearchRequest(within=("MPX1009_synpic46283",)), None).empty
    path = write_state(tmp_path, real_bundle, kept)
    assert path is not None and read_state(tmp_path, real_bundle) == (kept, None)
    assert json.loads(path.read_text()) == {
        "kind": "medpix-tui search state", "format": 1, "bundle": real_bundle.digest, "keywords": "glioma",
        "collection": CASES, "pairs": [["Case.Title", "tumou?r"]], "facets": {"modality": ["CT"]},
        "position": "MPX1009_synpic46283"}
