"""The harvest against a local fixture site: failures, resume, interrupts, curation, atomic output."""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scraper_support import FixtureImage, FixtureSite, Scripted, make_case, render_page

from medpix_tui.errors import InputError, OutputExistsError
from medpix_tui.source import CASE_KEYS, IMAGE_KEYS, load_source
from tools.scraper.cache import ResponseCache
from tools.scraper.client import Fetcher
from tools.scraper.curation import REVIEW_FILE, Curator
from tools.scraper.harvest import NothingHarvestedError, Report, run
from tools.scraper.medpix import CASE_FIELDS, TOPIC_FIELDS


@pytest.fixture
def site() -> Iterator[FixtureSite]:
    with FixtureSite() as s:
        yield s


def _fetcher(tmp_path: Path, **kw: object) -> Fetcher:
    options = {"rate": 0, "retries": 2, "backoff": 0.01, "timeout": 0.5, **kw}
    return Fetcher(ResponseCache(tmp_path / "cache"), **options)  # type: ignore[arg-type]


def _ids(*numbers: int) -> list[str]:
    return [f"MPX9{n:03d}" for n in numbers]


def _written(out: Path) -> tuple[list[dict], list[dict]]:
    data = load_source(out)
    return data.cases, data.images


def test_every_failure_is_reported_once_and_the_output_stays_valid(
        site: FixtureSite, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tools.scraper")
    cases = {n: site.add_case(make_case(n, n_ct=2 if n in (9, 10) else 1)) for n in range(1, 13)}
    del site.pages[cases[3].page_id]                                           # 404
    site.script(f"/case?id={cases[4].page_id}", Scripted(500))                   # 500 then success
    slow = site.image_path(cases[5].images[0])
    site.script(slow, Scripted(body=site.files[slow], content_type="image/png", delay=1.0))  # timeout, then fine
    site.pages[cases[6].page_id] = "<html><body><div><p>Lorem <b>ipsum</div></p"  # malformed, nothing usable
    cases[7].images[0].fields = {"Modality": None}                               # missing field
    site.pages[cases[7].page_id] = render_page(cases[7])
    site.records["MPX9008"].append(dict(site.records["MPX9008"][0]))             # duplicated id
    site.files[site.image_path(cases[9].images[1])] = b"<html>Rate limited</html>"  # non-image body
    montage, drawing = cases[10].images[1], cases[10].images[2]
    montage.modality, drawing.modality, drawing.plane = "CT - Montage", "Drawing", "Drawing"
    site.pages[cases[10].page_id] = render_page(cases[10])
    cases[11].topic = {}                                                          # no topic
    site.pages[cases[11].page_id] = render_page(cases[11])
    stuck = site.image_path(cases[12].images[1])
    site.script(stuck, *[Scripted(delay=1.0)] * 3)                               # timeout, every time

    report = run(tmp_path / "out", _fetcher(tmp_path), ids=_ids(*range(1, 13), 999), base=site.url,
                 medpix_base=site.url)

    written, images = _written(tmp_path / "out")
    assert [c["U_id"] for c in written] == _ids(1, 2, 4, 5, 7, 8, 9, 10, 12)
    failed = dict(report.failed)
    assert failed.keys() == {"MPX9003", "MPX9006", cases[7].images[0].name, cases[9].images[1].name, "MPX9011",
                             cases[12].images[1].name, "MPX9999"}
    assert "case?id=00000003-fixture-case: HTTP 404 (not retried)" in failed["MPX9003"]
    assert "no MedPix case sections found" in failed["MPX9006"]
    assert failed[cases[7].images[0].name] == "missing field Modality on its case page"
    assert "not an image" in failed[cases[9].images[1].name]
    assert failed["MPX9011"].startswith("case lacks field Topic.Title (image.json: HTTP 404")
    assert "timed out after 0.5s, gave up after 3 attempts" in failed[cases[12].images[1].name]
    assert failed["MPX9999"] == "Open-i returned no MedPix image for it; REST encounter: HTTP 404 (not retried)"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == len(report.failed) and all("\n" not in e for e in errors)
    warnings = " | ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "HTTP 500; retry 1/2" in warnings and "timed out after 0.5s; retry 1/2" in warnings
    assert "duplicate image id MPX9008_synpic00800" in warnings
    assert [i["image"] for i in images if i["U_id"] == "MPX9008"] == [cases[8].images[0].name, cases[8].images[1].name]
    assert dict(report.skipped) == {montage.name: "curation: montage", drawing.name: "curation: not-ct-mr,drawing"}
    with open(tmp_path / "out" / REVIEW_FILE, newline="") as f:
        review = {r["image"]: r for r in csv.DictReader(f)}
    assert {k: (r["decision"], r["reasons"]) for k, r in review.items()} == {
        montage.name: ("drop", "montage"), drawing.name: ("drop", "not-ct-mr;drawing")}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert "failed: 7" in report.lines(_fetcher(tmp_path).stats, tmp_path / "out")


def test_documents_have_the_release_schema(site: FixtureSite, tmp_path: Path, source_dir: Path) -> None:
    site.add_case(make_case(5, n_ct=2, n_mr=2))
    run(tmp_path / "out", _fetcher(tmp_path), ids=_ids(5), base=site.url, medpix_base=site.url)
    cases, images = _written(tmp_path / "out")
    case = cases[0]
    assert tuple(case) == CASE_KEYS and list(case["Case"]) == [k for k in CASE_FIELDS if k in case["Case"]]
    assert list(case["Topic"]) == [k for k in TOPIC_FIELDS if k in case["Topic"]]
    assert case["TAC"] == [i["image"] for i in images if i["Type"] == "CT"] and len(case["MRI"]) == 2
    for doc in images:
        assert tuple(doc) == IMAGE_KEYS
        assert list(doc["Description"]) == ["ACR Codes", "Age", "Caption", "Figure Part", "Modality", "Plane", "Sex"]
        assert doc["Description"]["Sex"] in ("male", "female", "N/A") and doc["Description"]["Age"].isdigit()
        assert doc["Location Category"] == "Head" and doc["Location"] == "Brain and Neuro"
    raw = (tmp_path / "out" / "Descriptions.json").read_text()
    assert raw == json.dumps(images, indent=4)  # laid out like the release's files
    real_cases = json.loads((source_dir / "Case_topic.json").read_text())
    real_case, real_image = real_cases[0], json.loads((source_dir / "Descriptions.json").read_text())[0]
    assert tuple(real_case) == tuple(case) and tuple(real_image) == tuple(images[0])
    assert list(real_image["Description"]) == list(images[0]["Description"])
    assert set(case["Case"]) <= {k for c in real_cases for k in c["Case"]}
    assert {type(v) for v in real_image["Description"].values()} >= {
        type(v) for v in images[0]["Description"].values()}


def test_a_resumed_run_issues_no_request(site: FixtureSite, tmp_path: Path) -> None:
    for n in range(1, 6):
        site.add_case(make_case(n))
    first = _fetcher(tmp_path)
    run(tmp_path / "a", first, ids=_ids(*range(1, 6)), base=site.url, medpix_base=site.url)
    served = site.count()
    again = _fetcher(tmp_path)
    run(tmp_path / "b", again, ids=_ids(*range(1, 6)), base=site.url, medpix_base=site.url)
    # per case: Open-i search, REST image.json and encounter.json (404s, remembered), the page, 2 images
    assert site.count() == served == first.stats.requests == 30
    assert again.stats.requests == 0 and again.stats.cached == 30
    for name in ("Case_topic.json", "Descriptions.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_an_interrupted_run_leaves_nothing_and_resumes(site: FixtureSite, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(1, 5):
        site.add_case(make_case(n))
    fetcher = _fetcher(tmp_path)
    real_get = fetcher.session.get

    def get_then_interrupt(url: str, **kw: object):
        if fetcher.stats.requests > 6:
            raise KeyboardInterrupt
        return real_get(url, **kw)

    monkeypatch.setattr(fetcher.session, "get", get_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "out", fetcher, ids=_ids(1, 2, 3, 4), base=site.url, medpix_base=site.url)
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
    resumed = _fetcher(tmp_path)
    run(tmp_path / "out", resumed, ids=_ids(1, 2, 3, 4), base=site.url, medpix_base=site.url)
    assert resumed.stats.cached == 6 and resumed.stats.requests == 24 - 6
    assert len(_written(tmp_path / "out")[0]) == 4


def test_unusable_content_is_fetched_again_next_time(site: FixtureSite, tmp_path: Path) -> None:
    case = site.add_case(make_case(1))
    good = site.files[site.image_path(case.images[1])]
    site.files[site.image_path(case.images[1])] = b"<html>maintenance</html>"
    report = run(tmp_path / "a", _fetcher(tmp_path), ids=_ids(1), base=site.url, medpix_base=site.url)
    assert len(report.failed) == 1 and report.images == 1
    site.files[site.image_path(case.images[1])] = good
    again = _fetcher(tmp_path)
    report = run(tmp_path / "b", again, ids=_ids(1), base=site.url, medpix_base=site.url)
    assert again.stats.requests == 1 and report.images == 2 and not report.failed


def test_existing_output_needs_force(site: FixtureSite, tmp_path: Path) -> None:
    site.add_case(make_case(1))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    with pytest.raises(OutputExistsError, match="pass --force"):
        run(tmp_path / "out", _fetcher(tmp_path), ids=_ids(1), base=site.url, medpix_base=site.url)
    assert site.count() == 0
    with pytest.raises(InputError, match="not a folder this tool wrote"):
        run(tmp_path / "out", _fetcher(tmp_path), ids=_ids(1), base=site.url, force=True)
    assert (tmp_path / "out" / "old.txt").read_text() == "old" and site.count() == 0
    run(tmp_path / "new", _fetcher(tmp_path), ids=_ids(1), base=site.url, medpix_base=site.url)
    site.add_case(make_case(2))
    run(tmp_path / "new", _fetcher(tmp_path), ids=_ids(1, 2), base=site.url, force=True)  # replaces its own output
    assert len(_written(tmp_path / "new")[0]) == 2


def test_nothing_harvested_writes_nothing(site: FixtureSite, tmp_path: Path) -> None:
    report = Report()
    with pytest.raises(NothingHarvestedError, match="nothing harvested: 1 failure"):
        run(tmp_path / "out", _fetcher(tmp_path), ids=_ids(5), base=site.url, medpix_base=site.url, report=report)
    assert not (tmp_path / "out").exists() and report.failed == [
        ("MPX9005", "Open-i returned no MedPix image for it; REST encounter: HTTP 404 (not retried)")]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_overview_input_gives_the_same_source_without_searching(site: FixtureSite, tmp_path: Path) -> None:
    for n in (1, 2, 3):
        site.add_case(make_case(n))
    run(tmp_path / "by-id", _fetcher(tmp_path), ids=_ids(1, 2, 3), base=site.url, medpix_base=site.url)
    searches = site.count("/api/search")
    overview = site.overview_csv(tmp_path / "images_overview.csv")
    fetcher = Fetcher(ResponseCache(tmp_path / "other-cache"), rate=0)
    run(tmp_path / "by-overview", fetcher, overview=overview, medpix_base=site.url)
    assert site.count("/api/search") == searches
    by_id, by_overview = _written(tmp_path / "by-id"), _written(tmp_path / "by-overview")
    assert by_id[1] == by_overview[1]
    # The Open-i abstract only fills gaps; the page gives every field here, so the cases match too.
    assert by_id[0] == by_overview[0]
    rows = list(csv.DictReader(open(tmp_path / "by-overview" / "images_overview.csv")))
    assert [r["ID_Image"] for r in rows] == [i["image"] for i in by_overview[1]]


def test_images_described_on_several_pages(site: FixtureSite, tmp_path: Path) -> None:
    case = make_case(2, n_ct=2, n_mr=1)
    case.extra_pages = {"second-page": [case.images[2].name]}
    site.add_case(case)
    run(tmp_path / "out", _fetcher(tmp_path), ids=_ids(2), base=site.url, medpix_base=site.url)
    _, images = _written(tmp_path / "out")
    assert [i["Description"]["Modality"] for i in images] == [i.modality for i in case.images]
    assert site.count("/case?id=second-page") == 1


def test_open_i_fills_gaps_on_the_page(site: FixtureSite, tmp_path: Path) -> None:
    case = make_case(4, style="inline")
    site.add_case(case)
    stripped = make_case(4, style="inline")
    del stripped.case["History"]
    stripped.images[0].caption = ""
    site.pages[case.page_id] = render_page(stripped)
    run(tmp_path / "out", _fetcher(tmp_path), ids=_ids(4), base=site.url, medpix_base=site.url)
    cases, images = _written(tmp_path / "out")
    assert cases[0]["Case"]["History"] == case.case["History"]   # from the Open-i abstract
    assert list(cases[0]["Case"])[:2] == ["Title", "History"]
    assert images[0]["Description"]["Caption"] == case.images[0].caption  # from the Open-i caption


def test_overrides_keep_a_flagged_image(site: FixtureSite, tmp_path: Path) -> None:
    case = make_case(1, n_ct=2)
    case.images[1].caption = "Arrows mark the lesion."
    site.add_case(case)
    run(tmp_path / "a", _fetcher(tmp_path), ids=_ids(1), base=site.url, medpix_base=site.url)
    assert [i["image"] for i in _written(tmp_path / "a")[1]] == [case.images[0].name, case.images[2].name]
    review = tmp_path / "a" / REVIEW_FILE
    review.write_text(review.read_text().replace(",drop,", ",keep,"))
    report = run(tmp_path / "b", _fetcher(tmp_path), ids=_ids(1), base=site.url, medpix_base=site.url,
                 curator=Curator.from_options([review], keep=[], drop=[]))
    assert report.images == 3 and not report.skipped
    assert "annotated;overridden" in (tmp_path / "b" / REVIEW_FILE).read_text()


def test_rate_limit_spaces_requests(site: FixtureSite, tmp_path: Path) -> None:
    site.add_case(make_case(1))
    start = time.monotonic()
    run(tmp_path / "out", _fetcher(tmp_path, rate=20), ids=_ids(1), base=site.url, medpix_base=site.url)
    assert site.count() == 6 and time.monotonic() - start >= 5 / 20


def test_a_query_pages_through_open_i(site: FixtureSite, tmp_path: Path) -> None:
    for n in range(1, 8):
        site.add_case(make_case(n))
    report = run(tmp_path / "out", _fetcher(tmp_path), query="fixture condition", base=site.url, medpix_base=site.url,
                 page_size=3, limit=10)
    assert report.images == 10 and site.count("/api/search") == 4
    assert [c["U_id"] for c in _written(tmp_path / "out")[0]] == _ids(1, 2, 3, 4, 5)


def test_hundred_cases_at_rate_zero_within_ten_seconds(site: FixtureSite, tmp_path: Path) -> None:
    for n in range(100):
        site.add_case(make_case(n))
    start = time.monotonic()
    report = run(tmp_path / "out", _fetcher(tmp_path), ids=_ids(*range(100)), base=site.url, medpix_base=site.url)
    assert report.cases == 100 and time.monotonic() - start <= 10


def test_fixture_images_are_plain_pngs() -> None:
    image = FixtureImage("MPX1_synpic1", "CT", "Axial", "c")
    assert image.shown() == {"Modality": "CT", "Plane": "Axial", "Caption": "c", "ACR Codes": "1.3"}
