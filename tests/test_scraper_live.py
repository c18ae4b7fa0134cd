"""The scraper against the live formats: Open-i records, MedPix REST JSON, a JavaScript-built case page.

The fixture site (``scraper_support.FixtureSite.add_live``) serves each format as public evidence
shows it (see tools/scraper/README.md). The round trips take 50 cases of the release (their own
text and images, generated in memory at test time), serve them in those formats, scrape them
through each source and compare every field with the release, whitespace included.
Rendered pages run in a real headless chromium, one browser for the whole module; those tests are
skipped (reason printed by ``-ra``) only where chromium cannot be installed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from scraper_support import FixtureSite, LiveCase, Scripted, release_cases

from medpix_tui.source import load_source
from tools.scraper import render
from tools.scraper.cache import ResponseCache
from tools.scraper.check_live import check_live
from tools.scraper.cli import main
from tools.scraper.client import Fetcher
from tools.scraper.compare import compare, flatten
from tools.scraper.curation import Curator
from tools.scraper.harvest import Report, run
from tools.scraper.medpix import PageNotRendered, parse_page
from tools.scraper.rest import RestError, parse_encounter, parse_topic

#: Fields the Open-i abstract carries (labels Diagnosis, History, Findings, Ddx, Dxhow, Exam) and the title.
ABSTRACT_FIELDS = tuple(f"Case.{k}" for k in ("Title", "History", "Exam", "Findings", "Differential Diagnosis",
                                               "Case Diagnosis", "Diagnosis By"))


@pytest.fixture(scope="module")
def release(source_dir: Path) -> list[LiveCase]:
    return release_cases(source_dir, n=50)


@pytest.fixture(scope="module")
def want(source_dir: Path, release: list[LiveCase]) -> dict:
    uids = {c.uid for c in release}
    cases = [c for c in json.loads((source_dir / "Case_topic.json").read_text()) if c["U_id"] in uids]
    images = [d for d in json.loads((source_dir / "Descriptions.json").read_text()) if d["U_id"] in uids]
    return flatten(cases, images)


@pytest.fixture
def site(release: list[LiveCase]) -> Iterator[FixtureSite]:
    with FixtureSite() as s:
        for case in release:
            s.add_live(case)
        yield s


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[render.ChromiumRenderer]:
    """One headless chromium for the module; each test points it at its own fetcher (cache)."""
    reason = render.why_unavailable()
    if reason:
        pytest.skip(f"rendered-page tests need chromium: {reason}")
    fetcher = Fetcher(ResponseCache(tmp_path_factory.mktemp("chromium-cache")), rate=0)
    try:
        browser = render.ChromiumRenderer(fetcher, page_timeout=20, wait_timeout=10)
    except render.RendererUnavailable as exc:
        pytest.skip(f"rendered-page tests need chromium: {exc}")
    yield browser
    browser.close()


def _fetcher(tmp_path: Path, name: str = "cache") -> Fetcher:
    return Fetcher(ResponseCache(tmp_path / name), rate=0, retries=1, backoff=0.01, timeout=5)


def _keep_all(release: list[LiveCase]) -> Curator:
    """The round trip measures the parsers, so the curation rules (tested elsewhere) keep every release image."""
    return Curator({c.uid: "keep" for c in release})


def _check(want: dict, out: Path, release: list[LiveCase], only: tuple[str, ...] | None = None) -> None:
    """At least 99% of the fields identical, every difference listed, and each one explained."""
    data = load_source(out)
    total, diffs = compare(want, flatten(data.cases, data.images), only)
    listed = "\n".join(d.line() for d in diffs)
    print(f"{total - len(diffs)}/{total} fields identical; differences:\n{listed or '(none)'}")
    assert total > 1000 if only is None else total > 300
    assert (total - len(diffs)) / total >= 0.99, f"{len(diffs)} of {total} fields differ:\n{listed}"
    # The only differences allowed: Location Category, which MedPix does not serve (derived in locations.py).
    unexplained = [d.line() for d in diffs if not d.field.endswith(" Location Category")]
    assert not unexplained, "\n".join(unexplained)
    for case in release:  # the images are the release's own bytes
        for img in case.images:
            assert (out / "images" / f"{img.name}.png").read_bytes() == img.png, img.name


# --- the formats --------------------------------------------------------------------------------

def test_a_plain_get_sees_only_the_shell(site: FixtureSite, release: list[LiveCase], tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    page = requests.get(f"{site.url}/case?id={release[0].images[0].figure_id}", timeout=5).text
    assert "{{vm.case.title}}" in page and release[0].case["Title"] not in page
    with pytest.raises(PageNotRendered, match=r"page not rendered \(template text '\{\{vm.case.title\}\}' left\)"):
        parse_page(page)
    site.rest_enabled = False
    for case in release[:2]:
        del site.records[case.uid]  # no abstract either: the page is the only source
    report = Report()
    with pytest.raises(Exception, match="nothing harvested"):
        run(tmp_path / "out", _fetcher(tmp_path), ids=[c.uid for c in release[:2]], base=site.url,
            medpix_base=site.url, report=report)
    assert not (tmp_path / "out").exists()
    assert all("REST encounter: HTTP 404" in reason for _, reason in report.failed)


def test_rest_parsers_keep_text_and_refuse_errors() -> None:
    encounter = parse_encounter(json.dumps({
        "encounterID": "e1", "title": "T\r", "history": "a  b\n\nc", "exam": None, "ddx": "", "dxHow": "Biopsy",
        "txFollowup": "Surgery", "age": "73", "sex": "male", "topicID": "t1",
        "imageList": [{"imageID": "f1", "imageURL": "/images/full/synpic46283.jpg", "modality": " CT ",
                       "figurePart": None, "imageCaption": "cap"}]}))
    assert encounter.case == {"Title": "T\r", "History": "a  b\n\nc", "Diagnosis By": "Biopsy",
                              "Treatment & Follow Up": "Surgery"}
    assert encounter.images[0].synpic == "synpic46283"
    assert encounter.images[0].fields == {"Caption": "cap", "Modality": " CT "}
    topic = parse_topic(json.dumps({"title": "Topic", "keyword1": "a", "keyword2": "b c", "keyword3": None,
                                    "location": "Spine", "subCategory": "Trauma", "factoid": "x"}))
    assert topic.topic == {"Title": "Topic", "Disease Discussion": "x", "Category": "Trauma", "Keywords": "ab c"}
    assert topic.location == "Spine"
    for bad, why in (("<html>", "not JSON"), ("[1]", "expected a JSON object"), ('{"error": "no such id"}', "error"),
                     ("{}", "no case fields")):
        with pytest.raises(RestError, match=why):
            parse_encounter(bad)


# --- the round trips on the release ---------------------------------------------------------------

def test_round_trip_through_rest(site: FixtureSite, release: list[LiveCase], want: dict, tmp_path: Path) -> None:
    report = run(tmp_path / "out", _fetcher(tmp_path), ids=[c.uid for c in release], base=site.url,
                 medpix_base=site.url, curator=_keep_all(release))
    assert report.sources == {"rest": 50} and not report.failed
    assert site.count("/case") == 0  # REST answered everything: no page was needed
    _check(want, tmp_path / "out", release)
    image = release[0].images[0]
    rows = (tmp_path / "out" / "images_overview.csv").read_text().splitlines()[1:]
    pages = [r.rsplit(",", 1)[1] for r in rows]
    assert len(set(pages)) == len(pages) == sum(len(c.images) for c in release)  # one case?id= per image
    assert f"{site.url}/case?id={image.figure_id}" in pages


def test_round_trip_through_rendered_pages(site: FixtureSite, release: list[LiveCase], want: dict, tmp_path: Path,
                                           chromium: render.ChromiumRenderer) -> None:
    site.rest_enabled = False
    fetcher = chromium.fetcher = _fetcher(tmp_path)
    report = run(tmp_path / "out", fetcher, ids=[c.uid for c in release], base=site.url, medpix_base=site.url,
                 curator=_keep_all(release), renderer=chromium)
    assert report.sources == {"rendered": 50} and not report.failed
    _check(want, tmp_path / "out", release)
    rendered = chromium.rendered
    again = chromium.fetcher = _fetcher(tmp_path)
    run(tmp_path / "again", again, ids=[c.uid for c in release[:3]], base=site.url, medpix_base=site.url,
        curator=_keep_all(release), renderer=chromium)
    assert chromium.rendered == rendered and again.stats.requests == 0  # rendered DOMs come from the cache


def test_round_trip_through_the_open_i_abstract(site: FixtureSite, release: list[LiveCase], want: dict,
                                                tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for case in release:
        del site.json[("encounter", case.encounter_id)]  # no case text from REST, and the page is unrendered
    report = run(tmp_path / "out", _fetcher(tmp_path), ids=[c.uid for c in release], base=site.url,
                 medpix_base=site.url, curator=_keep_all(release))
    assert report.sources == {"partial": 50}
    assert "50 partial (case text from the Open-i abstract only)" in " ".join(
        report.lines(_fetcher(tmp_path).stats, tmp_path / "out"))
    _check(want, tmp_path / "out", release, only=ABSTRACT_FIELDS)


def test_rendered_pages_fill_what_rest_lacks(site: FixtureSite, release: list[LiveCase], want: dict,
                                             tmp_path: Path, chromium: render.ChromiumRenderer) -> None:
    case = release[2]
    del site.json[("topic", case.topic_id)]  # the encounter answers, the topic does not
    fetcher = chromium.fetcher = _fetcher(tmp_path)
    before = chromium.rendered
    report = run(tmp_path / "out", fetcher, ids=[case.uid], base=site.url, medpix_base=site.url,
                 curator=_keep_all(release), renderer=chromium)
    assert report.sources == {"rest": 1} and chromium.rendered - before == len(case.images)
    data = load_source(tmp_path / "out")
    assert data.cases[0]["Topic"] == case.topic and data.images[0]["Location"] == case.location


def test_a_page_whose_scripts_never_finish_is_refused(site: FixtureSite, release: list[LiveCase], tmp_path: Path,
                                                      chromium: render.ChromiumRenderer,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    case = release[3]
    site.rest_enabled = False  # the page is the only source (an overview brings no Open-i abstract)
    site.script(f"/app/case-data?id={case.images[0].figure_id}", Scripted(500, b"oops"))  # the script's fetch fails
    monkeypatch.setattr(chromium, "wait_timeout", 0.5)
    chromium.fetcher = _fetcher(tmp_path)
    overview = tmp_path / "o.csv"
    overview.write_text("Type,U_id,ID_Image,Img_Large,URL_Article_image\n" + "".join(
        f"TAC,{case.uid},{i.name},{site.url}{site.live_image_path(case, i)},{site.url}/case?id={i.figure_id}\n"
        for i in case.images[:1]))
    report = Report()
    with pytest.raises(Exception, match="nothing harvested"):
        run(tmp_path / "out", chromium.fetcher, overview=overview, base=site.url, medpix_base=site.url,
            renderer=chromium, report=report)
    assert "page not rendered (template text '{{vm.case.title}}' left)" in dict(report.failed)[case.uid]
    assert chromium.fetcher.cache.get(f"render:{site.url}/case?id={case.images[0].figure_id}") is None


# --- inputs -----------------------------------------------------------------------------------------

def test_id_works_where_open_i_cannot_find_the_case(site: FixtureSite, release: list[LiveCase],
                                                    tmp_path: Path) -> None:
    case = release[1]
    del site.records[case.uid]
    site.json[("encounter", case.uid)] = site.json[("encounter", case.encounter_id)]  # REST knows the case id
    report = run(tmp_path / "out", _fetcher(tmp_path), ids=[case.uid], base=site.url, medpix_base=site.url,
                 curator=_keep_all(release))
    assert report.sources == {"rest": 1} and report.images == len(case.images)
    data = load_source(tmp_path / "out")
    assert sorted(d["image"] for d in data.images) == sorted(i.name for i in case.images)
    for img in case.images:  # fetched from REST imageURL, through the redirect to the CDN path
        assert (tmp_path / "out" / "images" / f"{img.name}.png").read_bytes() == img.png
    assert site.count("/cdn/medpix/img/full/") == len(case.images)


def test_an_open_i_image_that_is_gone_comes_from_medpix_s_own_image_url(site: FixtureSite, release: list[LiveCase],
                                                                       tmp_path: Path) -> None:
    """Open-i's imgLarge answered 404, or an HTML error page (an Open-i client's report), and the image was lost;
    MedPix's imageURL (radbench's image.json), moved to a CDN behind a redirect, still serves it."""
    case = next(c for c in release if len(c.images) >= 3)
    gone, html = case.images[0], case.images[-1]
    del site.files[site.live_image_path(case, gone)]
    site.files[site.live_image_path(case, html)] = b"<html><body>Service unavailable</body></html>"
    report = run(tmp_path / "out", _fetcher(tmp_path), ids=[case.uid], base=site.url, medpix_base=site.url,
                 curator=_keep_all(release))
    assert not report.failed and report.images == len(case.images)
    for img in (gone, html):
        assert (tmp_path / "out" / "images" / f"{img.name}.png").read_bytes() == img.png
    overview = (tmp_path / "out" / "images_overview.csv").read_text()
    synpic = gone.name.split("_", 1)[1]
    assert f"{site.url}/images/full/{synpic}.png" in overview  # the URL that gave the image

    del site.files[f"/cdn/medpix/img/full/{synpic}.png"]  # gone from both: one line naming both
    report = run(tmp_path / "out2", _fetcher(tmp_path, "cache2"), ids=[case.uid], base=site.url,
                 medpix_base=site.url, curator=_keep_all(release))
    first = f"image {site.url}{site.live_image_path(case, gone)}: HTTP 404 (not retried)"
    second = f"MedPix's own image {site.url}/images/full/{synpic}.png: HTTP 404 (not retried)"
    assert report.failed == [(gone.name, f"{first}; {second}")]
    assert report.images == len(case.images) - 1


def test_a_rest_case_without_a_title_reads_it_from_its_pages(site: FixtureSite, release: list[LiveCase],
                                                             tmp_path: Path, chromium: render.ChromiumRenderer) -> None:
    # ClavyMedPixImport's encounter fields have no title; Open-i cannot find the case: the pages must be read
    case = release[4]
    del site.records[case.uid]
    site.json[("encounter", case.uid)] = {**site.json[("encounter", case.encounter_id)], "title": None}
    fetcher = chromium.fetcher = _fetcher(tmp_path)
    report = run(tmp_path / "out", fetcher, ids=[case.uid], base=site.url, medpix_base=site.url,
                 curator=_keep_all(release), renderer=chromium)
    assert not report.failed and report.images == len(case.images)
    assert load_source(tmp_path / "out").cases[0]["Case"]["Title"] == case.case["Title"]


def test_a_rest_image_named_only_by_its_uuid_keeps_it_as_its_name(site: FixtureSite, release: list[LiveCase],
                                                                  tmp_path: Path) -> None:
    case = release[5]
    del site.records[case.uid]
    encounter = site.json[("encounter", case.encounter_id)]
    # radbench's image.json: an imageURL named by the image's uuid, no imageName
    first = {**encounter["imageList"][0], "imageName": None,
             "imageURL": f"/images/full/{encounter['imageList'][0]['imageID']}.png"}
    site.files[first["imageURL"]] = case.images[0].png
    site.json[("encounter", case.uid)] = {**encounter, "imageList": [first, *encounter["imageList"][1:]]}
    report = run(tmp_path / "out", _fetcher(tmp_path), ids=[case.uid], base=site.url, medpix_base=site.url,
                 curator=_keep_all(release))
    names = sorted(d["image"] for d in load_source(tmp_path / "out").images)
    assert f"{case.uid}_{first['imageID']}" in names and len(names) == len(case.images), (names, report.skipped)


def test_a_query_pages_through_open_i_records(site: FixtureSite, release: list[LiveCase], tmp_path: Path) -> None:
    title = release[4].case["Title"]
    expected = [c.uid for c in release if title.upper() in c.case["Title"].upper()
                or any(title.upper() in (i.description.get("Caption") or "").upper() for i in c.images)]
    report = run(tmp_path / "out", _fetcher(tmp_path), query=title, base=site.url, medpix_base=site.url,
                 page_size=2, curator=_keep_all(release))
    written = [c["U_id"] for c in load_source(tmp_path / "out").cases]
    assert written == expected and report.sources == {"rest": len(expected)}
    assert site.count("/api/search") == -(-sum(len(site.live[u].images) for u in expected) // 2)


def test_overview_with_public_urls_goes_to_the_bases(site: FixtureSite, release: list[LiveCase],
                                                     tmp_path: Path) -> None:
    overview = site.overview_live(tmp_path / "images_overview.csv")
    assert "https://medpix.nlm.nih.gov/case?id=" in overview.read_text()
    report = run(tmp_path / "out", _fetcher(tmp_path), overview=overview, base=site.url, medpix_base=site.url,
                 curator=_keep_all(release))
    assert report.cases == 50 and report.sources == {"rest": 50} and site.count("/api/search") == 0


# --- the command line ----------------------------------------------------------------------------

@pytest.fixture
def _restore_logging() -> Iterator[None]:
    logger = logging.getLogger("tools.scraper")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.mark.usefixtures("_restore_logging")
def test_renderer_absence_is_one_line(site: FixtureSite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "why_unavailable", lambda: "chromium and chromium-driver are not installed")
    from tools.scraper import cli
    monkeypatch.setattr(cli, "why_unavailable", render.why_unavailable)
    base = ["--openi-base", site.url, "--medpix-base", site.url, "--rate", "0"]
    result = CliRunner().invoke(main, [*base, "--renderer", "chromium", "--id", "MPX1", "--out", str(tmp_path / "a")])
    assert result.exit_code == 2 and "--renderer chromium: chromium and chromium-driver are not installed" in \
        result.stderr and "Traceback" not in result.output
    result = CliRunner().invoke(main, [*base, "--id", "MPX1", "--out", str(tmp_path / "b")])
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("renderer:")]
    assert lines == [("renderer: chromium and chromium-driver are not installed; case pages are read as served "
                      "(--renderer none)")]


@pytest.mark.usefixtures("_restore_logging", "chromium")
def test_the_command_renders_with_chromium_by_default(site: FixtureSite, release: list[LiveCase],
                                                      tmp_path: Path) -> None:
    site.rest_enabled = False
    ids = ",".join(c.uid for c in release[:2])
    result = CliRunner().invoke(main, ["--openi-base", site.url, "--medpix-base", site.url, "--rate", "0",
                                       "--id", ids, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    pages = sum(len(c.images) for c in release[:2])
    assert "sources: 0 REST, 2 rendered page, 0 partial (case text from the Open-i abstract only)" in result.stdout
    assert f"s, {pages} page(s) rendered" in result.stdout and "renderer: chromium started in " in result.stdout


def test_check_live_is_reached_through_the_module() -> None:
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", "tools.scraper", "check-live", "--help"], capture_output=True,
                            text=True, timeout=60, check=False, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0 and "--medpix-base" in result.stdout and "field by field" in result.stdout


@pytest.mark.usefixtures("_restore_logging", "chromium")
def test_check_live_against_the_local_site(site: FixtureSite, release: list[LiveCase], source_dir: Path,
                                           tmp_path: Path) -> None:
    case = release[0]
    result = CliRunner().invoke(check_live, ["--id", case.uid, "--release", str(source_dir), "--openi-base", site.url,
                                             "--medpix-base", site.url, "--rate", "0", "--timeout", "10"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    n = len(flatten([c for c in json.loads((source_dir / "Case_topic.json").read_text()) if c["U_id"] == case.uid],
                    [d for d in json.loads((source_dir / "Descriptions.json").read_text()) if d["U_id"] == case.uid]))
    assert f"{case.uid}: {len(case.images)} image(s) found; {n} release fields" == lines[0]
    summary = {ln.split(":")[0]: ln for ln in lines[-3:]}
    rest_same, rendered_same, openi_same = (int(summary[s].split()[1].split("/")[0]) for s in ("rest", "rendered",
                                                                                                  "openi"))
    assert rest_same >= n - 2 and rendered_same >= n - 2 and 0 < openi_same < n
    assert any(ln.startswith(f"{case.uid} Case.History") and ln.split()[-3:] == ["same", "same", "same"]
               for ln in lines)
