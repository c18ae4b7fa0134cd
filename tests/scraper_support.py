"""Fixtures for the scraper tests and benchmark: MedPix-like cases and a local HTTP site.

:class:`FixtureSite` serves, on 127.0.0.1 only, what the scraper reads from the real
sites. Two kinds of case:

* :meth:`FixtureSite.add_case` (invented :class:`FixtureCase`): Open-i records and finished
  HTML case pages, as a mirror might serve them (the first scraper's fixtures).
* :meth:`FixtureSite.add_live` (:class:`LiveCase`): the live formats as public evidence shows
  them (see ``tools/scraper/README.md``): Open-i ``api/search`` records (``uid`` the case id,
  ``imgLarge`` relative, ``medpixImageURL``/``medpixFigureId`` per image, ``fulltext_html_url``/
  ``medpixArticleId`` per case, an ``abstract`` of ``<p><b>Label: </b>...</p>``), MedPix REST
  JSON (``/rest/encounter.json``, ``/rest/topic.json``, ``/rest/image.json`` with the field
  names public importers read), images behind a redirect to a CDN path, and an
  AngularJS-style case page: the served HTML is a shell with ``{{...}}`` template text and a
  script that fetches the case after load and builds ``class="section ng-scope"`` blocks.

:func:`release_cases` builds live cases from the release itself (its own text and images,
at test time, in memory); nothing of the dataset is stored in the repository. Failures are
scripted per request path: a list of responses served before the normal one.
"""

from __future__ import annotations

import html
import io
import json
import random
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from PIL import Image


def png_bytes(seed: int, size: tuple[int, int] = (24, 20)) -> bytes:
    """A small deterministic grayscale PNG."""
    rng = random.Random(seed)
    im = Image.new("L", size)
    im.putdata([rng.randrange(256) for _ in range(size[0] * size[1])])
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


@dataclass
class FixtureImage:
    name: str
    modality: str
    plane: str | None
    caption: str
    figure_part: str | None = None
    acr: str = "1.3"
    fields: dict[str, str | None] | None = None  # overrides what the page shows (None: hide a field)

    def shown(self) -> dict[str, str | None]:
        base = {"Modality": self.modality, "Plane": self.plane, "Caption": self.caption,
                "Figure Part": self.figure_part, "ACR Codes": self.acr}
        base.update(self.fields or {})
        return {k: v for k, v in base.items() if v is not None}


@dataclass
class FixtureCase:
    uid: str
    case: dict[str, str]
    topic: dict[str, str]
    location: str
    age: str
    sex: str
    images: list[FixtureImage]
    page_id: str
    style: str = "sections"
    extra_pages: dict[str, list[str]] = field(default_factory=dict)  # page id -> image names shown there

    def image_type(self, image: FixtureImage) -> str:
        return "CT" if image.modality.upper().startswith("CT") else "MR"


_MODALITIES_CT = ("CT w/contrast (IV)", "CT - noncontrast", "CT - GI & IV Contrast")
_MODALITIES_MR = ("MR - T2 weighted", "MR - T1W w/Gadolinium", "MR - FLAIR")
_PLANES = ("Axial", "Coronal", "Sagittal")
_LOCATIONS = (("Brain and Neuro", "1.3"), ("Chest, Pulmonary", "6.4"), ("Gastrointestinal", "7.2"),
              ("Musculoskeletal", "4.1"), ("Genitourinary", "8.3"))


def make_case(n: int, *, n_ct: int = 1, n_mr: int = 1, style: str | None = None) -> FixtureCase:
    """Invented case number ``n`` (``MPX9<n>``) with its images; deterministic."""
    uid = f"MPX9{n:03d}"
    location, acr = _LOCATIONS[n % len(_LOCATIONS)]
    images = []
    for k in range(n_ct + n_mr):
        ct = k < n_ct
        modality = (_MODALITIES_CT if ct else _MODALITIES_MR)[(n + k) % 3]
        images.append(FixtureImage(f"{uid}_synpic{n:03d}{k:02d}", modality, _PLANES[(n + k) % 3],
                                   f"Fixture image {k + 1} of case {n}: a lesion is seen.", acr=acr))
    case = {
        "Title": f"Fixture condition {n}",
        "History": f"{30 + n % 50}-year-old patient with symptom {n}.",
        "Exam": "Unremarkable." if n % 2 else "N/A",
        "Findings": f"Finding A of case {n}.\n\nFinding B of case {n}.",
        "Differential Diagnosis": f"Condition {n}\nCondition {n + 1}",
        "Case Diagnosis": f"Fixture condition {n}",
        "Diagnosis By": "Imaging features",
        "Treatment & Follow Up": f"Follow-up plan {n}.",
        "Discussion": f"Discussion of case {n}.",
    }
    if n % 3 == 0:
        del case["Discussion"]
    topic = {
        "Title": f"Fixture topic {n}",
        "Disease Discussion": f"General text about topic {n}.\n\nSecond paragraph {n}.",
        "ACR Code": acr,
        "Category": "Neoplasm, benign" if n % 2 else "Congenital, malformation",
        "Keywords": f"fixture; topic {n}",
        "Reference": f"Author {n}. A made-up reference. 2020.",
    }
    return FixtureCase(uid, case, topic, location, str(30 + n % 50), "male" if n % 2 else "female",
                       images, f"0000{n:04d}-fixture-case", style or ("sections", "inline")[n % 2])


