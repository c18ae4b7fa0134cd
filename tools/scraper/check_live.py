"""``python -m tools.scraper check-live --id MPX1009``: recheck the format assumptions on the live sites.

Fetches one case through each source on its own (MedPix REST JSON, the case pages rendered in
headless chromium, the Open-i record) and prints, field by field, whether each source gives
what the release's JSON holds for that case. Needs network (or ``--medpix-base``/
``--openi-base`` pointing at a mirror); writes nothing but its response cache.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from medpix_tui.cli.options import OneLineCommand, OutputPath
from medpix_tui.errors import MedpixError

from . import openi
from .cache import ResponseCache
from .cli import http_base
from .client import DEFAULT_USER_AGENT, Fetcher, FetchError
from .compare import MISSING, flatten
from .curation import modality_type
from .harvest import (
    CASE_FIELDS,
    TOPIC_FIELDS,
    Harvester,
    Report,
    _age,
    _merge,
    _sex,
    refs_from_rest,
)
from .inputs import ImageRef, refs_from_openi
from .locations import location_category
from .medpix import image_key, parse_abstract
from .render import ChromiumRenderer, RendererUnavailable
from .rest import RestError
from .sites import MEDPIX_BASE, Sites
from .writer import check_can_write_in


def _docs(uid: str, refs: list[ImageRef], case: dict[str, str], topic: dict[str, str], patient: dict[str, str],
          images: dict[str, dict[str, str]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    docs = []
    for ref in refs:
        d = images.get(image_key(ref.image)) or images.get((ref.figure_id or "").lower())
        if d is None:
            continue
        desc = {"ACR Codes": d.get("ACR Codes"), "Age": _age(d.get("Age") or patient.get("Age")),
                "Caption": d.get("Caption"), "Figure Part": d.get("Figure Part"), "Modality": d.get("Modality"),
                "Plane": d.get("Plane"), "Sex": _sex(d.get("Sex") or patient.get("Sex"))}
        location = d.get("Location") or patient.get("Location")
        kind = modality_type(desc["Modality"])
        doc: dict[str, Any] = {"image": ref.image, "U_id": uid, "Description": desc}
        if kind:
            doc["Type"] = kind
        if location:
            doc["Location"] = location
            category = location_category(location, topic.get("ACR Code"), desc["ACR Codes"])
            if category:
                doc["Location Category"] = category
        docs.append(doc)
    case_doc = {"U_id": uid, "Case": case, "Topic": topic,
                "TAC": [d["image"] for d in docs if d.get("Type") == "CT"],
                "MRI": [d["image"] for d in docs if d.get("Type") == "MR"]}
    return case_doc, docs


def _release(release: Path, uid: str) -> dict[str, Any]:
    cases = [c for c in json.loads((release / "Case_topic.json").read_text("utf-8")) if c["U_id"] == uid]
    images = [d for d in json.loads((release / "Descriptions.json").read_text("utf-8")) if d["U_id"] == uid]
    return flatten(cases, images)


def _cell(want: Any, got: dict[str, Any], name: str) -> str:
    value = got.get(name, MISSING)
    if value == want:
        return "same"
    if value is MISSING:
        return "absent"
    text = repr(value)
    return f"differs {text[:40] + '...' if len(text) > 43 else text}"


@click.command(cls=OneLineCommand, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--id", "case_id", required=True, metavar="MPX1009", help="One case id of the release.")
@click.option("--release", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=lambda: os.environ.get("MEDPIX_SOURCE", "../shared/medpix-2.0"), show_default="$MEDPIX_SOURCE",
              help="The release folder (Case_topic.json, Descriptions.json) to compare with.")
@click.option("--openi-base", default=openi.DEFAULT_BASE, show_default=True, callback=http_base,
              help="Open-i server.")
@click.option("--medpix-base", default=MEDPIX_BASE, show_default=True, callback=http_base, help="MedPix server.")
@click.option("--cache", type=OutputPath(file_okay=False, path_type=Path),
              help="Response cache to reuse [default: a temporary folder, removed at the end].")
@click.option("--rate", type=click.FloatRange(min=0), default=1.0, show_default=True, help="Requests per second.")
@click.option("--timeout", type=click.FloatRange(min=0.01), default=30.0, show_default=True,
              help="Seconds to wait for each response or page.")
def check_live(case_id: str, release: Path, openi_base: str, medpix_base: str, cache: Path | None, rate: float,
               timeout: float) -> None:
    """Fetch one case through each source and compare it, field by field, with the release.

    \b
    Example (needs network):
      python -m tools.scraper check-live --id MPX1009
    """
    uid = case_id.strip().upper()
    logging.getLogger("tools.scraper").setLevel(logging.ERROR)
    want = _release(release, uid)
    if not want:
        raise click.UsageError(f"{uid} is not a case of {release}")
    if cache is not None:
        try:
            check_can_write_in(cache)
        except MedpixError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
    with tempfile.TemporaryDirectory(prefix="medpix-check-live-") as tmp:
        fetcher = Fetcher(ResponseCache(cache or Path(tmp) / "cache"), rate=rate, retries=2, backoff=1.0,
                          timeout=timeout, user_agent=DEFAULT_USER_AGENT)
        sites = Sites(openi=openi_base, medpix=medpix_base)
        harvester = Harvester(fetcher, None, None, Report(), sites)  # type: ignore[arg-type]
        notes: list[str] = []
        refs = refs_from_openi(fetcher, [uid], base=sites, on_failure=lambda q, r: notes.append(f"Open-i: {r}"))
        if not refs:
            try:
                refs = refs_from_rest(harvester, uid)
            except (FetchError, RestError) as exc:
                notes.append(f"REST encounter by case id: {getattr(exc, 'reason', exc)}")
        got: dict[str, dict[str, Any]] = {}
        rest = harvester._rest(uid, refs)
        notes += [f"REST {e}" for e in rest.errors]
        case_doc, image_docs = _docs(uid, refs, rest.case, rest.topic, rest.patient, rest.images)
        got["rest"] = flatten([case_doc], image_docs)
        try:
            chromium = ChromiumRenderer(fetcher, page_timeout=timeout)
        except RendererUnavailable as exc:
            notes.append(f"rendered: {exc}")
            got["rendered"] = {}
        else:
            harvester.renderer = chromium
            try:
                pages, errors = harvester._pages(refs)
            finally:
                chromium.close()
            notes += [f"rendered {u}: {r}" for u, r in errors.items()]
            found = list(pages.values())
            case = _merge([p.case for p in found], CASE_FIELDS)
            title = case.get("Title") or next((p.heading for p in found if p.heading), None)
            if title:
                case = {"Title": title, **case}
            images: dict[str, dict[str, str]] = {}
            for ref in refs:
                page = pages.get(ref.page_url or "")
                if page and (image_key(ref.image) in page.images or list(page.images) == [""]):
                    images[image_key(ref.image)] = page.images.get(image_key(ref.image)) or page.images[""]
            case_doc, image_docs = _docs(uid, refs, case, _merge([p.topic for p in found], TOPIC_FIELDS),
                                         _merge([p.patient for p in found], ("Age", "Sex", "Location")), images)
            got["rendered"] = flatten([case_doc], image_docs)
        case = _merge([parse_abstract(r.abstract) for r in refs if r.abstract], CASE_FIELDS)
        title = next((r.title for r in refs if r.title), None)
        if title:
            case = {"Title": title, **case}
        captions = {image_key(r.image): {"Caption": r.caption} for r in refs if r.caption}
        openi_fields = flatten([{"U_id": uid, "Case": case, "Topic": {}}], [])
        openi_fields.update({k: v for k, v in flatten([], [{"image": r.image, "Description": captions[image_key(
            r.image)]} for r in refs if image_key(r.image) in captions]).items() if "Description." in k})
        got["openi"] = openi_fields
    click.echo(f"{uid}: {len(refs)} image(s) found; {len(want)} release fields")
    for note in notes:
        click.echo(f"  note: {note}")
    names = sorted(want)
    width = max(len(n) for n in names)
    click.echo(f"{'field'.ljust(width)}  {'REST':<28}{'rendered':<28}Open-i")
    for name in names:
        cells = [_cell(want[name], got[s], name) for s in ("rest", "rendered", "openi")]
        click.echo(f"{name.ljust(width)}  {cells[0]:<28}{cells[1]:<28}{cells[2]}")
    for source in ("rest", "rendered", "openi"):
        same = sum(got[source].get(n, MISSING) == want[n] for n in names)
        click.echo(f"{source}: {same}/{len(names)} fields identical")
    sys.stdout.flush()
