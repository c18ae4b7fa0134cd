"""Turn image references into MedPix 2.0 documents: read each case from its sources, curate, download.

One case at a time, its sources in order: MedPix's REST JSON (encounter, topic, image);
where that fails or lacks something, the case pages rendered in a headless browser; the
Open-i record (title, abstract, caption) only as a last resort, and a case whose text came
from the abstract alone is counted as "partial". The curation rules decide which images
stay, the kept images are downloaded (redirects followed) and checked, and the complete case
goes to the :class:`~tools.scraper.writer.SourceWriter`. Every problem becomes one log line
and one entry of the :class:`Report`; one bad case or image never stops the others.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medpix_tui.errors import MedpixError
from medpix_tui.progress import Progress, silent
from medpix_tui.source import is_plain_id

from . import openi
from .client import Fetcher, FetchError, FetchStats
from .curation import Curator, modality_type, review_row
from .inputs import ImageRef, dedupe, is_case_id, refs_from_openi, refs_from_overview
from .locations import location_category
from .medpix import (
    CASE_FIELDS,
    TOPIC_FIELDS,
    CasePage,
    PageNotRendered,
    image_key,
    parse_abstract,
    parse_page,
)
from .render import PlainRenderer, Renderer
from .rest import (
    Encounter,
    RestError,
    RestImage,
    parse_encounter,
    parse_image,
    parse_topic,
)
from .sites import Sites
from .writer import SourceWriter, to_png

log = logging.getLogger(__name__)
#: The sources of a case, in the order they are asked.
SOURCES = ("rest", "page", "openi")

_SEX = {"m": "male", "male": "male", "man": "male", "boy": "male",
        "f": "female", "female": "female", "woman": "female", "girl": "female"}


class NothingHarvestedError(MedpixError):
    """No case survived; no output folder is written."""


class _Failed(Exception):
    """One image cannot be harvested; the message is the reason."""


@dataclass
class Report:
    """Counts and reasons for the end-of-run summary."""

    cases: int = 0
    images: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    written: bool = False
    sources: Counter = field(default_factory=Counter)  # written cases by where their text came from

    def skip(self, ident: str, reason: str) -> None:
        log.info("skipped %s: %s", ident, reason)
        self.skipped.append((ident, reason))

    def fail(self, ident: str, reason: str) -> None:
        log.error("failed %s: %s", ident, reason)
        self.failed.append((ident, reason))

    def lines(self, stats: FetchStats, out: Path) -> list[str]:
        """The summary a person reads at the end of a run."""
        why = Counter(reason for _, reason in self.skipped)
        lines = [
            f"written: {self.cases} case(s), {self.images} image(s) to {out}" if self.written
            else f"written: nothing ({out} unchanged; {self.cases} case(s) were complete)",
            (f"requests: {stats.requests} issued, {stats.fetched} fetched, {stats.cached} from cache, "
             f"{stats.retried} retried"),
            f"skipped: {len(self.skipped)}" + (" (" + ", ".join(f"{r}: {n}" for r, n in why.most_common()) + ")"
                                                if why else ""),
            (f"sources: {self.sources['rest']} REST, {self.sources['rendered']} rendered page, "
             f"{self.sources['partial']} partial (case text from the Open-i abstract only)"),
            f"failed: {len(self.failed)}",
        ]
        return lines + [f"  {ident}: {reason}" for ident, reason in self.failed]


def _merge(records: Iterable[dict[str, str]], names: tuple[str, ...]) -> dict[str, str]:
    """Per field, the first non-empty value, in the release's key order."""
    records = list(records)
    merged = {}
    for name in names:
        value = next((r[name] for r in records if r.get(name)), None)
        if value:
            merged[name] = value
    return merged


def _age(value: str | None) -> str | None:
    if not value:
        return None
    digits = re.search(r"\d+", value)
    return digits.group(0) if digits else value.strip()


def _sex(value: str | None) -> str:
    return _SEX.get((value or "").strip().lower(), "N/A")