def _p(text: str) -> str:
    return "".join(f"<p>{html.escape(part).replace(chr(10), '<br>')}</p>" for part in text.split("\n\n"))


def render_page(case: FixtureCase, images: list[FixtureImage] | None = None) -> str:
    """A MedPix-style case page: labelled case and topic sections and per-image fields."""
    images = case.images if images is None else images
    nav = "<nav><a href='/'>Home</a> History | Findings | Topic</nav><script>var label = 'History';</script>"
    if case.style == "sections":
        body = [f"<section id='case-info'><h1>{html.escape(case.case['Title'])}</h1>"]
        body += [f"<h2>{html.escape(k)}</h2>{_p(v)}" for k, v in case.case.items() if k != "Title"]
        body.append(f"<dl><dt>Age</dt><dd>{case.age}</dd><dt>Sex</dt><dd>{case.sex.title()}</dd></dl></section>")
        body.append("<section class='topic'><h2>Topic</h2><dl>")
        body += [f"<dt>{html.escape(k)}</dt><dd>{_p(v)}</dd>" for k, v in case.topic.items()]
        body.append(f"<dt>Location:</dt><dd>{html.escape(case.location)}</dd></dl></section>")
        for img in images:
            rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                           for k, v in img.shown().items())
            body.append(f"<div class='image-details' data-image-id='{img.name}'>"
                        f"<img src='/imgs/{img.name}.png' alt=''><table>{rows}</table></div>")
    else:
        body = [f"<div class='content'><h1>{html.escape(case.case['Title'])}</h1><div>"]
        body += [f"<p><b>{html.escape(k)}:</b> {html.escape(v).replace(chr(10), '<br>')}</p>"
                 for k, v in case.case.items()]
        body.append(f"<p><strong>Age:</strong> {case.age} <strong>Sex:</strong> {case.sex[0].upper()}</p></div>")
        body.append("<h2>Topic</h2>")
        body += [f"<p><b>{html.escape(k)}</b>: {html.escape(v).replace(chr(10), '<br>')}</p>"
                 for k, v in case.topic.items()]
        body.append(f"<p>Location: {html.escape(case.location)}</p>")
        for i, img in enumerate(images):
            body.append(f"<h3>Image {i + 1}: {img.name}</h3>")
            body += [f"<p><b>{html.escape(k)}:</b> {html.escape(v)}</p>" for k, v in img.shown().items()]
        body.append("</div>")
    footer = "<footer>Contact | Disclaimer | Discussion</footer>"
    return f"<!DOCTYPE html><html><head><title>MedPix</title></head><body>{nav}{''.join(body)}{footer}</body></html>"


@dataclass
class LiveImage:
    """One image in the live formats; ``description`` is the release's ``Description``."""

    name: str                      # MPX1009_synpic46283
    figure_id: str                 # MedPix's image id (uuid): case?id=, image.json?imageID=
    description: dict[str, Any]
    png: bytes
    kind: str = "CT"               # the release's Type


@dataclass
class LiveCase:
    """One case in the live formats; ``case``/``topic`` are the release's objects (key order kept)."""

    uid: str
    encounter_id: str
    topic_id: str
    case: dict[str, str]
    topic: dict[str, str]
    location: str
    images: list[LiveImage]

    @property
    def synpics(self) -> list[str]:
        return [i.name.split("_", 1)[1] for i in self.images]


