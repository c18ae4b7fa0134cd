"""Pilot tests of reading a case: open from the results, step, full screen, save, broken images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import Input, Static, TabbedContent
from tui_support import SIZE, make_app, settle, wait_for

from medpix_tui.bundle import Bundle
from medpix_tui.tui.screens.case import CaseScreen
from medpix_tui.tui.screens.dialogs import SaveDialog
from medpix_tui.tui.screens.image import ImageScreen
from medpix_tui.tui.screens.search import SearchScreen
from medpix_tui.tui.widgets.doc_pane import DocPane
from medpix_tui.tui.widgets.image_strip import ImageStrip
from medpix_tui.tui.widgets.image_view import ImageView
from tests.support import check_one_file_save

pytestmark = pytest.mark.asyncio


def doc_text(pane: DocPane) -> str:
    return "\n".join(str(w.render()) for w in pane.query(Static) if w.display)


async def open_first(pilot, keywords: str) -> CaseScreen:
    app = pilot.app
    await settle(pilot)
    app.screen.query_one("#keywords", Input).value = keywords
    await settle(pilot, 0.05)
    await pilot.press("enter", "enter")  # to the table, then open the highlighted result
    await wait_for(pilot, lambda: isinstance(app.screen, CaseScreen) and app.screen.image is not None)
    await settle(pilot)
    return app.screen


async def test_open_step_and_read_a_case(real_bundle: Bundle) -> None:
    store = real_bundle.store
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_first(pilot, "glioma")
        names = app.result.names
        first = store.get_image(names[0])
        case = store.get_case(first["U_id"])
        assert screen.image == first and screen.case == case
        assert screen.title.startswith(f"{first['U_id']} · result 1 of {len(names)}")
        legend = str(screen.query_one("#legend", Static).render())
        assert first["Description"]["Caption"].strip()[:30] in legend and first["Description"]["Plane"] in legend
        case_text = doc_text(screen.query_one("#case-doc", DocPane))
        for heading in ("History", "Findings", "Differential Diagnosis", "Case Diagnosis"):
            if case["Case"].get(heading):
                assert heading in case_text
        assert case["Case"]["Case Diagnosis"].strip()[:40] in case_text
        view = screen.query_one("#case-image", ImageView)
        await wait_for(pilot, lambda: view.path == real_bundle.image_path(first["image"])
                       and not view.has_class("-empty"))
        assert not view.has_class("-failed")

        strip = screen.query_one(ImageStrip)
        assert strip.names == [d["image"] for d in store.images_of_case(first["U_id"])]

        await pilot.press("n")
        await wait_for(pilot, lambda: screen.image is not None and screen.image["image"] == names[1])
        assert screen.index == 1 and "result 2 of" in screen.title
        await pilot.press("p")
        await wait_for(pilot, lambda: screen.image is not None and screen.image["image"] == names[0])
        await pilot.press("p")  # already the first: a warning, nothing moves
        assert screen.index == 0

        if len(strip.names) > 1:
            position = strip.names.index(names[0])
            await pilot.press("right_square_bracket")
            assert screen.image["image"] == strip.names[(position + 1) % len(strip.names)]
            assert screen.index == 0  # stepping images does not move through the results

        await pilot.press("t")
        assert screen.query_one(TabbedContent).active == "pane-topic"
        topic_text = doc_text(screen.query_one("#topic-doc", DocPane))
        assert "Disease Discussion" in topic_text and case["Topic"]["ACR Code"] in topic_text

        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(app.screen, ImageScreen))
        full = app.screen
        await wait_for(pilot, lambda: not full.query_one(ImageView).has_class("-empty"))
        await pilot.press("right")
        await pilot.press("escape")
        assert app.screen is screen
        await pilot.press("escape")
        assert isinstance(app.screen, SearchScreen)


async def test_save_case_topic_and_image_document(real_bundle: Bundle, tmp_path: Path) -> None:
    store = real_bundle.store
    app = make_app(real_bundle, save_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_first(pilot, "fracture")
        uid = screen.image["U_id"]
        for downs, name, expected in ((0, f"{screen.image['image']}.json", store.get_image(screen.image["image"])),
                                      (1, f"{uid}.json", store.get_case(uid)),
                                      (2, f"{uid}-topic.json", {"U_id": uid, "Topic": store.get_case(uid)["Topic"]})):
            await pilot.press("s")
            await wait_for(pilot, lambda: isinstance(app.screen, SaveDialog))
            app.screen.query_one("#save-what").focus()
            await pilot.press(*["down"] * downs, "enter")
            assert app.screen.query_one("#save-path", Input).value == name
            app.screen.query_one("#save-path", Input).focus()
            await pilot.press("enter")
            await settle(pilot)
            assert json.loads((tmp_path / name).read_text()) == expected
            assert any(n.message == f"Saved {tmp_path / name}" for n in app._notifications)
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, SaveDialog))
        await pilot.press("escape")  # cancelled: back to the case, nothing written
        assert app.screen is screen and len(list(tmp_path.iterdir())) == 6  # 3 files, 3 manifests
    image = screen.image["image"]
    again = tmp_path / "again"
    again.mkdir()
    for name, collection, ident, shape in ((f"{image}.json", "Image_Descriptions", image, "document"),
                                           (f"{uid}.json", "Clinical_Reports", uid, "document"),
                                           (f"{uid}-topic.json", "Clinical_Reports", uid, "topic")):
        manifest = check_one_file_save(real_bundle, tmp_path / name, again / name)
        assert manifest["kind"] == "documents" and manifest["format"] == "json"
        assert manifest["query"]["collection"] == collection and manifest["query"]["ids"] == [ident]
        assert manifest["options"] == {"shape": shape} and manifest["counts"]["documents"] == 1
        assert manifest["source"] == {"screen": "case", "case": uid, "image": image}


async def test_missing_and_corrupt_images_become_placeholders(real_bundle: Bundle, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    paths = {"missing": tmp_path / "nowhere.png", "corrupt": corrupt}
    mode = {"now": "missing"}
    monkeypatch.setattr(real_bundle, "image_path", lambda name: paths[mode["now"]])
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_first(pilot, "cyst")
        view = screen.query_one("#case-image", ImageView)
        await wait_for(pilot, lambda: view.has_class("-failed"))
        assert "Image file missing" in str(view.query_one("#placeholder", Static).render())
        mode["now"] = "corrupt"
        await pilot.press("n")
        await wait_for(pilot, lambda: "Cannot read" in str(view.query_one("#placeholder", Static).render()))
        await pilot.press("f")  # full screen of a broken image: the placeholder again
        await wait_for(pilot, lambda: isinstance(app.screen, ImageScreen)
                       and app.screen.query_one(ImageView).has_class("-failed"))


async def test_auto_renderer_without_a_graphics_terminal(real_bundle: Bundle) -> None:
    """Under pytest there is no terminal: textual-image falls back to text, and a case still opens."""
    app = make_app(real_bundle)
    app.image_renderer = "auto"
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_first(pilot, "pneumonia")
        view = screen.query_one("#case-image", ImageView)
        await wait_for(pilot, lambda: not view.has_class("-empty"))
        assert not view.has_class("-failed")


async def test_case_screen_fits_80x24(real_bundle: Bundle) -> None:
    app = make_app(real_bundle)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_first(pilot, "hemorrhage")
        left = screen.query_one("#case-left")
        assert left.region.width >= 30 and screen.query_one("#case-doc").region.width >= 40
        assert screen.query_one("#case-image").region.height >= 6


async def test_a_closed_case_leaves_no_widgets_behind(real_bundle: Bundle) -> None:
    """A dismissed case's header and the results footer's old keys are freed (Textual issue 6666).

    Before, the app's title watchers kept every case's header and the results screen's footer
    kept every key it had shown: about 10,000 objects a case, which made Python's full
    collections (and so case open's tail) slower with every case read. The first case's
    widgets are checked after a second case was read (Textual may hold the last screen a while).
    """
    import gc
    import weakref

    from textual.widgets._footer import FooterKey

    from medpix_tui.tui.widgets.header import SafeHeader

    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        search = app.screen
        old_keys = []
        header = None
        for _ in range(2):
            screen = await open_first(pilot, "glioma") if header is None else None
            if screen is None:
                await pilot.press("enter")
                await wait_for(pilot, lambda: isinstance(app.screen, CaseScreen) and app.screen.image is not None)
                await settle(pilot)
                screen = app.screen
            if header is None:
                header = weakref.ref(screen.query_one(SafeHeader))
                old_keys = [weakref.ref(k) for k in search.query(FooterKey)]
            del screen
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is search)
            await settle(pilot)
        assert old_keys and header is not None
        await wait_for(pilot, lambda: all(k() is None or not k().is_attached for k in old_keys))
        gc.collect()
        assert header() is None, "the first case's header is still alive"
        assert all(k() is None for k in old_keys), "the footer's removed keys are still alive"


async def test_the_full_screen_image_stays_chosen_back_in_the_case(real_bundle: Bundle) -> None:
    """Esc from the full screen returns to the case showing the image stepped to there (it went back to the first)."""
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_first(pilot, "glioma")
        strip = screen.query_one(ImageStrip)
        assert len(strip.names) > 2, "a case with several images"
        start = strip.names.index(screen.image["image"])
        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(app.screen, ImageScreen))
        await pilot.press("right", "right")
        full = app.screen
        shown = full.images[full.index]["image"]
        assert shown == strip.names[(start + 2) % len(strip.names)]
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen)
        assert screen.image is not None and screen.image["image"] == shown
        view = screen.query_one("#case-image", ImageView)
        assert view.path == real_bundle.image_path(shown)
        await pilot.press("right_square_bracket")  # the case's own stepping goes on from there
        assert screen.image["image"] == strip.names[(start + 3) % len(strip.names)]
