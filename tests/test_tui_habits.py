"""Pilot tests of the habits of good terminal apps (issue 17 items 3, 5 and 8): quit, sort, copy,
the cursor following the case screen, keyword hits shown, find in a case, the full-screen viewer."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input, Static
from tui_support import SIZE, make_app, settle, type_text, wait_for

from medpix_tui.bundle import Bundle
from medpix_tui.store import CASES, IMAGES
from medpix_tui.tui.screens.case import CaseScreen
from medpix_tui.tui.screens.image import ImageScreen
from medpix_tui.tui.screens.search import SearchScreen
from medpix_tui.tui.widgets.doc_pane import DocPane
from medpix_tui.tui.widgets.results import PAGE, ResultsTable

pytestmark = pytest.mark.asyncio


def status_text(app) -> str:
    return str(app.screen.query_one("#status", Static).render())


async def search(pilot, keywords: str) -> ResultsTable:
    app = pilot.app
    await settle(pilot)
    await type_text(pilot, keywords)
    await wait_for(pilot, lambda: app.result is not None and app.result.request.keywords == keywords)
    await settle(pilot)
    return app.screen.query_one(ResultsTable)


async def test_q_types_in_the_search_box_and_quits_from_the_results(real_bundle: Bundle) -> None:
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("q")
        assert app.screen.query_one("#keywords", Input).value == "q" and app.is_running
        await pilot.press("down")
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running)


async def test_keywords_show_where_they_hit_and_the_status_shows_totals(real_bundle: Bundle) -> None:
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        table = await search(pilot, "ring enhancing lesion")
        assert [str(c.label) for c in table.columns.values()][-1] == "Match"
        first = [str(c) for c in table.get_row_at(0)]
        assert any(w in first[-1].lower() for w in ("ring", "enhancing", "lesion"))
        assert table.get_row_at(0)[-1].text.count("\x01") >= 1  # hits are marked (drawn bold)
        total = real_bundle.store.count(IMAGES)
        assert f"(of {total} · {real_bundle.store.count(CASES)})" in status_text(app)


async def test_sort_by_any_column_with_o_and_by_header_click(real_bundle: Bundle) -> None:
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        table = await search(pilot, "glioma")
        ranked = list(table.names)
        table.focus()
        await pilot.press("o")  # the first column: image id
        assert table.sort_column == "image" and table.names == sorted(ranked)
        await pilot.press("O")
        assert table.sort_reverse and table.names == sorted(ranked, reverse=True)
        await pilot.click(ResultsTable, offset=(23, 0))  # the Case header
        await settle(pilot)
        assert table.sort_column == "case"
        uids = [n.split("_")[0] for n in table.names]
        assert uids == sorted(uids) and sorted(table.names) == sorted(ranked)
        await pilot.press("enter")  # the case screen steps in the order shown
        await wait_for(pilot, lambda: isinstance(app.screen, CaseScreen))
        assert app.screen.names == table.names


async def test_copy_the_highlighted_id(real_bundle: Bundle) -> None:
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        table = await search(pilot, "glioma")
        table.focus()
        await pilot.press("down", "c")
        assert app.clipboard == table.current_name == app.result.names[1]
        await wait_for(pilot, lambda: any(table.current_name in n.message for n in app._notifications))


async def test_the_results_cursor_follows_next_and_previous(real_bundle: Bundle) -> None:
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        table = await search(pilot, "fracture")
        names = table.names
        await pilot.press("enter", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, CaseScreen) and app.screen.image is not None)
        for _ in range(3):
            await pilot.press("n")
        await wait_for(pilot, lambda: app.screen.image is not None and app.screen.image["image"] == names[3])
        await pilot.press("p")
        await wait_for(pilot, lambda: app.screen.image is not None and app.screen.image["image"] == names[2])
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, SearchScreen))
        assert table.current_name == names[2] and table.cursor_row == 2


async def test_hits_are_marked_in_the_case_and_slash_finds_text(real_bundle: Bundle) -> None:
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await search(pilot, "ring enhancing lesion")
        await pilot.press("enter", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, CaseScreen) and app.screen.image is not None)
        screen = app.screen
        pane = screen.query_one("#case-doc", DocPane)
        assert pane.highlight is not None and pane.highlight.search("ring-enhancing lesion")
        legend = screen.query_one("#legend", Static).render()
        assert any(span.style == "bold underline" for span in legend.spans)  # the caption's hits
        await pilot.press("slash")
        await type_text(pilot, "lesion")
        count = pane.text.lower().count("lesion")
        await wait_for(pilot, lambda: f"{count} match" in (screen.sub_title or ""))
        await pilot.press("escape")  # closes the find box, the case stays
        assert isinstance(app.screen, CaseScreen) and not screen.query_one("#find").display
        title = screen.case["Case"]["Title"]
        await wait_for(pilot, lambda: screen.sub_title == title)  # the find's count leaves with its box
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, SearchScreen))


async def test_topic_links_the_split_no_acr_placeholder_and_the_viewer(real_bundle: Bundle) -> None:
    store = real_bundle.store
    linked = (next(c for c in store.find(CASES) if (c.get("Topic") or {}).get("External Links")
                   and c["Topic"].get("ACR Code") == "-1.-1")
              if any((c.get("Topic") or {}).get("ACR Code") == "-1.-1" and c["Topic"].get("External Links")
                     for c in store.find(CASES))
              else next(c for c in store.find(CASES) if (c.get("Topic") or {}).get("External Links")))
    placeholder = next(c for c in store.find(CASES) if (c.get("Topic") or {}).get("ACR Code") == "-1.-1")
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for case in (linked, placeholder):
            images = store.images_of_case(case["U_id"])
            app.push_screen(CaseScreen([d["image"] for d in images], 0))
            await wait_for(pilot, lambda: isinstance(app.screen, CaseScreen) and app.screen.image is not None)
            screen = app.screen
            topic = screen.query_one("#topic-doc", DocPane)
            if case is linked:
                assert "External Links" in [w.name for w in topic.query(".heading") if w.display]
                assert case["Topic"]["External Links"].strip()[:20] in topic.text
            if case is placeholder:
                assert "-1.-1" not in topic.text and "none" in topic.text.splitlines()
            legend = str(screen.query_one("#legend", Static).render())
            assert f"split: {store.split_of(case['U_id'])}" in legend
            await pilot.press("escape")
            await wait_for(pilot, lambda: isinstance(app.screen, SearchScreen))

        images = store.images_of_case(linked["U_id"])
        app.push_screen(CaseScreen([d["image"] for d in images], 0))
        await wait_for(pilot, lambda: isinstance(app.screen, CaseScreen) and app.screen.image is not None)
        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(app.screen, ImageScreen))
        viewer = app.screen

        def legend() -> str:
            return str(viewer.query_one("#full-legend", Static).render())

        assert f"image 1 of {len(images)}" in legend()
        await pilot.press("2", "z", "plus")
        view = viewer.query_one("#full-image")
        assert view.zoom == 1.5 and view.window == (128.0 * 0.8, 128.0)
        assert "zoom ×1.5" in legend()
        await pilot.press("0")
        assert view.zoom == 1.0 and "window: full" in legend()


async def test_an_unknown_field_is_refused_with_the_closest_paths(real_bundle: Bundle) -> None:
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.click("#fq-path")
        await type_text(pilot, "Description.Captoin")
        await pilot.press("tab")
        await type_text(pilot, "hemorrhage")
        await wait_for(pilot, lambda: app.result is None and "Query error" in status_text(app))
        assert "no field 'Description.Captoin'" in status_text(app) and "Description.Caption" in status_text(app)


async def test_a_whole_pair_typed_in_the_field_box_searches_and_is_kept(real_bundle: Bundle) -> None:
    from medpix_tui.query import field_filter

    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.click("#fq-path")
        await type_text(pilot, "Description.Caption=hemorrhage")
        expected = [d["image"] for d in real_bundle.store.find(IMAGES,
                                                               field_filter([("Description.Caption", "hemorrhage")]))]
        await wait_for(pilot, lambda: app.result is not None and app.result.names == expected)
        await pilot.press("enter")  # kept as a chip
        await wait_for(pilot, lambda: app.screen.query_one("#fq-chips").has_class("-some"))
        assert app.screen.query_one("#fq-path", Input).value == ""
        assert app.result.request.pairs == (("Description.Caption", "hemorrhage"),)
        await type_text(pilot, "Type~ct")
        await wait_for(pilot, lambda: app.result is not None and len(app.result.request.pairs) == 2)


async def test_switching_collection_drops_chips_that_cannot_match_and_says_so(real_bundle: Bundle) -> None:
    from textual.widgets import Select

    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.screen.query_one("#fq-collection", Select).value = "Image_Reports"
        await pilot.click("#fq-path")
        await type_text(pilot, "Case.Title=fracture")
        await pilot.press("enter")
        await type_text(pilot, "Type=CT")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.result is not None and len(app.result.request.pairs) == 2)
        app.screen.query_one("#fq-collection", Select).value = IMAGES
        await wait_for(pilot, lambda: app.result is not None and app.result.request.collection == IMAGES)
        assert app.result.request.pairs == (("Type", "CT"),)
        assert any("Dropped Case.Title~fracture" in n.message for n in app._notifications)


async def test_a_failed_save_keeps_the_dialog_and_a_missing_folder_is_offered(real_bundle: Bundle,
                                                                              tmp_path: Path) -> None:
    from medpix_tui.tui.screens.dialogs import ConfirmDialog, SaveDialog

    (tmp_path / "blocker").write_text("a file where a folder is expected\n")
    app = make_app(real_bundle, save_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await search(pilot, "glioma")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, SaveDialog))
        app.screen.query_one("#save-path", Input).value = "blocker/out.json"
        await pilot.press("enter")
        # the write fails: the dialog comes back with the path typed, not the default
        await wait_for(pilot, lambda: isinstance(app.screen, SaveDialog)
                       and app.screen.query_one("#save-path", Input).value == str(tmp_path / "blocker" / "out.json"))
        assert any(n.title == "Save failed" for n in app._notifications)
        app.screen.query_one("#save-path", Input).value = "new/deeper/out.json"
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        assert "does not exist" in app.screen.question
        await pilot.press("y")
        await wait_for(pilot, lambda: (tmp_path / "new" / "deeper" / "out.json").is_file())
        await wait_for(pilot, lambda: isinstance(app.screen, SearchScreen))


def drawn(table: ResultsTable, line: int) -> str:
    """The text of one line of the table as drawn (line 0 is the header)."""
    return table.render_line(line).text


async def test_the_scrollbar_covers_the_whole_result_and_rows_are_built_only_when_drawn(real_bundle: Bundle) -> None:
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.screen.query_one(ResultsTable)
        names = table.names
        assert len(names) == real_bundle.store.count(IMAGES) > 10 * PAGE
        assert table.row_count == len(names) and table.virtual_size.height == len(names) + 1  # + the header
        assert table.vertical_scrollbar.window_virtual_size == len(names) + 1  # the thumb is of the whole result
        assert len(table.rows) <= 3 * PAGE  # the rows drawn, not the whole result
        table.focus()
        await pilot.press("end")
        await wait_for(pilot, lambda: table.scroll_y == table.max_scroll_y > 0)
        assert table.current_name == names[-1] and table.cursor_row == len(names) - 1
        await settle(pilot)
        assert names[-1] in drawn(table, table.scrollable_content_region.height - 1)  # above the scrollbar
        await pilot.press("home")
        await wait_for(pilot, lambda: table.scroll_y == 0)
        assert table.current_name == names[0] and names[0] in drawn(table, 1)
        await pilot.press("pagedown")
        page = table.scrollable_content_region.height - 1
        assert table.current_name == names[page]
        await pilot.press("ctrl+end")
        await wait_for(pilot, lambda: table.scroll_y == table.max_scroll_y)
        assert table.current_name == names[-1]
        await pilot.press("ctrl+home")
        await wait_for(pilot, lambda: table.scroll_y == 0)
        assert table.current_name == names[0]
        assert len(table.rows) <= 8 * PAGE


async def test_dragging_the_scrollbar_to_the_middle_shows_the_rows_there(real_bundle: Bundle) -> None:
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.screen.query_one(ResultsTable)
        names = table.names
        bar = table.vertical_scrollbar
        x = bar.region.x - table.region.x  # the scrollbar's column, in the table's coordinates
        await pilot.mouse_down(table, offset=(x, 0))  # the thumb is at the top
        await pilot.hover(table, offset=(x, table.region.height // 2))
        await pilot.mouse_up(table, offset=(x, table.region.height // 2))
        await wait_for(pilot, lambda: table.max_scroll_y * 0.3 < table.scroll_y < table.max_scroll_y * 0.7)
        await settle(pilot)
        top, lines = round(table.scroll_y), table.scrollable_content_region.height - 1
        assert [names[top + i] in drawn(table, 1 + i) for i in range(lines)] == [True] * lines
        table.scroll_to(y=len(names) // 3, animate=False, immediate=True)
        await settle(pilot)
        assert names[len(names) // 3] in drawn(table, 1) and names[len(names) // 3 + 1] in drawn(table, 2)
        table.focus()
        await pilot.press("down")  # the cursor, still on the first row, comes back into view
        assert table.current_name == names[1]


async def test_find_typed_right_after_slash_lands_in_the_find_box(real_bundle: Bundle) -> None:
    """"/frac" at speed gave its letters to the case (its f opened the full screen), and a / typed in
    the find box must stay a letter there."""
    from tui_support import burst

    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await search(pilot, "ring enhancing lesion")
        await pilot.press("enter", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, CaseScreen) and app.screen.image is not None)
        screen = app.screen
        await settle(pilot)
        burst(pilot, "slash", *"frac", "slash")
        box = screen.query_one("#find", Input)
        await wait_for(pilot, lambda: box.value == "frac/")
        await settle(pilot)
        assert app.screen is screen and not any(isinstance(s, ImageScreen) for s in app.screen_stack)