def _uuid(seed: str) -> str:
    """A deterministic uuid-shaped id (MedPix ids are uuids: see radbench.csv's imageIDs)."""
    h = zlib.crc32(seed.encode()) & 0xFFFFFFFF
    g = zlib.crc32(seed[::-1].encode()) & 0xFFFFFFFF
    return f"{h:08x}-{g >> 16:04x}-4{g & 0xFFF:03x}-a{h & 0xFFF:03x}-{h:08x}{g & 0xFFFF:04x}"


def release_cases(source_dir: Path, n: int = 50, step: int = 13) -> list[LiveCase]:
    """``n`` cases of the release (every ``step``-th), with their own text and image bytes."""
    cases = json.loads((source_dir / "Case_topic.json").read_text("utf-8"))
    images: dict[str, list[dict[str, Any]]] = {}
    for doc in json.loads((source_dir / "Descriptions.json").read_text("utf-8")):
        images.setdefault(doc["U_id"], []).append(doc)
    chosen = [c for c in cases[::step] if c["U_id"] in images][:n]
    live = []
    for c in chosen:
        docs = images[c["U_id"]]
        live.append(LiveCase(
            c["U_id"], _uuid("enc" + c["U_id"]), _uuid("top" + c["U_id"]), c["Case"], c["Topic"],
            docs[0]["Location"],
            [LiveImage(d["image"], _uuid("fig" + d["image"]), d["Description"],
                       (source_dir / "images" / f"{d['image']}.png").read_bytes(), d["Type"]) for d in docs]))
    return live


def live_from_fixture(case: FixtureCase) -> LiveCase:
    """An invented case in the live formats (for the benchmark: no dataset needed)."""
    images = [LiveImage(i.name, _uuid("fig" + i.name),
                        {"ACR Codes": i.acr, "Age": case.age, "Caption": i.caption, "Figure Part": i.figure_part,
                         "Modality": i.modality, "Plane": i.plane, "Sex": case.sex},
                        png_bytes(zlib.crc32(i.name.encode()) % 10000), case.image_type(i)) for i in case.images]
    return LiveCase(case.uid, _uuid("enc" + case.uid), _uuid("top" + case.uid), case.case, case.topic,
                    case.location, images)


#: Open-i abstract labels (per the 2017 BioVida sample records) and the release fields they hold.
ABSTRACT_ORDER = (("Diagnosis", "Case Diagnosis"), ("History", "History"), ("Findings", "Findings"),
                  ("Ddx", "Differential Diagnosis"), ("Dxhow", "Diagnosis By"), ("Exam", "Exam"))
#: The release's Case/Topic field -> the REST key that serves it (the scraper's mapping, inverted).
ENCOUNTER_KEYS = {"Title": "title", "History": "history", "Exam": "exam", "Findings": "findings",
                  "Differential Diagnosis": "ddx", "Case Diagnosis": "diagnosis", "Diagnosis By": "dxHow",
                  "Treatment & Follow Up": "txFollowup", "Discussion": "discussion"}
TOPIC_KEYS = {"Title": "title", "Disease Discussion": "factoid", "ACR Code": "acrCode", "Category": "subCategory",
              "Reference": "reference", "External Links": "url", "Keywords": "keyword1"}
IMAGE_KEYS = {"ACR Codes": "acrCode", "Caption": "imageCaption", "Figure Part": "figurePart",
              "Modality": "modality", "Plane": "plane"}
PUBLIC_MEDPIX = "https://medpix.nlm.nih.gov"