@dataclass
class _Rest:
    """What the REST endpoints said about one case."""

    case: dict[str, str] = field(default_factory=dict)
    topic: dict[str, str] = field(default_factory=dict)
    patient: dict[str, str] = field(default_factory=dict)
    images: dict[str, dict[str, str]] = field(default_factory=dict)  # synpic or figure id -> fields
    urls: dict[str, str] = field(default_factory=dict)  # synpic or figure id -> imageURL (as served)
    errors: list[str] = field(default_factory=list)
    image_json_failed: bool = False  # once image.json fails for a case, its other images are not asked


class Harvester:
    """Builds and hands over one case at a time."""

    def __init__(self, fetcher: Fetcher, curator: Curator, writer: SourceWriter, report: Report,
                 sites: Sites | None = None, renderer: Renderer | None = None,
                 sources: tuple[str, ...] = SOURCES) -> None:
        self.fetcher = fetcher
        self.curator = curator
        self.writer = writer
        self.report = report
        self.sites = sites or Sites()
        self.renderer = renderer or PlainRenderer(fetcher)
        self.sources = sources
        self.review: list[dict[str, str]] = []

    def run(self, refs: list[ImageRef], progress: Progress = silent) -> None:
        """Harvest every case the refs name, in first-seen order."""
        groups: dict[str, list[ImageRef]] = {}
        for ref in refs:
            groups.setdefault(ref.uid, []).append(ref)
        with progress("Harvesting cases", len(groups)) as advance:
            for uid, case_refs in groups.items():
                self.case(uid, case_refs)
                advance(1)

    # --- sources --------------------------------------------------------------------------------
    def _json(self, url: str, parse):
        """GET and parse one REST answer; unusable content is evicted so a rerun asks again."""
        fetched = self.fetcher.get(url, remember_missing=True)
        try:
            return parse(fetched.text)
        except RestError:
            self.fetcher.forget(url)
            raise

    def encounter(self, encounter_id: str) -> Encounter:
        """``rest/encounter.json`` for one case; raises FetchError or RestError."""
        return self._json(self.sites.rest("encounter", encounterID=encounter_id), parse_encounter)

    def image_json(self, figure_id: str) -> RestImage:
        """``rest/image.json`` for one image; raises FetchError or RestError."""
        return self._json(self.sites.rest("image", imageID=figure_id), parse_image)

    def _rest(self, uid: str, refs: list[ImageRef]) -> _Rest:
        """The case from REST: encounter (case, patient, image list), topic (and location), image.json for the rest."""
        found = _Rest()
        if "rest" not in self.sources:
            return found
        encounter_id = next((r.encounter_id for r in refs if r.encounter_id), None)
        topic_id = None
        if encounter_id is None:
            first = next((r for r in refs if r.figure_id), None)
            image = self._image_json(found, first) if first else None
            if image is not None:
                encounter_id, topic_id = image.encounter_id, image.topic_id
        try:
            encounter = self.encounter(encounter_id or uid)
        except (FetchError, RestError) as exc:
            found.errors.append(f"encounter.json: {getattr(exc, 'reason', exc)}")
        else:
            found.case = encounter.case
            found.patient = {k: v for k, v in (("Age", encounter.age), ("Sex", encounter.sex)) if v}
            for image in encounter.images:
                for key in (image.synpic, (image.image_id or "").lower()):
                    if key:
                        found.images.setdefault(key, image.fields)
                        if image.url:
                            found.urls.setdefault(key, image.url)
            topic_id = encounter.topic_id or topic_id
        for ref in refs:
            if self._rest_image(found, ref) is None and ref.figure_id and ref.figure_id.lower() not in found.images:
                image = self._image_json(found, ref)
                topic_id = topic_id or (image.topic_id if image else None)
        if topic_id:
            try:
                topic = self._json(self.sites.rest("topic", topicID=topic_id), parse_topic)
            except (FetchError, RestError) as exc:
                found.errors.append(f"topic.json: {getattr(exc, 'reason', exc)}")
            else:
                found.topic = topic.topic
                if topic.location:
                    found.patient["Location"] = topic.location
        elif found.case:
            found.errors.append("encounter.json names no topicID")
        return found

    def _image_json(self, found: _Rest, ref: ImageRef) -> RestImage | None:
        if found.image_json_failed:
            return None
        try:
            image = self.image_json(ref.figure_id or "")
        except (FetchError, RestError) as exc:
            found.errors.append(f"image.json: {getattr(exc, 'reason', exc)}")
            found.image_json_failed = True
            return None
        found.images[(ref.figure_id or "").lower()] = image.fields
        if image.url:
            found.urls[(ref.figure_id or "").lower()] = image.url
        return image

    @staticmethod
    def _rest_image(found: _Rest, ref: ImageRef) -> dict[str, str] | None:
        return found.images.get(image_key(ref.image)) or found.images.get((ref.figure_id or "").lower())

    def _pages(self, refs: list[ImageRef]) -> tuple[dict[str, CasePage], dict[str, str]]:
        pages: dict[str, CasePage] = {}
        errors: dict[str, str] = {}
        for url in dict.fromkeys(r.page_url for r in refs if r.page_url):
            try:
                page = parse_page(self.renderer.render(url).text)
            except FetchError as exc:
                errors[url] = exc.reason
                continue
            except PageNotRendered as exc:
                self.renderer.forget(url)
                errors[url] = str(exc)
                continue
            if not (page.case or page.topic or page.images):
                self.renderer.forget(url)
                errors[url] = "no MedPix case sections found (malformed page or not a case page)"
                continue
            for key in page.duplicates:
                log.warning("case page %s: image %s appears twice; keeping the first", url, key)
            pages[url] = page
        return pages, errors

    def case(self, uid: str, refs: list[ImageRef]) -> None:
        """Build one case from its sources; report and drop it when it cannot be made complete."""
        rest = self._rest(uid, refs)
        lacking = [r for r in refs if self._rest_image(rest, r) is None]
        # the pages are read for every image unless REST (or Open-i) already gives both titles
        titled = (rest.case or {}).get("Title") or ("openi" in self.sources and any(r.title for r in refs))
        need = refs if not (rest.case and rest.topic and titled and rest.topic.get("Title")) else lacking
        pages, errors = self._pages(need) if need and "page" in self.sources else ({}, {})
        found = list(pages.values())
        abstract = [parse_abstract(r.abstract) for r in refs if r.abstract] if "openi" in self.sources else []
        if not (rest.case or any(p.case or p.heading for p in found) or any(abstract)):
            detail = "; ".join(rest.errors + [f"{u}: {r}" for u, r in errors.items()]) \
                or "no case page URL known for its images"
            self.report.fail(uid, f"no source could be read ({detail})")
            return
        case = _merge([rest.case] + [p.case for p in found] + abstract, CASE_FIELDS)
        title = case.get("Title") or next((p.heading for p in found if p.heading), None) \
            or next((r.title for r in refs if r.title and "openi" in self.sources), None)
        topic = _merge([rest.topic] + [p.topic for p in found], TOPIC_FIELDS)
        if not title or not topic.get("Title"):
            why = "; ".join(rest.errors + [f"{u}: {r}" for u, r in errors.items()])
            self.report.fail(uid, f"case lacks field {'Case.Title' if not title else 'Topic.Title'}"
                             + (f" ({why})" if why else ""))
            return
        source = "rest" if rest.case else "rendered" if any(p.case or p.heading for p in found) else "partial"
        case = {"Title": title, **{k: v for k, v in case.items() if k != "Title"}}
        patient = _merge([rest.patient] + [p.patient for p in found], ("Age", "Sex", "Location"))
        docs, files, overview = [], {}, []
        failures = 0
        for ref in refs:
            try:
                doc = self.image(ref, rest, pages, errors, patient, topic)
                if doc is None:
                    continue
                png, url = self.download(ref, rest)
            except _Failed as exc:
                self.report.fail(ref.image, str(exc))
                failures += 1
                continue
            docs.append(doc)
            files[ref.image] = png
            overview.append({"Type": "TAC" if doc["Type"] == "CT" else "MRI", "U_id": uid, "ID_Image": ref.image,
                             "Img_Large": url, "URL_Article_image": ref.page_url or ""})
        if not docs:
            if failures:
                self.report.fail(uid, "no usable image (see the image failures)")
            else:
                self.report.skip(uid, "no CT/MR image kept by curation")
            return
        doc = {"U_id": uid, "TAC": [d["image"] for d in docs if d["Type"] == "CT"],
               "MRI": [d["image"] for d in docs if d["Type"] == "MR"], "Case": case, "Topic": topic}
        self.writer.add_case(doc, docs, files, overview)
        self.report.cases += 1
        self.report.images += len(docs)
        self.report.sources[source] += 1
        if source == "partial":
            log.warning("%s: partial (case text from the Open-i abstract only: %s)", uid, "; ".join(rest.errors))

    def image(self, ref: ImageRef, rest: _Rest, pages: dict[str, CasePage], errors: dict[str, str],
              patient: dict[str, str], topic: dict[str, str]) -> dict[str, Any] | None:
        """The image document, or None when curation drops it; raises _Failed with the reason."""
        key = image_key(ref.image)
        own = pages.get(ref.page_url or "")
        ordered = ([own] if own else []) + [p for u, p in pages.items() if u != ref.page_url]
        details = self._rest_image(rest, ref) or next((p.images[key] for p in ordered if key in p.images), None)
        if details is None and own is not None and list(own.images) == [""]:
            details = own.images[""]
        if details is None:
            why = errors.get(ref.page_url or "")
            raise _Failed(f"its case page failed ({why})" if why else "no fields for this image on its case page")
        if not details.get("Modality"):
            raise _Failed("missing field Modality on its case page")
        description = {
            "ACR Codes": details.get("ACR Codes"),
            "Age": _age(details.get("Age") or patient.get("Age")),
            "Caption": details.get("Caption") or ref.caption,
            "Figure Part": details.get("Figure Part"),
            "Modality": details["Modality"],
            "Plane": details.get("Plane"),
            "Sex": _sex(details.get("Sex") or patient.get("Sex")),
        }
        verdict = self.curator.judge(ref.image, ref.uid, description)
        if verdict.reasons or verdict.overridden:
            self.review.append(review_row(ref.image, ref.uid, description, verdict))
        if not verdict.keep:
            self.report.skip(ref.image, "curation: " + (",".join(verdict.reasons) or "dropped by override"))
            return None
        kind = modality_type(description["Modality"])
        if ref.type_hint and ref.type_hint != kind:
            log.warning("%s: input says %s but its modality %r is %s; using %s",
                        ref.image, ref.type_hint, description["Modality"], kind, kind)
        location = details.get("Location") or patient.get("Location")
        if not location:
            raise _Failed("missing field Location on its case page")
        category = location_category(location, topic.get("ACR Code"), description["ACR Codes"])
        if category is None:
            raise _Failed(f"cannot map Location {location!r} to a Location Category")
        return {"Type": kind, "U_id": ref.uid, "image": ref.image, "Description": description,
                "Location": location, "Location Category": category}

    def download(self, ref: ImageRef, rest: _Rest) -> tuple[bytes, str]:
        """The image as PNG bytes and the URL that gave it; raises _Failed when it cannot be had.

        Open-i's ``imgLarge`` first; when that fails (a 404, an HTML error page where the image
        should be), MedPix's own ``imageURL`` for the image (from the encounter, else asked of
        ``image.json``, as radbench loads MedPix images), whose redirect to the CDN is followed.
        """
        try:
            return self._png(ref.image_url), ref.image_url
        except _Failed as first:
            if "rest" not in self.sources:
                raise
            served = self._rest_url(rest, ref)
            url = self.sites.url(served) if served else None
            if url is None or url == ref.image_url:
                raise
            try:
                png = self._png(url)
            except _Failed as second:
                raise _Failed(f"{first}; MedPix's own {second}") from second
            log.warning("%s: %s; took MedPix's own %s", ref.image, first, url)
            return png, url

    def _rest_url(self, rest: _Rest, ref: ImageRef) -> str | None:
        """MedPix's ``imageURL`` for the image: as the case's REST answers gave it, else from image.json."""
        for key in (image_key(ref.image), (ref.figure_id or "").lower()):
            if key and key in rest.urls:
                return rest.urls[key]
        if not ref.figure_id or rest.image_json_failed:
            return None
        try:
            return self.image_json(ref.figure_id).url
        except (FetchError, RestError):
            return None

    def _png(self, url: str) -> bytes:
        try:
            fetched = self.fetcher.get(url)
        except FetchError as exc:
            raise _Failed(f"image {url}: {exc.reason}") from exc
        try:
            return to_png(fetched.content)
        except ValueError as exc:
            self.fetcher.forget(url)
            raise _Failed(f"image {url}: {exc}") from exc


