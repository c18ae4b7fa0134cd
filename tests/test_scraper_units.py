"""Unit tests of the scraper's parts: rate limit, retries, cache, parsers, curation, locations."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scraper_support import make_case, png_bytes, render_page

from medpix_tui.errors import InputError
from tools.scraper import openi
from tools.scraper.cache import Fetched, ResponseCache
from tools.scraper.client import Fetcher, FetchError, RateLimiter
from tools.scraper.curation import (
    Curator,
    flag_reasons,
    modality_type,
    read_overrides,
    review_row,
    write_review,
)
from tools.scraper.inputs import ImageRef, dedupe, ref_from_record, refs_from_overview
from tools.scraper.locations import location_category
from tools.scraper.medpix import (
    _CASE_LABELS,
    _MARKERS,
    _TOPIC_LABELS,
    _norm,
    image_key,
    parse_abstract,
    parse_case_page,
)
from tools.scraper.writer import SourceWriter, check_can_write_in, to_png

# --- rate limiter and retries -----------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_rate_limiter_spaces_request_starts() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2.0, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        limiter.wait()
    assert clock.slept == pytest.approx([0.5] * 4)


def test_rate_zero_never_waits() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        limiter.wait()
    assert clock.slept == []


class FakeResponse:
    def __init__(self, status: int, body: bytes = b"ok", headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        self.content = body
        self.headers = {"Content-Type": "text/plain", **(headers or {})}


class FakeSession:
    """Answers from a script: a FakeResponse, or an exception to raise."""

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.headers: dict[str, str] = {}
        self.calls = 0

    def get(self, url: str, timeout: float) -> FakeResponse:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]


def _fetcher(tmp_path: Path, session: FakeSession, **kw: object) -> tuple[Fetcher, list[float]]:
    slept: list[float] = []
    fetcher = Fetcher(ResponseCache(tmp_path / "c"), rate=0, session=session,  # type: ignore[arg-type]
                      sleep=slept.append, **kw)
    return fetcher, slept


def test_retries_5xx_and_timeouts_with_exponential_backoff(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    session = FakeSession(FakeResponse(500), requests.Timeout(), FakeResponse(503), FakeResponse(200, b"body"))
    fetcher, slept = _fetcher(tmp_path, session, retries=4, backoff=0.5)
    assert fetcher.get("http://x/a").content == b"body"
    assert slept == [0.5, 1.0, 2.0]
    assert fetcher.stats.retried == 3 and fetcher.stats.requests == 4 and fetcher.stats.fetched == 1
    assert session.headers["User-Agent"].startswith("medpix-tui-scraper/")
    assert [r.getMessage().split(";")[0] for r in caplog.records] == [
        "GET http://x/a: HTTP 500", "GET http://x/a: timed out after 30s", "GET http://x/a: HTTP 503"]


def test_429_honours_retry_after(tmp_path: Path) -> None:
    fetcher, slept = _fetcher(tmp_path, FakeSession(
        FakeResponse(429, headers={"Retry-After": "7"}), FakeResponse(429, headers={"Retry-After": "nan"}),
        FakeResponse(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
        requests.exceptions.ChunkedEncodingError(), FakeResponse(200)), backoff=0.1)
    fetcher.get("http://x/a")
    assert slept == pytest.approx([7.0, 0.2, 0.4, 0.8])


def test_404_is_not_retried(tmp_path: Path) -> None:
    session = FakeSession(FakeResponse(404))
    fetcher, slept = _fetcher(tmp_path, session)
    with pytest.raises(FetchError, match="HTTP 404 \\(not retried\\)"):
        fetcher.get("http://x/a")
    assert session.calls == 1 and slept == [] and fetcher.stats.failed == 1


def test_gives_up_after_the_last_retry(tmp_path: Path) -> None:
    session = FakeSession(*[requests.ConnectionError()] * 3)
    fetcher, slept = _fetcher(tmp_path, session, retries=2, backoff=1)
    with pytest.raises(FetchError, match="connection failed .* gave up after 3 attempts"):
        fetcher.get("http://x/a")
    assert slept == [1, 2]


def test_cache_answers_without_a_request_and_failures_are_not_cached(tmp_path: Path) -> None:
    session = FakeSession(FakeResponse(200, b"one"), FakeResponse(404))
    fetcher, _ = _fetcher(tmp_path, session)
    fetcher.get("http://x/a")
    again = fetcher.get("http://x/a")
    assert again.from_cache and again.content == b"one" and session.calls == 1
    with pytest.raises(FetchError):
        fetcher.get("http://x/b")
    assert ResponseCache(tmp_path / "c").get("http://x/b") is None


def test_cache_entries_are_complete_or_absent(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    cache.put("http://x/a", b"abc", "text/html; charset=latin-1")
    hit = cache.get("http://x/a")
    assert hit == Fetched("http://x/a", b"abc", "text/html; charset=latin-1", from_cache=True)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [cache.path("http://x/a").name]
    entry = cache.path("http://x/a")
    entry.write_bytes(entry.read_bytes()[:-1])  # truncated: the size no longer matches
    assert cache.get("http://x/a") is None
    entry.write_bytes(b"garbage")
    assert cache.get("http://x/a") is None
    cache.put("http://x/a", b"abc", "")
    cache.forget("http://x/a")
    assert cache.get("http://x/a") is None and not entry.exists()


def test_fetched_text_uses_declared_charset() -> None:
    assert Fetched("u", "café".encode("latin-1"), "text/html; charset=ISO-8859-1").text == "café"
    assert Fetched("u", b"\xff", "text/html; charset=bogus").text == "\ufffd"


# --- MedPix page parser -----------------------------------------------------------------------

@pytest.mark.parametrize("style", ["sections", "inline"])
def test_both_page_styles_parse_to_the_same_fields(style: str) -> None:
    case = make_case(4, n_ct=2, n_mr=1, style=style)
    page = parse_case_page(render_page(case))
    assert page.heading == case.case["Title"]  # the sections layout shows the title only as <h1>
    assert {"Title": page.heading, **page.case} == case.case
    assert page.topic == case.topic
    sex = case.sex.title() if style == "sections" else case.sex[0].upper()
    assert page.patient == {"Age": case.age, "Sex": sex, "Location": case.location}
    assert set(page.images) == {image_key(i.name) for i in case.images}
    for img in case.images:
        assert page.images[image_key(img.name)] == img.shown()


def test_labels_are_found_by_text_not_position() -> None:
    html = """<html><body><header>History of MedPix</header>
    <table><tr><td>Case Diagnosis:</td><td>Glioma</td></tr>\