#: The case page as a plain GET gets it: an AngularJS-style shell. Its script fetches the case
#: after load and replaces the template with ``section ng-scope`` blocks.
CASE_SHELL = """<!DOCTYPE html>
<html ng-app="medpixApp"><head><meta charset="utf-8"><title>MedPix</title></head>
<body><nav><a href="/">Home</a> Cases | Topics</nav>
<div id="app" ng-controller="CaseController as vm">
  <h1 class="case-title">{{vm.case.title}}</h1>
  <div class="section" ng-repeat="s in vm.case.sections">
    <h3 class="section-title">{{s.label}}</h3><div class="section-text">{{s.text}}</div></div>
  <div class="topic"><h2>Topic</h2><div class="section" ng-repeat="s in vm.topic.sections">
    <h3 class="section-title">{{s.label}}</h3><div class="section-text">{{s.text}}</div></div></div>
</div>
<script src="/static/medpix-case.js"></script>
</body></html>
"""
CASE_SCRIPT = """
(function () {
  var id = new URLSearchParams(location.search).get('id');
  function section(label, text) {
    var s = document.createElement('div'); s.className = 'section ng-scope';
    var h = document.createElement('h3'); h.className = 'section-title'; h.textContent = label;
    var t = document.createElement('div'); t.className = 'section-text'; t.style.whiteSpace = 'pre-wrap';
    t.textContent = text; s.appendChild(h); s.appendChild(t); return s;
  }
  function part(cls, heading, pairs, attrs) {
    var d = document.createElement('div'); d.className = cls + ' ng-scope';
    Object.keys(attrs || {}).forEach(function (k) { d.setAttribute(k, attrs[k]); });
    if (heading) { var h = document.createElement('h2'); h.textContent = heading; d.appendChild(h); }
    pairs.forEach(function (p) { d.appendChild(section(p[0], p[1])); });
    return d;
  }
  setTimeout(function () {
    fetch('/app/case-data?id=' + encodeURIComponent(id)).then(function (r) { return r.json(); })
      .then(function (data) {
        var app = document.getElementById('app'); app.innerHTML = ''; app.className = 'ng-scope';
        var h1 = document.createElement('h1'); h1.className = 'case-title'; h1.textContent = data.title;
        app.appendChild(h1);
        app.appendChild(part('case', '', data.case));
        app.appendChild(part('topic', 'Topic', data.topic));
        app.appendChild(part('image-details', '', data.image.fields, {'data-image-id': data.image.name}));
      });
  }, 20);
})();
"""


def _abstract(case: dict[str, str]) -> str:
    return "".join(f"<p><b>{label}: </b>{case[name]}</p>" for label, name in ABSTRACT_ORDER if name in case)