def refs_from_rest(harvester: Harvester, uid: str) -> list[ImageRef]:
    """The images of case ``uid`` as its REST encounter lists them (for a case Open-i cannot find)."""
    encounter = harvester.encounter(uid)
    refs = []
    for i, image in enumerate(encounter.images, 1):
        figure = image.image_id
        # MedPix names images synpicNNN; one listed by its uuid alone keeps the uuid as its name
        name = image.synpic or (figure if is_plain_id(figure) else None)
        if not (name and image.url):
            harvester.report.skip(f"{uid} image {i}", "the REST encounter lists it without "
                                  + ("a URL" if name else "a synpic name or a usable image id"))
            continue
        refs.append(ImageRef(f"{uid}_{name}", uid, harvester.sites.url(image.url),
                             harvester.sites.case_page(figure) if figure else None,
                             figure_id=figure, encounter_id=encounter.encounter_id or uid))
    return refs


def run(out: Path, fetcher: Fetcher, *, ids: Sequence[str] = (), query: str | None = None,
        overview: Path | None = None, base: str = openi.DEFAULT_BASE, coll: str = openi.DEFAULT_COLLECTION,
        page_size: int = openi.MAX_PAGE, limit: int | None = None, curator: Curator | None = None,
        force: bool = False, progress: Progress = silent, report: Report | None = None,
        medpix_base: str | None = None, renderer: Renderer | None = None) -> Report:
    """Harvest from exactly one input (case ids, an Open-i query, or an overview CSV) into ``out``.

    ``renderer`` renders case pages (a :class:`~tools.scraper.render.ChromiumRenderer`); by
    default pages are read as a plain GET returns them.
    """
    report = report if report is not None else Report()
    sites = Sites(openi=base, medpix=medpix_base or Sites().medpix)
    with SourceWriter(out, force=force) as writer:
        harvester = Harvester(fetcher, curator or Curator(), writer, report, sites, renderer)
        if overview is not None:
            refs = refs_from_overview(overview, sites)
        else:
            queries = list(dict.fromkeys(ids)) if ids else [query or ""]
            missing: dict[str, str] = {}
            refs = refs_from_openi(fetcher, queries, base=sites, coll=coll, page_size=page_size, limit=limit,
                                   progress=progress, on_failure=missing.__setitem__ if ids else report.fail)
            for uid, why in missing.items():
                try:
                    extra = refs_from_rest(harvester, uid.upper()) if is_case_id(uid) else []
                except (FetchError, RestError) as exc:
                    report.fail(uid, f"{why}; REST encounter: {getattr(exc, 'reason', exc)}")
                    continue
                if not extra:
                    report.fail(uid, f"{why}; REST encounter lists no image")
                refs.extend(extra)
            refs = dedupe(refs)
        harvester.run(refs, progress)
        if not report.cases:
            raise NothingHarvestedError(f"nothing harvested: {len(report.failed)} failure(s), "
                                        f"{len(report.skipped)} skipped; {out} not written")
        writer.commit(harvester.review)
        report.written = True
    return report