<tr><th>TREATMENT AND FOLLOW-UP</th><td>Surgery</td></tr></table>
    <div>Some unlabelled preamble</div>
    <p><span>Title:</span> Case title <em>here</em></p>
    <div data-section="topic"><p>Title: Topic T</p><p><b>Discussion</b>: topic text</p></div>
    <figure><img src="/a/MPX1_synpic77.png"><figcaption>Modality: MR - FLAIR<br>Plane: Axial</figcaption></figure>
    </body></html>"""
    page = parse_case_page(html)
    assert page.case == {"Case Diagnosis": "Glioma", "Treatment & Follow Up": "Surgery", "Title": "Case title here"}
    assert page.topic == {"Title": "Topic T", "Disease Discussion": "topic text"}
    assert page.images == {"synpic77": {"Modality": "MR - FLAIR", "Plane": "Axial"}}


def test_malformed_html_is_parsed_as_far_as_it_goes() -> None:
    html = "<div><h2>History<p>An unclosed <b>bold<h2>Findings</h2><p>Mass</div></span><h2>Topic<p><b>Title:</b> T"
    page = parse_case_page(html)
    assert page.case["Findings"] == "Mass" and page.topic == {"Title": "T"}


def test_garbage_yields_nothing() -> None:
    page = parse_case_page("\x00\x01 not html at all <<<>>>")
    assert not (page.case or page.topic or page.images)


def test_a_duplicated_image_block_keeps_the_first() -> None:
    html = ("<div data-image-id='MPX1_synpic5'><p>Modality: CT</p></div>"
            "<div data-image-id='MPX1_synpic5'><p>Modality: MR</p></div>")
    page = parse_case_page(html)
    assert page.images == {"synpic5": {"Modality": "CT"}} and page.duplicates == ["synpic5"]


def test_open_i_abstract_gives_case_fields() -> None:
    # The shape of Open-i's MedPix abstracts (BioVida's 2017 sample records): "<p><b>Label: </b>text</p>",
    # raw line breaks inside the text; spacing is kept as served.
    abstract = ("<p><b>Diagnosis: </b>Tumour</p><p><b>History: </b>60 yo.\nSecond  line</p>"
                "<p><b>Ddx: </b>A\nB</p><p><b>Dxhow: </b>Biopsy &amp; MRI</p><p><b>Exam: </b>N/A</p>")
    assert parse_abstract(abstract) == {"Case Diagnosis": "Tumour", "History": "60 yo.\nSecond  line",
                                        "Differential Diagnosis": "A\nB", "Diagnosis By": "Biopsy & MRI",
                                        "Exam": "N/A"}
    older = "<p><b>History:</b> 60 yo.</p><p><b>Findings:</b> A mass. <b>Diagnosis:</b> Tumour</p>"
    assert parse_abstract(older) == {"History": "60 yo.", "Findings": "A mass. ", "Case Diagnosis": "Tumour"}


_WORDS = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEF0123456789 .,;()-'&é•"), min_size=1, max_size=40)
_PARAGRAPHS = st.lists(_WORDS.map(str.strip).filter(bool), min_size=1, max_size=3).map("\n\n".join)


def _not_a_label(text: str) -> bool:
    """Paragraphs that read as a label or a section heading are ambiguous by design: leave them out."""
    return all(_norm(line) not in _CASE_LABELS and _norm(line) not in _TOPIC_LABELS and _norm(line) not in _MARKERS
               and not line.strip().lower().startswith(("image", "figure", "fig"))
               for line in text.split("\n"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["History", "Exam", "Findings", "Discussion", "Diagnosis By"]),
                       _PARAGRAPHS.filter(_not_a_label), min_size=1), st.sampled_from(["sections", "inline"]))
def test_any_field_text_round_trips(fields: dict[str, str], style: str) -> None:
    case = make_case(1, style=style)
    case.case = {"Title": "T", **{k: " ".join(v.split(" ")) for k, v in fields.items()}}
    if style == "inline":  # one paragraph per field in this layout; line breaks become <br>
        case.case = {k: v.replace("\n\n", "\n") for k, v in case.case.items()}
    page = parse_case_page(render_page(case))
    want = {k: "\n".join(" ".join(line.split()) for line in v.split("\n")).strip() for k, v in case.case.items()}
    assert {"Title": page.heading, **page.case} == want


# --- Open-i ----------------------------------------------------------------------------------

def test_search_page_errors_are_named() -> None:
    with pytest.raises(openi.OpeniError, match="not JSON"):
        openi.parse_search_page("<html>")
    with pytest.raises(openi.OpeniError, match="query error: bad"):
        openi.parse_search_page('{"Query-Error": "bad", "total": 0}')
    with pytest.raises(openi.OpeniError, match="'list' is not an array of records but dict"):
        openi.parse_search_page('{"total": 1, "list": {}}')
    assert openi.parse_search_page('{"total": 0}').records == []
    assert openi.parse_search_page('{"total": 0, "list": null}').records == []  # was "'list' is not an array"


def test_search_url_shape() -> None:
    assert openi.search_url("https://openi.nlm.nih.gov/", "brain tumor", "mpx", 1, 100) == \
        "https://openi.nlm.nih.gov/api/search?query=brain+tumor&m=1&n=100&coll=mpx"


def test_record_to_ref() -> None:
    record = {"uid": "x", "imgLarge": "/imgs/512/207/1009/MPX1009_synpic46283.png", "title": " T ",
              "image": {"caption": "cap"}, "fulltext_html_url": "https://medpix.nlm.nih.gov/case?id=u"}
    ref = ref_from_record(record, "https://openi.nlm.nih.gov")
    assert ref == ImageRef("MPX1009_synpic46283", "MPX1009",
                           "https://openi.nlm.nih.gov/imgs/512/207/1009/MPX1009_synpic46283.png",
                           "https://medpix.nlm.nih.gov/case?id=u", caption="cap", title=" T ", figure_id="u")
    assert ref_from_record({"uid": "MPX1_synpic1"}, "https://o") is None
    assert ref_from_record({"imgLarge": "/imgs/../x.png", "uid": "../etc"}, "https://o") is None
    # Open-i escapes its text as HTML, as the abstract (which parse_abstract unescapes) shows
    escaped = ref_from_record({**record, "title": "Glioblastoma &amp; edema \u2014 caf&eacute;",
                               "image": {"caption": "mass &amp; edema &lt;2 cm"}}, "https://openi.nlm.nih.gov")
    assert escaped is not None and escaped.title == "Glioblastoma & edema \u2014 café"
    assert escaped.caption == "mass & edema <2 cm"


def test_dedupe_keeps_the_first(caplog: pytest.LogCaptureFixture) -> None:
    a, b = ImageRef("A_1", "A", "u1", None), ImageRef("A_1", "A", "u2", None)
    assert dedupe([a, b]) == [a]
    assert "duplicate image id A_1" in caplog.text


def test_overview_reader(tmp_path: Path) -> None:
    path = tmp_path / "o.csv"
    path.write_text("Type,U_id,ID_Image,Img_Large,URL_Article_image\n"
                    "TAC,MPX1,MPX1_synpic1,https://o//imgs/1.png,https://m/case?id=a\n"
                    "MRI,MPX1,../evil,https://o/imgs/2.png,\n"
                    "MRI,MPX1,MPX1_synpic2,https://o/imgs/2.png,\n")
    refs = refs_from_overview(path)
    assert [(r.image, r.type_hint, r.page_url) for r in refs] == [("MPX1_synpic1", "CT", "https://m/case?id=a"),
                                                                   ("MPX1_synpic2", "MR", None)]
    path.write_text("Type,U_id\nTAC,MPX1\n")
    with pytest.raises(InputError, match="missing column"):
        refs_from_overview(path)


def test_reads_the_real_overview(source_dir: Path) -> None:
    refs = refs_from_overview(source_dir / "images_overview.csv")
    assert len(refs) > 2000 and all(r.type_hint in ("CT", "MR") and r.page_url for r in refs)


# --- curation and locations ------------------------------------------------------------------

@pytest.mark.parametrize(("description", "reasons"), [
    ({"Modality": "CT w/contrast (IV)", "Plane": "Axial", "Caption": "Narrowing of the duct."}, []),
    ({"Modality": "MRA - MR Angiography/Venography", "Plane": "Coronal", "Caption": "x"}, []),
    ({"Modality": "Drawing", "Plane": "Drawing", "Caption": "x"}, ["not-ct-mr", "drawing"]),
    ({"Modality": "MR - Montage", "Plane": "Multiple or Montage", "Caption": "x"}, ["montage"]),
    ({"Modality": "CT - noncontrast", "Plane": "Photograph", "Caption": "x"}, ["photograph"]),
    ({"Modality": "CT", "Plane": "Axial", "Caption": "Arrows point to the mass"}, ["annotated"]),
    ({"Modality": "MRS - Spectroscopy", "Plane": None, "Caption": "x"}, ["chart"]),
    ({"Modality": "Ultrasound", "Plane": "Axial", "Caption": "Schematic diagram"}, ["not-ct-mr", "drawing"]),
])
def test_flag_reasons(description: dict, reasons: list[str]) -> None:
    assert flag_reasons(description) == reasons


def test_modality_type() -> None:
    assert [modality_type(m) for m in ("CT - noncontrast", "CTA - CT Angiography", "MR T2* gradient", "MRI",
                                       " MR - Montage", "Virtual Colonoscopy", None, "CTX")] == \
        ["CT", "CT", "MR", "MR", "MR", None, None, None]


def test_overrides_round_trip_through_the_review_csv(tmp_path: Path) -> None:
    montage = {"Modality": "CT - Montage", "Plane": "Axial", "Caption": "c"}
    drawing = {"Modality": "Drawing", "Plane": None, "Caption": "c"}
    curator = Curator()
    rows = [review_row("A_1", "A", montage, curator.judge("A_1", "A", montage)),
            review_row("A_2", "A", drawing, curator.judge("A_2", "A", drawing))]
    assert [r["decision"] for r in rows] == ["drop", "drop"]
    write_review(tmp_path / "r.csv", rows)
    text = (tmp_path / "r.csv").read_text().replace("A_1,A,drop", "A_1,A,keep").replace("A_2,A,drop", "A_2,A,keep")
    (tmp_path / "r.csv").write_text(text)
    curator = Curator.from_options([tmp_path / "r.csv"], keep=[], drop=["B"])
    assert curator.judge("A_1", "A", montage).keep and curator.judge("A_1", "A", montage).overridden
    assert not curator.judge("A_2", "A", drawing).keep  # not CT/MR: no override can make it one
    assert not curator.judge("B_1", "B", {"Modality": "CT"}).keep  # case-wide drop
    (tmp_path / "bad.csv").write_text("image,decision\nA_1,maybe\n")
    with pytest.raises(InputError, match="line 2: decision must be keep or drop"):
        read_overrides(tmp_path / "bad.csv")


def test_location_table_agrees_with_the_release(source_dir: Path) -> None:
    images = json.loads((source_dir / "Descriptions.json").read_text())
    topics = {c["U_id"]: c["Topic"] for c in json.loads((source_dir / "Case_topic.json").read_text())}
    agree = sum(location_category(d["Location"], topics[d["U_id"]].get("ACR Code"), d["Description"]["ACR Codes"])
                == d["Location Category"] for d in images)
    assert agree / len(images) > 0.95


def test_location_category_fallbacks() -> None:
    assert location_category("Brain and Neuro", "8.1") == "Head"  # the table wins
    assert location_category("Vascular", "5.6") == "Thorax"       # spanning: the topic's ACR region
    assert location_category("Vascular", "-1", "9.1") == "Abdomen"  # then the usual region
    assert location_category("Somewhere new", "-1.-1", None) is None


def test_to_png_converts_and_rejects() -> None:
    png = png_bytes(1)
    assert to_png(png) == png
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "JPEG")
    assert to_png(buf.getvalue()).startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="not an image .*<html>"):
        to_png(b"<html><body>Sorry</body></html>")


def test_a_folder_that_cannot_be_made_is_refused_before_any_work(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """SourceWriter.check let --out /etc/passwd/x through: its mkdir raised FileExistsError later."""
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match=r"cannot create .*/file/x: not a folder: .*/file is a file$") as exc:
        SourceWriter.check(tmp_path / "file" / "x", force=False)
    assert exc.value.exit_code == 2
    with pytest.raises(InputError, match=r"cannot create .*/file/c/d: not a folder: .*/file is a file \(in the path"):
        check_can_write_in(tmp_path / "file" / "c" / "d")
    with pytest.raises(InputError, match=r"cannot create .*/file: not a folder: .*/file is a file$"):
        check_can_write_in(tmp_path / "file")
    check_can_write_in(tmp_path / "new" / "deeper")  # made later, under a writable folder
    SourceWriter.check(tmp_path / "new" / "out", force=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    monkeypatch.setattr("tools.scraper.writer.os.access", lambda path, mode: False)
    out = tmp_path / "new" / "out"
    with pytest.raises(InputError, match=rf"cannot create {re.escape(str(out))}: folder is not writable: "
                                         rf"{re.escape(str(tmp_path))}$"):
        SourceWriter.check(tmp_path / "new" / "out", force=False)


@pytest.mark.parametrize(("cache", "message"), [
    ("", "error: --cache is empty: an empty path names no file or folder to write; see "),
    ("-", "error: --cache -: writing to standard output is not supported here; "),
    ("file/c", "error: cannot create {tmp}/file/c: not a folder: {tmp}/file is a file"),
])
def test_check_live_refuses_a_cache_it_cannot_write_before_any_request(tmp_path: Path, cache: str,
                                                                       message: str) -> None:
    from click.testing import CliRunner

    from tools.scraper.check_live import check_live

    (tmp_path / "file").write_text("")
    (tmp_path / "Case_topic.json").write_text(json.dumps([{"U_id": "MPX1", "Case": {"Title": "t"}}]))
    (tmp_path / "Descriptions.json").write_text("[]")
    value = str(tmp_path / cache) if "/" in cache else cache
    result = CliRunner().invoke(check_live, ["--id", "MPX1", "--release", str(tmp_path), "--cache", value,
                                             "--openi-base", "http://127.0.0.1:9", "--medpix-base", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and result.stdout == "", result.output
    assert result.stderr.startswith(message.format(tmp=tmp_path)) and result.stderr.count("\n") == 1, result.stderr
