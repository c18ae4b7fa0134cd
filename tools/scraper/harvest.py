"""Turn image references into MedPix 2.0 documents: fetch the case pages, merge, curate, download.

One case at a time: its MedPix page(s) give the Case and Topic text and each image's
fields (Open-i's title, abstract and caption fill gaps), the curation rules decide which
images stay, the kept images are downloaded and checked, and the complete case goes to the
:class:`~tools.scraper.writer.SourceWriter`. Every problem becomes one log line and one
entry of the :class:`Report`; one bad case or image never stops the others.
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

from . import openi
from .client import FetchError, Fetcher, FetchStats
from .curation import Curator, modality_type, review_row
from .inputs import ImageRef, refs_from_openi, refs_from_overview
from .locations import location_category
from .medpix import CASE_FIELDS, TOPIC_FIELDS, CasePage, image_key, parse_abstract, parse_case_page
from .writer import SourceWriter, to_png

log = logging.getLogger(__name__)

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
            f"requests: {stats.requests} issued, {stats.fetched} fetched, {stats.cached} from cache, "
            f"{stats.retried} retried",
            f"skipped: {len(self.skipped)}" + (" (" + ", ".join(f"{r}: {n}" for r, n in why.most_common()) + ")"
                                                if why else ""),
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


class Harvester:
    """Builds and hands over one case at a time."""

    def __init__(self, fetcher: Fetcher, curator: Curator, writer: SourceWriter, report: Report) -> None:
        self.fetcher = fetcher
        self.curator = curator
        self.writer = writer
        self.report = report
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

    def _pages(self, refs: list[ImageRef]) -> tuple[dict[str, CasePage], dict[str, str]]:
        pages: dict[str, CasePage] = {}
        errors: dict[str, str] = {}
        for url in dict.fromkeys(r.page_url for r in refs if r.page_url):
            try:
                page = parse_case_page(self.fetcher.get(url).text)
            except FetchError as exc:
                errors[url] = exc.reason
                continue
            if not (page.case or page.topic or page.images):
                self.fetcher.forget(url)
                errors[url] = "no MedPix case sections found (malformed page or not a case page)"
                continue
            for key in page.duplicates:
                log.warning("case page %s: image %s appears twice; keeping the first", url, key)
            pages[url] = page
        return pages, errors

    def case(self, uid: str, refs: list[ImageRef]) -> None:
        """Build one case; report and drop it when it cannot be made complete."""
        pages, errors = self._pages(refs)
        if not pages:
            detail = "; ".join(f"{u}: {r}" for u, r in errors.items()) or "no case page URL known for its images"
            self.report.fail(uid, f"no case page could be read ({detail})")
            return
        found = list(pages.values())
        case = _merge([p.case for p in found] + [parse_abstract(r.abstract) for r in refs if r.abstract], CASE_FIELDS)
        title = case.get("Title") or next((p.heading for p in found if p.heading), None) \
            or next((r.title for r in refs if r.title), None)
        topic = _merge([p.topic for p in found], TOPIC_FIELDS)
        if not title or not topic.get("Title"):
            self.report.fail(uid, f"case page lacks field {'Case.Title' if not title else 'Topic.Title'}")
            return
        case = {"Title": title, **{k: v for k, v in case.items() if k != "Title"}}
        patient = _merge([p.patient for p in found], ("Age", "Sex", "Location"))
        docs, files, overview = [], {}, []
        failures = 0
        for ref in refs:
            try:
                doc = self.image(ref, pages, errors, patient, topic)
                if doc is None:
                    continue
                png = self.download(ref)
            except _Failed as exc:
                self.report.fail(ref.image, str(exc))
                failures += 1
                continue
            docs.append(doc)
            files[ref.image] = png
            overview.append({"Type": "TAC" if doc["Type"] == "CT" else "MRI", "U_id": uid, "ID_Image": ref.image,
                             "Img_Large": ref.image_url, "URL_Article_image": ref.page_url or ""})
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

    def image(self, ref: ImageRef, pages: dict[str, CasePage], errors: dict[str, str],
              patient: dict[str, str], topic: dict[str, str]) -> dict[str, Any] | None:
        """The image document, or None when curation drops it; raises _Failed with the reason."""
        key = image_key(ref.image)
        own = pages.get(ref.page_url or "")
        ordered = ([own] if own else []) + [p for u, p in pages.items() if u != ref.page_url]
        details = next((p.images[key] for p in ordered if key in p.images), None)
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

    def download(self, ref: ImageRef) -> bytes:
        """The image as PNG bytes; raises _Failed when it cannot be fetched or decoded."""
        try:
            fetched = self.fetcher.get(ref.image_url)
        except FetchError as exc:
            raise _Failed(f"image {ref.image_url}: {exc.reason}") from exc
        try:
            return to_png(fetched.content)
        except ValueError as exc:
            self.fetcher.forget(ref.image_url)
            raise _Failed(f"image {ref.image_url}: {exc}") from exc


def run(out: Path, fetcher: Fetcher, *, ids: Sequence[str] = (), query: str | None = None,
        overview: Path | None = None, base: str = openi.DEFAULT_BASE, coll: str = openi.DEFAULT_COLLECTION,
        page_size: int = openi.MAX_PAGE, limit: int | None = None, curator: Curator | None = None,
        force: bool = False, progress: Progress = silent, report: Report | None = None) -> Report:
    """Harvest from exactly one input (case ids, an Open-i query, or an overview CSV) into ``out``."""
    report = report if report is not None else Report()
    with SourceWriter(out, force=force) as writer:
        if overview is not None:
            refs = refs_from_overview(overview)
        else:
            queries = list(dict.fromkeys(ids)) if ids else [query or ""]
            refs = refs_from_openi(fetcher, queries, base=base, coll=coll, page_size=page_size, limit=limit,
                                   progress=progress, on_failure=report.fail)
        harvester = Harvester(fetcher, curator or Curator(), writer, report)
        harvester.run(refs, progress)
        if not report.cases:
            raise NothingHarvestedError(f"nothing harvested: {len(report.failed)} failure(s), "
                                        f"{len(report.skipped)} skipped; {out} not written")
        writer.commit(harvester.review)
        report.written = True
    return report
