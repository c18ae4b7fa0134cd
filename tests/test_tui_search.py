"""Pilot tests of the search screen: keywords, the authors' field query, facets, errors, saves."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from textual.widgets import Input, Select, SelectionList, Static
from tui_support import SIZE, make_app, settle, type_text, wait_for

from medpix_tui.bundle import Bundle
from medpix_tui.query import field_filter
from medpix_tui.store import CASES, IMAGES
from medpix_tui.tui.screens.dialogs import ConfirmDialog, SaveDialog
from medpix_tui.tui.screens.search import SearchScreen
from medpix_tui.tui.widgets.facets import FacetPanel
from medpix_tui.tui.widgets.results import ResultsTable
from tests.support import check_one_file_save

pytestmark = pytest.mark.asyncio


def status_text(app) -> str:
    return str(app.screen.query_one("#status", Static).render())


async def test_first_screen_lists_every_image_with_facet_counts(real_bundle: Bundle) -> None:
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, SearchScreen)
        assert app.focused is app.screen.query_one("#keywords")
        assert status_text(app).startswith(f"{real_bundle.store.count(IMAGES)} images")
        table = app.screen.query_one(ResultsTable)
        assert table.row_count > 0 and table.current_name == real_bundle.store.find(IMAGES, limit=1)[0]["image"]
        modality = app.screen.query_one("#facet-modality", SelectionList)
        prompts = [str(modality.get_option_at_index(i).prompt) for i in range(modality.option_count)]
        counts = real_bundle.store.facet_counts(IMAGES, None, ["Type"])["Type"]
        assert any(p.startswith("CT") and p.endswith(str(counts["CT"])) for p in prompts)


async def test_keywords_rank_the_table_as_the_library_does(real_bundle: Bundle) -> None:
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await type_text(pilot, "glioma")
        await settle(pilot, 0.2)
        expected = [d["image"] for _, d in real_bundle.store.keyword_search("glioma", limit=0)]
        assert app.result is not None and app.result.names == expected
        assert app.screen.query_one(ResultsTable).current_name == expected[0]
        assert status_text(app).startswith(f"{len(expected)} images")


async def test_field_query_on_cases_selects_their_images(real_bundle: Bundle) -> None:
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.screen.query_one("#fq-collection", Select).value = CASES
        await pilot.click("#fq-path")
        await type_text(pilot, "Case.Title")
        await pilot.press("enter")  # to the regex box
        await type_text(pilot, "infarct")
        await pilot.press("enter")  # keep the pair as a chip
        await settle(pilot, 0.2)
        uids = {c["U_id"] for c in real_bundle.store.find(CASES, field_filter([("Case.Title", "infarct")]))}
        expected = [d["image"] for d in real_bundle.store.find(IMAGES, {"U_id": {"$in": sorted(uids)}})]
        assert app.result is not None and app.result.names == expected
        chips = app.screen.query("#fq-chips Button")
        assert len(chips) == 1 and "Case.Title ~ infarct" in str(chips.first().label)
        await pilot.click("#fq-chips Button")  # pressing a chip removes it
        await settle(pilot, 0.2)
        assert len(app.result.names) == real_bundle.store.count(IMAGES)


async def test_a_query_error_clears_the_table_and_facets_into_an_error_state(real_bundle: Bundle) -> None:
    # the case: field Case.Title on the cases, value fract(ure
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.screen.query_one("#fq-collection", Select).value = CASES
        await pilot.click("#fq-path")
        await type_text(pilot, "Case.Title")
        await pilot.press("tab")
        await type_text(pilot, "fract")
        await wait_for(pilot, lambda: app.result is not None and app.result.request.pairs == (("Case.Title", "fract"),))
        assert app.result.images
        await type_text(pilot, "(ure")
        await wait_for(pilot, lambda: app.result is None)
        await settle(pilot)
        assert any("invalid regex" in n.message for n in app._notifications)
        assert "invalid regex" in status_text(app)
        table, empty = app.screen.query_one(ResultsTable), app.screen.query_one("#empty", Static)
        assert not table.display and table.row_count == 0 and table.current_name is None
        assert empty.display and "invalid regex" in str(empty.render()) and "Fix the query" in str(empty.render())
        modality = app.screen.query_one("#facet-modality", SelectionList)
        assert all(str(modality.get_option_at_index(i).prompt).rstrip().endswith(" 0")
                   for i in range(modality.option_count))
        await pilot.press("ctrl+s")  # nothing shown, nothing to save
        assert not isinstance(app.screen, SaveDialog)
        assert any("Nothing to save" in n.message for n in app._notifications)
        await pilot.press("ctrl+o")
        assert isinstance(app.screen, SearchScreen)
        for _ in "(ure":
            await pilot.press("backspace")
        await wait_for(pilot, lambda: app.result is not None)
        assert app.result.images and table.display and not empty.display


async def test_empty_result_shows_a_placeholder(real_bundle: Bundle) -> None:
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await type_text(pilot, "zzqqxxnothing")
        await settle(pilot, 0.2)
        assert app.result is not None and app.result.images == []
        assert app.screen.query_one("#empty").display and not app.screen.query_one(ResultsTable).display
        assert status_text(app).startswith("0 images")
        await pilot.press("ctrl+o")  # nothing to open: a warning, not a crash
        assert isinstance(app.screen, SearchScreen)


async def test_facets_filter_and_recount(real_bundle: Bundle) -> None:
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.screen.query_one("#facet-modality", SelectionList).select("MR")
        await settle(pilot, 0.1)
        assert app.result is not None and {d["Type"] for d in app.result.images} == {"MR"}
        assert len(app.result.images) == real_bundle.store.count(IMAGES, {"Type": "MR"})
        app.screen.query_one("#facet-age", SelectionList).select("80+")
        await settle(pilot, 0.1)
        assert all(int(d["Description"]["Age"]) >= 80 for d in app.result.images)
        assert app.screen.query_one(FacetPanel).selections == {"modality": frozenset({"MR"}), "age": frozenset({"80+"})}
        # a facet is counted without its own ticks, so CT still shows how many 80+ images are CT
        old = {"Description.Age": {"$regex": "^(?:[89]\\d|\\d{3,})$"}}
        ct = real_bundle.store.facet_counts(IMAGES, old, ["Type"])["Type"]["CT"]
        modality = app.screen.query_one("#facet-modality", SelectionList)
        prompt = next(str(o.prompt) for o in modality.options if o.value == "CT")
        assert ct > 0 and prompt.split()[-1] == str(ct)
        await pilot.press("ctrl+r")
        await settle(pilot, 0.2)
        assert len(app.result.images) == real_bundle.store.count(IMAGES)


async def test_narrow_terminal_hides_facets_until_asked(real_bundle: Bundle) -> None:
    app = make_app(real_bundle)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        panel = app.screen.query_one(FacetPanel)
        assert not panel.display
        await pilot.press("ctrl+b")
        assert panel.display


async def _choose_jsonl(pilot: Any, dialog: SaveDialog) -> None:
    """Pick JSONL (the second choice) in the save dialog and save under its name (a .jsonl name with
    JSON chosen is refused: it would be JSON under a JSONL name)."""
    dialog.query_one("#save-what").focus()
    await pilot.press("down", "enter")
    box = dialog.query_one("#save-path", Input)
    box.value = "medpix-images.jsonl"
    box.focus()
    await pilot.press("enter")


async def test_save_results_as_jsonl_then_parquet_and_confirm_overwrite(real_bundle: Bundle, tmp_path: Path) -> None:
    app = make_app(real_bundle, save_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await type_text(pilot, "glioma")
        await settle(pilot, 0.2)
        names = app.result.names
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, SaveDialog))
        dialog = app.screen  # choose JSONL with the radio set
        dialog.query_one("#save-what").focus()
        await pilot.press("down", "enter")
        assert dialog.query_one("#save-path", Input).value == "medpix-images.jsonl"
        dialog.query_one("#save-path", Input).focus()
        await pilot.press("enter")
        await settle(pilot)
        lines = (tmp_path / "medpix-images.jsonl").read_text().splitlines()
        assert [json.loads(line)["image"] for line in lines] == names
        assert any(n.message == f"Saved {tmp_path / 'medpix-images.jsonl'}" for n in app._notifications)

        # the same file again: asked first; "n" keeps it, "y" replaces it
        for answer, replaced in (("n", False), ("y", True)):
            (tmp_path / "medpix-images.jsonl").write_text("old\n")
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: isinstance(app.screen, SaveDialog))
            await _choose_jsonl(pilot, app.screen)
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
            await pilot.press(answer)
            await settle(pilot)
            assert ((tmp_path / "medpix-images.jsonl").read_text() != "old\n") is replaced

        # only a stale manifest is left: the prompt names the file typed and says what is left, not the
        # app's internal <file>.manifest.json (a tester read that name as a file of theirs)
        (tmp_path / "medpix-images.jsonl").unlink()
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, SaveDialog))
        await _choose_jsonl(pilot, app.screen)
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        question = app.screen.question
        assert question.startswith(f"{tmp_path / 'medpix-images.jsonl'} was saved here before"), question
        assert "its export manifest is still there" in question and ".manifest.json" not in question
        await pilot.press("y")
        await settle(pilot)
        assert (tmp_path / "medpix-images.jsonl").is_file()

        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, SaveDialog))
        app.screen.query_one("#save-path", Input).value = "sub/../out.json"
        await pilot.press("enter")
        # the "sub" folder is missing: offered to be created; "n" goes back to the dialog, Escape gives up
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog) and "does not exist" in app.screen.question)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, SaveDialog))
        assert app.screen.query_one("#save-path", Input).value.endswith("sub/../out.json")
        await pilot.press("escape")
        await settle(pilot)
        assert not (tmp_path / "out.json").exists() and not (tmp_path / "sub").exists()


async def test_save_result_images_to_a_folder_by_modality(real_bundle: Bundle, tmp_path: Path) -> None:
    app = make_app(real_bundle, save_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await type_text(pilot, "glioma")
        await settle(pilot, 0.2)
        ct = {d["image"] for d in app.result.images if d["Type"] == "CT"}
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, SaveDialog))
        app.screen.query_one("#save-what").focus()
        await pilot.press("down", "down", "down", "down", "enter")  # "CT images only"
        assert app.screen.query_one("#save-path", Input).value == "medpix-images-ct"
        app.screen.query_one("#save-path", Input).focus()
        await pilot.press("enter")
        await settle(pilot)
        saved = {p.stem for p in (tmp_path / "medpix-images-ct").rglob("*.png")}
        assert saved == ct and all(p.parent.name == "CT" for p in (tmp_path / "medpix-images-ct").rglob("*.png"))


async def test_save_results_as_parquet_keeps_documents(real_bundle: Bundle, tmp_path: Path) -> None:
    app = make_app(real_bundle, save_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.screen.query_one("#facet-sex", SelectionList).select("unknown")  # the release's "N/A"
        await settle(pilot, 0.1)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, SaveDialog))
        app.screen.query_one("#save-path", Input).value = "na.parquet"
        app.screen.query_one("#save-what").focus()
        await pilot.press("down", "down", "enter")
        app.screen.query_one("#save-path", Input).focus()
        await pilot.press("enter")
        await settle(pilot)
        table = pq.read_table(tmp_path / "na.parquet")
        assert table.column("image").to_pylist() == app.result.names


async def _save_as(pilot, what: int, name: str) -> None:
    """Ctrl+S, the ``what``-th option of the dialog, the path ``name``, Enter."""
    app = pilot.app
    await pilot.press("ctrl+s")
    await wait_for(pilot, lambda: isinstance(app.screen, SaveDialog))
    app.screen.query_one("#save-what").focus()
    await pilot.press(*["down"] * what, "enter")
    app.screen.query_one("#save-path", Input).value = name
    app.screen.query_one("#save-path", Input).focus()
    await pilot.press("enter")
    await wait_for(pilot, lambda: not isinstance(app.screen, SaveDialog))
    await settle(pilot)


async def test_saved_results_carry_a_manifest_that_reproduces_them(real_bundle: Bundle, tmp_path: Path) -> None:
    """Keywords and a facet saved as JSON, JSONL and Parquet: each file has its manifest, with the
    search as its export query, and `export --from-manifest` writes the same bytes again."""
    app = make_app(real_bundle, save_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await type_text(pilot, "glioma")
        await wait_for(pilot, lambda: app.result is not None and app.result.request.keywords == "glioma")
        app.screen.query_one("#facet-modality", SelectionList).select("MR")
        await wait_for(pilot, lambda: app.result.request.facets.get("modality") == frozenset({"MR"}))
        await settle(pilot)
        names = list(app.result.names)
        assert 0 < len(names) < real_bundle.store.count(IMAGES)
        for what, name in enumerate(("glioma-mr.json", "glioma-mr.jsonl", "glioma-mr.parquet")):
            await _save_as(pilot, what, name)
            assert any(n.message == f"Saved {tmp_path / name}" for n in app._notifications)
    assert [d["image"] for d in json.loads((tmp_path / "glioma-mr.json").read_text())] == names  # ranked order
    assert pq.read_table(tmp_path / "glioma-mr.parquet").column("image").to_pylist() == names
    again = tmp_path / "again"
    again.mkdir()
    for fmt in ("json", "jsonl", "parquet"):
        manifest = check_one_file_save(real_bundle, tmp_path / f"glioma-mr.{fmt}", again / f"glioma-mr.{fmt}")
        assert manifest["kind"] == "documents" and manifest["format"] == fmt
        assert manifest["query"] == {"collection": IMAGES, "fields": [], "filter": {"Type": {"$in": ["MR"]}},
                                     "keyword": "glioma", "sort": None, "limit": 0, "split": None, "ids": None}
        assert manifest["source"]["keywords"] == "glioma" and manifest["source"]["facets"] == {"modality": ["MR"]}
        assert manifest["counts"] == {"documents": len(names), "images": len(names),
                                      "cases": len({n.split("_")[0] for n in names}), "files": 1}


async def test_a_served_save_downloads_the_file_zipped_with_its_manifest(real_bundle: Bundle, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """In `medpix-tui serve` nothing is written on the server: the browser gets <file>.zip, file and manifest."""
    import io
    import zipfile

    from medpix_tui.export import verify_export
    from medpix_tui.web import SERVED_ENV

    monkeypatch.setenv(SERVED_ENV, "1")
    app = make_app(real_bundle, save_dir=tmp_path)
    delivered: list[tuple[bytes, str]] = []
    on_disk: list[int] = []

    def deliver(payload: Any, save_filename: str) -> None:
        # an unnamed temporary file, not bytes in memory ("all images" zips about 200 MB)
        on_disk.append(os.fstat(payload.fileno()).st_nlink)
        delivered.append((payload.read(), save_filename))

    monkeypatch.setattr(app, "deliver_binary", deliver)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await type_text(pilot, "glioma")
        await wait_for(pilot, lambda: app.result is not None and app.result.request.keywords == "glioma")
        await settle(pilot)
        names = list(app.result.names)
        await _save_as(pilot, 0, "glioma.json")
        await wait_for(pilot, lambda: bool(delivered))
    payload, name = delivered[0]
    assert name == "glioma.json.zip" and list(tmp_path.iterdir()) == [], "nothing written beside the app"
    assert on_disk == [0], "the download is a file with no name left on disk"
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        assert sorted(archive.namelist()) == ["glioma.json", "glioma.json.manifest.json"]
        archive.extractall(tmp_path / "unzipped")
    assert [d["image"] for d in json.loads((tmp_path / "unzipped" / "glioma.json").read_text())] == names
    assert verify_export(tmp_path / "unzipped" / "glioma.json") == []


async def test_similar_images_without_a_model_says_so(real_bundle: Bundle) -> None:
    modelless = Bundle(real_bundle.root, {**real_bundle.manifest, "model": None})  # as `bundle build --no-model` makes
    app = make_app(modelless)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.screen.query_one(ResultsTable).focus()
        await pilot.press("ctrl+g")
        app.screen.query_one("#keywords", Input).value = "lesion"
        await pilot.press("ctrl+n")
        messages = [n.message for n in app._notifications]
        assert sum("No model in this bundle" in m for m in messages) == 2, messages
        assert app.result is not None and not app.result.request.within


async def test_similar_images_from_the_model(real_bundle: Bundle) -> None:
    from medpix_tui.model.service import BundleModel

    app = make_app(real_bundle)  # no preloading: the first key loads the model, and says so at once
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        target = app.screen.query_one(ResultsTable).current_name
        app.screen.query_one(ResultsTable).focus()
        await pilot.press("ctrl+g")
        # progress from the first key, unless this process had the model's modules loaded and it was quicker
        assert ("Loading the model for similar images" in status_text(app)
                or (app.result is not None and bool(app.result.request.within))), status_text(app)
        await wait_for(pilot, lambda: app.result is not None and bool(app.result.request.within), timeout=60)
        await settle(pilot)
        expected = [r["image"] for r in BundleModel(real_bundle).similar(target, k=50)["images"]]
        assert app.result.names == expected
        assert f"similar to {target}" in status_text(app)
        await pilot.press("ctrl+r")
        await settle(pilot, 0.2)
        assert not app.result.request.within


async def test_search_by_meaning_ranks_by_the_text_tower(real_bundle: Bundle) -> None:
    from medpix_tui.model.service import BundleModel

    app = make_app(real_bundle, preload_model=True)  # as the CLI runs it: the model loads behind the first results
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)  # every worker done, the model's load too
        assert app.screen._model is not None
        await pilot.press("ctrl+n")  # an empty search box: nothing to embed
        assert any("Type what to look for" in n.message for n in app._notifications)
        await type_text(pilot, "ring enhancing lesion")
        await settle(pilot, 0.2)
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: app.result is not None and bool(app.result.request.within), timeout=120)
        await settle(pilot)
        expected = [r["image"] for r in BundleModel(real_bundle).search("ring enhancing lesion", k=50)["images"]]
        assert app.result.names == expected and len(expected) == 50
        assert app.screen.query_one("#keywords", Input).value == "", "the words became the ranking, not a filter"
        assert 'meaning of "ring enhancing lesion"' in status_text(app)
        assert not any("no caption or case" in n.message for n in app._notifications)
        app.screen.query_one("#keywords", Input).value = "xqzzv"  # a word the bundle lacks is ranked, and said to be
        await settle(pilot, 0.2)
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: any("holds xqzzv" in n.message for n in app._notifications), timeout=120)


@pytest.mark.parametrize("text,width,shown", [
    ("MPX1009_synpic46283", 30, "MPX1009_synpic46283"),
    ("Glioblastoma multiforme", 10, "Glioblast…"),
    ("日本語のテキスト", 7, "日本語…"),
    ("abc", 1, "a"),
])
async def test_result_cells_are_one_line_cut_with_an_ellipsis(text, width, shown) -> None:
    from rich.console import Console

    from medpix_tui.tui.widgets.results import Cell

    console = Console(width=80)
    lines = console.render_lines(Cell(text), console.options.update_width(width))
    assert len(lines) == 1 and "".join(s.text for s in lines[0]).rstrip() == shown
    assert Console().measure(Cell(text)).maximum == len(text) + sum(ord(c) > 0x3000 for c in text)


async def test_a_result_describes_itself_briefly(real_bundle: Bundle) -> None:
    """Textual's @work reprs a worker's arguments on the event loop: 2050 documents took milliseconds."""
    from medpix_tui.session import SearchRequest, run_search

    text = repr(run_search(real_bundle.store, SearchRequest()))
    assert len(text) < 300 and "2050 images" in text


async def test_a_bad_regex_is_not_kept_as_a_chip(real_bundle: Bundle) -> None:
    """Enter on a bad regex kept it as a chip, still shown (and searched) after the error."""
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.click("#fq-path")
        await type_text(pilot, "Description.Caption")
        await pilot.press("enter")  # to the regex box
        await type_text(pilot, "fract(ure")
        await pilot.press("enter")
        await wait_for(pilot, lambda: any("invalid regex" in n.message and n.title == "Field query"
                                          for n in app._notifications))
        await settle(pilot)
        assert len(app.screen.query("#fq-chips Button")) == 0, "no chip for a regex that cannot run"
        assert app.screen.query_one("#fq-regex", Input).value == "fract(ure", "left to be fixed"
        for _ in "(ure":
            await pilot.press("backspace")
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(app.screen.query("#fq-chips Button")) == 1)
        chips = app.screen.query("#fq-chips Button")
        assert len(chips) == 1 and "Description.Caption ~ fract" in str(chips.first().label)


@pytest.mark.parametrize("typed", ["Description.Caption=", "=glioma"])
async def test_a_field_pair_with_an_empty_side_is_said(real_bundle: Bundle, typed: str) -> None:
    """Enter on ``Caption=`` or ``=glioma`` in the field box went by without a word."""
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.click("#fq-path")
        await type_text(pilot, typed)
        await pilot.press("enter")
        await wait_for(pilot, lambda: any("FIELD=REGEX" in n.message for n in app._notifications))
        assert len(app.screen.query("#fq-chips Button")) == 0


@pytest.mark.parametrize("typed", ["*", "-", "\\", "-*", "**", "OR", "(["])
async def test_a_lone_sign_in_the_keywords_says_it_is_no_keyword(real_bundle: Bundle, typed: str) -> None:
    """``*``, ``-`` or ``\\`` alone listed every image with no word why; ``-*``, ``**`` or ``OR``
    gave a "Query error" at each keystroke."""
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await type_text(pilot, typed)
        await wait_for(pilot, lambda: app.result is not None and app.result.request.keywords == typed)
        await settle(pilot)
        assert f"{typed} alone is no keyword: type letters or digits" in status_text(app)
        assert "Query error" not in status_text(app) and not app.result.ranked and app.result.images
        await type_text(pilot, "g")  # ... and a letter is still the "from 2 letters" hint, not an error
        await wait_for(pilot, lambda: "alone is no keyword" not in status_text(app))  # no search runs for it
        await settle(pilot)
        assert "alone is no keyword" not in status_text(app)


@pytest.mark.parametrize(("typed", "hint"), [("-glioma", "-glioma only excludes: add a word to look for"),
                                             ("glioma 🧠", "not searched: 🧠")])
async def test_keywords_that_search_nothing_are_named_in_the_status(real_bundle: Bundle, typed: str,
                                                                    hint: str) -> None:
    """``-glioma`` alone was a "Query error" while typing; an emoji word was dropped without a word."""
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await type_text(pilot, typed)
        await wait_for(pilot, lambda: app.result is not None and app.result.request.keywords == typed)
        await settle(pilot)
        assert hint in status_text(app) and "Query error" not in status_text(app)


async def test_keys_typed_right_after_ctrl_f_land_in_the_search_box(real_bundle: Bundle) -> None:
    """"ctrl+f glioma" at speed gave its letters to the results table (its c copies, q would quit):
    Widget.focus waited for the message queue, behind the keys already there."""
    from tui_support import burst

    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.screen.query_one(ResultsTable).focus()
        await settle(pilot)
        burst(pilot, "ctrl+f", *"glioma")
        await wait_for(pilot, lambda: app.screen.query_one("#keywords", Input).value == "glioma")
        app.screen.query_one("#fq-path", Input).focus()  # from the field query's box too
        await settle(pilot)
        burst(pilot, "ctrl+f", "space", *"lesion")
        # the box selects its text when focused (Textual's select_on_focus): what is typed replaces it
        await wait_for(pilot, lambda: app.screen.query_one("#keywords", Input).value == " lesion")
        assert app.screen.query_one("#fq-path", Input).value == ""
