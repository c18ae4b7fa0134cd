"""The first page kept between starts: drawn before the store opens, replaced by the store's answer."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from textual.widgets import Static
from tui_support import SIZE, settle, wait_for

from medpix_tui.bundle import MANIFEST_SUM, Bundle, open_bundle
from medpix_tui.session import SearchRequest, SearchResult
from medpix_tui.store import IMAGES
from medpix_tui.tui.app import MedpixApp
from medpix_tui.tui.first_page import (
    KEEP,
    ROWS,
    default_dir,
    page_path,
    prune_pages,
    read_first_page,
    write_first_page,
)
from medpix_tui.tui.screens.search import SearchScreen
from medpix_tui.tui.widgets.results import ResultsTable


def rows(table: ResultsTable, n: int) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(n)]


def status(app: MedpixApp) -> str:
    return str(app.screen.query_one("#status", Static).render())


class Recording(MedpixApp):
    """Starts with the store locked; records the screen when the kept page is drawn, acts, then unlocks."""

    seen: dict | None = None
    #: Every notice, as given: a notice on screen times out, and a loaded host can settle later than that.
    notices: list[str]

    def notify(self, message: str, *args, **kwargs) -> None:
        self.notices.append(message)
        super().notify(message, *args, **kwargs)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.notices = []
        self.store_lock.acquire()  # no search can answer before the page is drawn
        self._unlock = threading.Timer(30, self.store_lock.release)  # no hang when the page never comes
        self._unlock.start()

    def on_search_screen_first_page_shown(self, _: SearchScreen.FirstPageShown) -> None:
        table = self.screen.query_one(ResultsTable)
        self.seen = {"answered": self.result is not None, "rows": rows(table, 30),
                     "status": status(self), "focused": self.focused}
        self.screen.action_open_case()  # needs the whole result: refused while the store opens
        table.move_cursor(row=7, animate=False)
        self._unlock.cancel()
        self.store_lock.release()


@pytest.mark.asyncio
async def test_a_start_keeps_the_first_page_and_the_next_draws_it_before_the_store_opens(
        real_bundle_path: Path, tmp_path: Path) -> None:
    pages = tmp_path / "pages"
    first = MedpixApp(open_bundle(real_bundle_path), image_renderer="halfcell", history_path=None, first_page_dir=pages)
    kept = page_path(pages, first.bundle)
    assert kept is not None
    async with first.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert first.first_page is None
        expected_rows = rows(first.screen.query_one(ResultsTable), 30)
        expected_status = status(first)
        # kept by the facet worker once the titles are in: on a loaded host after settle's last look
        await wait_for(pilot, kept.is_file)

    second = Recording(open_bundle(real_bundle_path), image_renderer="halfcell", history_path=None,
                       first_page_dir=pages)
    async with second.run_test(size=SIZE) as pilot:
        await settle(pilot)
        seen = second.seen
        assert seen is not None, "the kept page was not drawn"
        assert not seen["answered"]
        assert seen["rows"] == expected_rows and seen["status"] == expected_status
        assert seen["focused"] is second.screen.query_one("#keywords")
        assert any("still opening" in n for n in second.notices)
        # the store's answer replaced the page row for row, and the cursor stayed where it was moved
        table = second.screen.query_one(ResultsTable)
        assert second.result is not None and len(second.result.images) == second.bundle.store.count(IMAGES)
        assert rows(table, 30) == expected_rows and table.cursor_row == 7
        assert status(second) == expected_status


@pytest.mark.asyncio
async def test_without_a_folder_nothing_is_kept_or_read(real_bundle: Bundle, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDPIX_CACHE", str(tmp_path))
    app = MedpixApp(real_bundle, image_renderer="halfcell", history_path=None)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.result is not None
    assert app.first_page is None and not any(tmp_path.iterdir())


def fake_bundle(root: Path, digest: str | None = "ab" * 32) -> Bundle:
    root.mkdir(parents=True)
    if digest is not None:
        (root / MANIFEST_SUM).write_text(f"{digest}  manifest.json\n")
    return Bundle(root, {})


def fake_result(n: int) -> SearchResult:
    images = [{"image": f"MPX{i:04d}_synpic{i}", "U_id": f"MPX{i // 3:04d}", "Type": "CT", "Location": "Head",
               "Description": {"Plane": "Axial", "Caption": "long text not kept"}, "Extra": 1} for i in range(n)]
    return SearchResult(SearchRequest(), images, (), False)


def test_page_round_trip_keeps_the_shown_fields_and_the_totals(tmp_path: Path) -> None:
    bundle = fake_bundle(tmp_path / "b")
    result = fake_result(ROWS + 30)
    titles = {d["U_id"]: f"title of {d['U_id']}" for d in result.images}
    path = write_first_page(tmp_path / "pages", bundle, result, titles)
    assert path == tmp_path / "pages" / f"{'ab' * 32}.json"
    page = read_first_page(tmp_path / "pages", bundle)
    assert page is not None
    assert (page.image_count, page.case_count) == (ROWS + 30, result.case_count)
    assert len(page.images) == ROWS
    assert page.images[0] == {"image": "MPX0000_synpic0", "U_id": "MPX0000", "Type": "CT", "Location": "Head",
                              "Description": {"Plane": "Axial"}}
    assert set(page.titles) == {d["U_id"] for d in page.images}


def test_a_changed_bundle_does_not_read_the_old_page(tmp_path: Path) -> None:
    write_first_page(tmp_path / "pages", fake_bundle(tmp_path / "a"), fake_result(5), {})
    assert read_first_page(tmp_path / "pages", fake_bundle(tmp_path / "b", "cd" * 32)) is None


NOT_A_PAGE = ["", "{", "[]", '{"format": 99}', '{"format": 1}',
              '{"format": 1, "images": [1], "titles": {}, "image_count": 1, "case_count": 1}']


@pytest.mark.parametrize("content", NOT_A_PAGE)
def test_an_unreadable_page_is_ignored(tmp_path: Path, content: str) -> None:
    bundle = fake_bundle(tmp_path / "b")
    path = page_path(tmp_path, bundle)
    assert path is not None
    path.write_text(content)
    assert read_first_page(tmp_path, bundle) is None


def test_no_digest_or_no_writable_folder_means_no_page(tmp_path: Path) -> None:
    assert write_first_page(tmp_path / "pages", fake_bundle(tmp_path / "a", None), fake_result(3), {}) is None
    assert write_first_page(tmp_path / "pages", fake_bundle(tmp_path / "b", "not a digest"), fake_result(3), {}) is None
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert write_first_page(blocker / "pages", fake_bundle(tmp_path / "c"), fake_result(3), {}) is None
    assert not (tmp_path / "pages").exists()


def test_only_the_pages_of_the_bundles_used_last_are_kept(tmp_path: Path) -> None:
    pages = tmp_path / "pages"
    bundles = [fake_bundle(tmp_path / f"b{i}", f"{i:064x}") for i in range(KEEP + 3)]
    for i, bundle in enumerate(bundles):
        path = write_first_page(pages, bundle, fake_result(2), {})
        os.utime(path, (1000 + i, 1000 + i))  # written one second apart, oldest first
    assert read_first_page(pages, bundles[0]) is None  # pruned by the later writes
    assert read_first_page(pages, bundles[3]) is not None  # the oldest kept; reading makes it the newest
    (pages / "notes.txt").write_text("not a page")
    removed = prune_pages(pages, keep=2)
    assert sorted(p.name for p in pages.iterdir()) == sorted(
        ["notes.txt", page_path(pages, bundles[3]).name, page_path(pages, bundles[-1]).name])
    assert len(removed) == KEEP - 2
    assert prune_pages(tmp_path / "missing") == []


def test_default_folder_is_in_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDPIX_CACHE", str(tmp_path))
    assert default_dir() == tmp_path / "first-page"