@dataclass
class Scripted:
    """One scripted answer: status, body, content type, and a delay before answering."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    delay: float = 0.0


class FixtureSite:
    """A local site serving Open-i, MedPix pages and images for a set of fixture cases."""

    def __init__(self) -> None:
        self.cases: dict[str, FixtureCase] = {}
        self.pages: dict[str, str] = {}          # page id -> html
        self.files: dict[str, bytes] = {}        # path -> image bytes
        self.records: dict[str, list[dict[str, Any]]] = {}  # query (upper) -> Open-i records
        self.scripts: dict[str, list[Scripted]] = {}
        self.live: dict[str, LiveCase] = {}
        self.json: dict[tuple[str, str], Any] = {}   # (REST kind, id) -> answer
        self.app_data: dict[str, Any] = {}           # figure id -> what the case page's script fetches
        self.redirects: dict[str, str] = {}          # path -> Location
        self.rest_enabled = True
        self.log: list[str] = []
        self._lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
            disable_nagle_algorithm = True  # else each small write waits for a delayed ACK

            def do_GET(self) -> None:
                site._serve(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FixtureSite:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- content -------------------------------------------------------------------------
    def image_path(self, img: FixtureImage) -> str:
        return f"/imgs/512/1/{img.name.split('_')[0][3:]}/{img.name}.png"

    def page_url(self, page_id: str) -> str:
        return f"{self.url}/case?id={page_id}"

    def add_case(self, case: FixtureCase, seed: int | None = None) -> FixtureCase:
        """Serve a case: its page(s), its images and its Open-i records."""
        self.cases[case.uid] = case
        shown_elsewhere = {n for names in case.extra_pages.values() for n in names}
        self.pages[case.page_id] = render_page(case, [i for i in case.images if i.name not in shown_elsewhere])
        for page_id, names in case.extra_pages.items():
            self.pages[page_id] = render_page(case, [i for i in case.images if i.name in names])
        for k, img in enumerate(case.images):
            self.files[self.image_path(img)] = png_bytes((seed or 0) * 1000 + zlib.crc32(img.name.encode()) % 1000 + k)
            page_id = next((p for p, names in case.extra_pages.items() if img.name in names), case.page_id)
            self.records.setdefault(case.uid.upper(), []).append(self.record(case, img, page_id))
        return case

    def record(self, case: FixtureCase, img: FixtureImage, page_id: str) -> dict[str, Any]:
        """An Open-i search record for one MedPix image, in the API's shape."""
        abstract = "".join(f"<p><b>{k}:</b> {html.escape(v)}</p>" for k, v in case.case.items()
                           if k in ("History", "Findings"))
        return {
            "uid": img.name, "pmcid": "", "docSource": "MPX", "articleType": "ca",
            "title": case.case["Title"], "fulltext_html_url": self.page_url(page_id),
            "abstract": abstract, "MeSH": {"major": [], "minor": []}, "Problems": "",
            "image": {"id": img.name.split("_")[1], "caption": img.caption, "mention": ""},
            "imgLarge": self.image_path(img), "imgThumb": self.image_path(img).replace("/512/", "/thumb/"),
            "imgGrid150": "", "detailedQueryURL": f"/detailedresult?img={img.name}&req=4",
        }

    def live_image_path(self, case: LiveCase, img: LiveImage) -> str:
        return f"/imgs/512/{int(case.uid[3:]) % 400}/{case.uid[3:]}/{img.name}.png"

    def add_live(self, case: LiveCase) -> LiveCase:
        """Serve a case in the live formats: Open-i records, REST JSON, the scripted case page, images."""
        self.live[case.uid] = case
        sex = {"male": "male", "female": "female"}.get(str(case.images[0].description.get("Sex")))
        image_list = []
        for img, synpic in zip(case.images, case.synpics, strict=True):
            d = img.description
            obj = {"imageID": img.figure_id, "tmpImageID": None, "imageName": synpic,
                   "imageURL": f"/images/full/{synpic}.png", "thumbImageURL": f"/images/thumb/{synpic}.png",
                   **{key: d.get(name) for name, key in IMAGE_KEYS.items()},
                   "encounterID": case.encounter_id, "topicID": case.topic_id, "show": True, "deleted": False}
            image_list.append(obj)
            self.json[("image", img.figure_id)] = obj
            self.files[self.live_image_path(case, img)] = img.png
            self.files[f"/cdn/medpix/img/full/{synpic}.png"] = img.png
            self.redirects[f"/images/full/{synpic}.png"] = f"/cdn/medpix/img/full/{synpic}.png"
            self.records.setdefault(case.uid.upper(), []).append({
                "uid": case.uid, "pmcid": "", "docSource": "MPX", "articleType": "ca",
                "title": case.case.get("Title", ""),
                "fulltext_html_url": f"{PUBLIC_MEDPIX}/bycase?id={case.encounter_id}",
                "medpixArticleId": case.encounter_id, "medpixFigureId": img.figure_id,
                "medpixImageURL": f"{PUBLIC_MEDPIX}/case?id={img.figure_id}",
                "abstract": _abstract(case.case), "MeSH": {"major": [], "minor": []}, "Problems": "",
                "journal_date": {"year": "2017", "month": "01", "day": "01"},
                "image": {"id": img.name, "caption": d.get("Caption") or "", "modalityMajor": img.kind.lower(),
                          "mention": ""},
                "imgLarge": self.live_image_path(case, img),
                "imgThumb": self.live_image_path(case, img).replace("/512/", "/100/"),
                "detailedQueryURL": f"retrieve.php?img={img.name}&query=&coll=mpx&req=4"})
            pairs = [[name, d[name]] for name in ("Modality", "Plane", "Caption", "Figure Part", "ACR Codes")
                     if d.get(name) is not None]
            patient = [[k, v] for k, v in (("Age", d.get("Age")), ("Sex", d.get("Sex"))) if v]
            self.app_data[img.figure_id] = {
                "title": case.case.get("Title", ""),
                "case": [[k, v] for k, v in case.case.items() if k != "Title"] + patient,
                "topic": [[k, v] for k, v in case.topic.items()] + [["Location", case.location]],
                "image": {"name": img.name, "fields": pairs}}
        self.json[("encounter", case.encounter_id)] = {
            "encounterID": case.encounter_id, "mCaseID": case.uid[3:],
            **{key: case.case.get(name) for name, key in ENCOUNTER_KEYS.items()},
            "age": case.images[0].description.get("Age"), "sex": sex, "race": None, "topicID": case.topic_id,
            "imageList": image_list, "mediaList": []}
        self.json[("topic", case.topic_id)] = {
            "topicID": case.topic_id, **{key: case.topic.get(name) for name, key in TOPIC_KEYS.items()},
            "keyword2": None, "keyword3": None, "preacr": None, "postacr": None, "location": case.location,
            "subLocation": None, "categoryID": None, "relatedTopics": None}
        return case

    def script(self, path: str, *answers: Scripted) -> None:
        """Serve these answers (in order) for ``path`` (with its query) before the normal one."""
        self.scripts.setdefault(path, []).extend(answers)

    def overview_csv(self, path: Path, uids: list[str] | None = None) -> Path:
        """An ``images_overview.csv`` for (some of) the served cases, pointing at this site."""
        lines = ["Type,U_id,ID_Image,Img_Large,URL_Article_image"]
        for case in self.cases.values():
            if uids is not None and case.uid not in uids:
                continue
            for img in case.images:
                page_id = next((p for p, n in case.extra_pages.items() if img.name in n), case.page_id)
                kind = "TAC" if case.image_type(img) == "CT" else "MRI"
                lines.append(f"{kind},{case.uid},{img.name},{self.url}/{self.image_path(img)},"
                             f"{self.page_url(page_id)}")
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def count(self, prefix: str = "") -> int:
        """Requests received whose path starts with ``prefix``."""
        with self._lock:
            return sum(p.startswith(prefix) for p in self.log)

    # --- serving -------------------------------------------------------------------------
    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.replace("//", "/")
        with self._lock:
            self.log.append(path)
            queue = self.scripts.get(path)
            scripted = queue.pop(0) if queue else None
        answer = scripted or self._answer(path)
        if answer.delay:
            time.sleep(answer.delay)
        try:
            handler.send_response(answer.status)
            if answer.status in (301, 302):
                handler.send_header("Location", answer.body.decode())
                answer = Scripted(answer.status, b"")
            handler.send_header("Content-Type", answer.content_type)
            handler.send_header("Content-Length", str(len(answer.body)))
            handler.end_headers()
            handler.wfile.write(answer.body)
        except OSError:
            pass  # the client gave up (a timeout test)

    def _answer(self, path: str) -> Scripted:
        url = urlparse(path)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/api/search":
            return self._search(params)
        if url.path == "/case" and params.get("id") in self.pages:
            return Scripted(body=self.pages[params["id"]].encode("utf-8"))
        if url.path == "/case" and params.get("id") in self.app_data:
            return Scripted(body=CASE_SHELL.encode("utf-8"))
        if url.path == "/static/medpix-case.js":
            return Scripted(body=CASE_SCRIPT.encode("utf-8"), content_type="application/javascript")
        if url.path == "/app/case-data" and params.get("id") in self.app_data:
            return Scripted(body=json.dumps(self.app_data[params["id"]]).encode("utf-8"),
                            content_type="application/json;charset=UTF-8")
        if url.path.startswith("/rest/") and url.path.endswith(".json"):
            kind = url.path[len("/rest/"):-len(".json")]
            key = (kind, params.get(f"{kind}ID", ""))
            if self.rest_enabled and key in self.json:
                return Scripted(body=json.dumps(self.json[key]).encode("utf-8"),
                                content_type="application/json;charset=UTF-8")
            return Scripted(404, b'{"error": "not found"}', content_type="application/json")
        if url.path in self.redirects:
            return Scripted(302, self.redirects[url.path].encode())
        if url.path in self.files:
            return Scripted(body=self.files[url.path], content_type="image/png")
        return Scripted(404, b"<html><body>Not found</body></html>")

    def overview_live(self, path: Path) -> Path:
        """An ``images_overview.csv`` for the live cases, with the public hosts (as the release has them)."""
        lines = ["Type,U_id,ID_Image,Img_Large,URL_Article_image"]
        for case in self.live.values():
            for img in case.images:
                lines.append(f"{'TAC' if img.kind == 'CT' else 'MRI'},{case.uid},{img.name},"
                             f"https://openi.nlm.nih.gov/{self.live_image_path(case, img)},"
                             f"{PUBLIC_MEDPIX}/case?id={img.figure_id}")
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def _search(self, params: dict[str, str]) -> Scripted:
        query = params.get("query", "").upper()
        if params.get("coll") not in (None, "mpx"):
            found: list[dict[str, Any]] = []
        elif query in self.records:
            found = self.records[query]
        else:
            found = [r for recs in self.records.values() for r in recs
                     if query and (query in r["title"].upper() or query in r["image"]["caption"].upper())]
        m, n = int(params.get("m", 1)), int(params.get("n", 10))
        page = found[m - 1:n]
        body = {"total": len(found), "min": m, "max": m + len(page) - 1, "count": len(page),
                "approximage": len(found), "list": page}
        return Scripted(body=json.dumps(body).encode("utf-8"), content_type="application/json;charset=UTF-8")
