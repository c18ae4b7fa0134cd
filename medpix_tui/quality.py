"""The data-quality and leakage report of a bundle: vocabulary, label conflicts, duplicates, splits.

Researchers who train on MedPix 2.0 need to know where its labels are noisy and whether the
same picture sits in two splits. This module finds both, offline, from a bundle alone:

- **vocabulary**: every raw value of the label fields with its count and the clean value it
  maps to (:mod:`.vocabulary`);
- **label conflicts**, by kind: a Modality string or a caption that names the other modality,
  a picture that is no CT or MR slice (a photograph, a drawing, a scanogram), an image whose
  Type disagrees with its case's TAC/MRI lists, age or sex differing between one case's
  images, placeholder ACR codes;
- **duplicates**: identical pixels (a digest of the decoded pixels, so re-encoded copies
  match), near-duplicates (see :data:`NEAR`), and the pairs whose images sit in different
  splits (leakage) with the cases they touch;
- **splits**: per-class counts per split.

The JSON form (:func:`quality_report`) is stable for tools; its keys are documented in
README.md. :func:`render_html` makes one self-contained page with thumbnails.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BundleError
from .progress import Progress, silent
from .query import value_at
from .source import SPLITS
from .vocabulary import FIELDS, NOT_A_SLICE_PLANES, PLACEHOLDER_ACR, clean_age, clean_plane, clean_sex, modality_family

if TYPE_CHECKING:
    import numpy as np

    from .bundle import Bundle

REPORT_VERSION = 1

#: Words that name each modality in a caption. MR names include its sequences: a caption
#: "Axial CT T2 Fat Saturation" under Type CT names an MR sequence.
MODALITY_WORDS = {
    "CT": re.compile(r"\b(CT|CTA|computed tomograph\w*|Hounsfield)\b", re.I),
    "MR": re.compile(r"\b(MRI?|MRA|MRV|T1W?|T2W?|T1-weighted|T2-weighted|FLAIR|DWI|ADC|STIR|FIESTA|SWI|"
                     r"gadolinium|fat[- ]sat\w*|diffusion[- ]weighted|proton density|magnetic resonance)\b", re.I),
}
#: Words in a caption that say the picture is no cross-section.
NOT_A_SLICE_WORDS = re.compile(r"\b(scanogram|scout|topogram|photograph\w*|drawing|illustration|gross)\b", re.I)


@dataclass(frozen=True)
class NearDuplicateRule:
    """When two images count as the same picture.

    Chosen on the release (2050 images, looked at side by side): a perceptual-hash distance
    of at most 2 (of 64 bits) was always the same slice, sometimes in another window; at 4 to
    6 bits different pictures appear (an orbit CT and a skull CT at 6 bits). The image
    embeddings separate most of those, so a pair is a near-duplicate when its hash distance
    is <= ``phash_alone``, or when its cosine is >= ``cosine`` and its hash distance <=
    ``phash_with_cosine``. A cosine means something only for the model it was chosen on
    (``weights_sha256``): a bundle with other embeddings, or none, uses the hash alone.

    The cosine and hash bounds were chosen on the ResNet checkpoint's pairs and rechecked for
    the shipped Lite0 (session 11, every cross-case pair within 12 bits at cosine >= 0.93
    looked at): of its five cross-case pairs four are the same picture filed under two cases
    (cosine 0.951 to 0.982), and one (MPX1674/MPX2094, one split) two neighbouring slices of
    one chest CT at 0.952. A fine-tuned EfficientNet-Lite1 tried since puts other patients'
    neighbouring slices at up to 0.964, so a new model needs its own look before it gets a
    cosine here.
    """

    phash_alone: int = 2
    cosine: float = 0.95
    phash_with_cosine: int = 12
    model: str = "medpix-clip-lite0-128-ft30"
    weights_sha256: str = "3e91db2c186bb43fee2bbe61844318d7a7bdf6472b6deddb4d340b1326794143"


NEAR = NearDuplicateRule()


@dataclass(frozen=True)
class Picture:
    """What the duplicate search needs of one image file."""

    name: str
    pixels_sha256: str
    phash: int


def _picture(bundle: Bundle, name: str) -> Picture:
    import imagehash
    from PIL import Image

    try:
        with Image.open(bundle.image_path(name)) as image:
            image.load()
            digest = hashlib.sha256(f"{image.mode}{image.size}".encode() + image.tobytes()).hexdigest()
            return Picture(name, digest, int(str(imagehash.phash(image)), 16))
    except (OSError, SyntaxError, ValueError) as exc:  # a bundle's images were checked when it was built
        raise BundleError(f"damaged bundle: the image {name} cannot be decoded ({str(exc)[:80]}); "
                          f"'medpix-tui bundle verify {bundle.root}' says which files changed") from None


def pictures(bundle: Bundle, names: Iterable[str], progress: Progress = silent) -> list[Picture]:
    """Pixel digests and perceptual hashes of the images (two threads: decoding releases the GIL)."""
    names = list(names)
    out = []
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        with progress("Hashing images", len(names)) as advance:
            for picture in pool.map(lambda n: _picture(bundle, n), names):
                out.append(picture)
                advance(1)
    finally:  # a stopped progress (see progress.stoppable) leaves the images not yet begun undone
        pool.shutdown(wait=True, cancel_futures=True)
    return out


def _hamming(hashes: list[int]) -> np.ndarray:
    import numpy as np

    bits = np.unpackbits(np.array(hashes, dtype=np.uint64).view(np.uint8).reshape(-1, 8), axis=1).astype(np.int16)
    return bits @ (1 - bits).T + (1 - bits) @ bits.T


def _cosines(bundle: Bundle, names: list[str], rule: NearDuplicateRule) -> np.ndarray | None:
    """Image-embedding cosines in ``names`` order, or None for a bundle without the rule's model."""
    import numpy as np

    folder = bundle.embeddings_dir
    model = bundle.manifest.get("model") or {}
    if model.get("weights_sha256") != rule.weights_sha256 or not (folder / "embeddings.npy").is_file():
        return None
    ids = json.loads((folder / "ids.json").read_text(encoding="utf-8"))
    vectors = np.load(folder / "embeddings.npy").astype(np.float32)
    row = {name: i for i, name in enumerate(ids)}
    if any(n not in row for n in names):
        return None
    vectors = vectors[[row[n] for n in names]]
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return np.asarray(vectors @ vectors.T)


# -- the parts of the report ---------------------------------------------------------

def vocabulary(images: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Every raw value of each label field, most frequent first, with its clean value."""
    table: dict[str, list[dict[str, Any]]] = {}
    for path, cleaner in FIELDS.items():
        counts = Counter(value_at(doc, path) for doc in images)
        table[path] = [{"raw": raw, "count": n, "clean": cleaner(raw)}
                       for raw, n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))]
    return table


def label_conflicts(images: list[dict[str, Any]], cases: dict[str, dict[str, Any]],
                    split_of: dict[str, str | None]) -> dict[str, list[dict[str, Any]]]:
    """Label conflicts by kind; each entry names the image (or case), its split and what disagrees."""
    found: dict[str, list[dict[str, Any]]] = {k: [] for k in (
        "modality_string", "caption_names_other_modality", "not_a_slice", "type_vs_case_lists",
        "case_age_sex", "placeholder_code")}

    def add(kind: str, doc: dict[str, Any], detail: str) -> None:
        found[kind].append({"image": doc.get("image"), "case": doc.get("U_id"),
                            "split": split_of.get(doc.get("U_id", "")), "type": doc.get("Type"), "detail": detail})

    by_case: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for doc in images:
        kind_of_image, desc = str(doc.get("Type")), doc.get("Description") or {}
        by_case[doc.get("U_id", "")].append(doc)
        family = modality_family(desc.get("Modality"))
        if family in ("CT", "MR") and family != kind_of_image:
            add("modality_string", doc, f"Type {kind_of_image}, Modality {desc.get('Modality')!r}")
        caption = desc.get("Caption") or ""
        other = "MR" if kind_of_image == "CT" else "CT"
        named = MODALITY_WORDS[other].search(caption)
        own = MODALITY_WORDS.get(kind_of_image)
        if named and (kind_of_image == "CT" or own is None or not own.search(caption)):
            add("caption_names_other_modality", doc, f"Type {kind_of_image}, caption names {named.group(0)!r}")
        plane = clean_plane(desc.get("Plane"))
        reason = (f"plane {plane!r}" if plane in NOT_A_SLICE_PLANES
                  else f"Modality {desc.get('Modality')!r}" if family == "other"
                  else f"caption says {m.group(0)!r}" if (m := NOT_A_SLICE_WORDS.search(caption)) else None)
        if reason:
            add("not_a_slice", doc, reason)
        case = cases.get(doc.get("U_id", ""))
        if case is not None:
            listed = "CT" if doc.get("image") in (case.get("TAC") or []) else \
                "MR" if doc.get("image") in (case.get("MRI") or []) else None
            if listed != kind_of_image:
                add("type_vs_case_lists", doc, f"Type {kind_of_image}, case lists it under "
                                               f"{'TAC' if listed == 'CT' else 'MRI' if listed == 'MR' else 'neither'}")
        if str(desc.get("ACR Codes") or "").strip() == PLACEHOLDER_ACR:
            add("placeholder_code", doc, f"image ACR code {PLACEHOLDER_ACR}")
    for uid, docs in sorted(by_case.items()):
        ages = {clean_age(value_at(d, "Description.Age")) for d in docs}
        sexes = {clean_sex(value_at(d, "Description.Sex")) for d in docs}
        if len(ages) > 1 or len(sexes) > 1:
            found["case_age_sex"].append({"image": None, "case": uid, "split": split_of.get(uid), "type": None,
                                          "detail": f"ages {sorted(ages, key=str)}, sexes {sorted(sexes, key=str)}"})
    for uid, case in sorted(cases.items()):
        if str(value_at(case, "Topic.ACR Code") or "").strip() == PLACEHOLDER_ACR:
            found["placeholder_code"].append({"image": None, "case": uid, "split": split_of.get(uid), "type": None,
                                              "detail": f"topic ACR code {PLACEHOLDER_ACR}"})
    return found


def duplicates(bundle: Bundle, names: list[str], split_of_image: dict[str, str | None], case_of: dict[str, str],
               rule: NearDuplicateRule = NEAR, progress: Progress = silent) -> dict[str, Any]:
    """Exact and near-duplicate pairs, and those of them that cross splits (leakage)."""
    import numpy as np

    pics = pictures(bundle, names, progress)
    by_digest: dict[str, list[str]] = defaultdict(list)
    for pic in pics:
        by_digest[pic.pixels_sha256].append(pic.name)
    exact = [{"images": group} for group in by_digest.values() if len(group) > 1]
    hamming = _hamming([p.phash for p in pics])
    cosine = _cosines(bundle, names, rule)
    near_mask = hamming <= rule.phash_alone
    if cosine is not None:
        near_mask |= (cosine >= rule.cosine) & (hamming <= rule.phash_with_cosine)
    first, second = np.nonzero(np.triu(near_mask, 1))
    near: list[dict[str, Any]] = []
    for i, j in zip(first.tolist(), second.tolist(), strict=True):
        a, b = names[i], names[j]
        near.append({"a": a, "b": b, "phash_distance": int(hamming[i, j]),
                     "cosine": None if cosine is None else round(float(cosine[i, j]), 4),
                     "same_case": case_of[a] == case_of[b],
                     "splits": [split_of_image.get(a), split_of_image.get(b)]})
    near.sort(key=lambda p: (p["phash_distance"], -(p["cosine"] or 0), p["a"], p["b"]))
    crossing = [p for p in near if p["splits"][0] != p["splits"][1]]
    crossing += [{"a": g["images"][0], "b": other, "phash_distance": 0, "cosine": None, "same_case": False,
                  "splits": [split_of_image.get(g["images"][0]), split_of_image.get(other)]}
                 for g in exact for other in g["images"][1:]
                 if split_of_image.get(g["images"][0]) != split_of_image.get(other)]
    touched = sorted({case_of[n] for p in crossing for n in (p["a"], p["b"])})
    return {
        "rule": {"phash_alone": rule.phash_alone, "cosine": rule.cosine, "phash_with_cosine": rule.phash_with_cosine,
                 "model": rule.model, "embeddings": cosine is not None},
        "exact": exact,
        "near": near,
        "near_cross_case": sum(1 for p in near if not p["same_case"]),
        "leakage": {"pairs": crossing, "cases": touched},
    }


def split_balance(images: list[dict[str, Any]], split_of: dict[str, str | None]) -> dict[str, Any]:
    """Per-class counts per split, for both of the paper's tasks."""
    out: dict[str, Any] = {}
    for task, path in (("modality", "Type"), ("location", "Location Category")):
        table: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SPLITS, 0))
        for doc in images:
            split = split_of.get(doc.get("U_id", ""))
            if split in SPLITS:
                table[str(value_at(doc, path))][split] += 1
        out[task] = {label: counts for label, counts in sorted(table.items())}
    out["images"] = {s: sum(1 for d in images if split_of.get(d.get("U_id", "")) == s) for s in SPLITS}
    out["cases"] = {s: sum(1 for v in split_of.values() if v == s) for s in SPLITS}
    return out


def quality_report(bundle: Bundle, progress: Progress = silent) -> dict[str, Any]:
    """The whole report as plain data (the ``--json`` form); ``progress`` sees the images hashed."""
    started = time.perf_counter()
    store = bundle.store
    images = store.find("Image_Descriptions")
    cases = {c["U_id"]: c for c in store.find("Clinical_Reports")}
    split_of = dict(store.splits())
    split_of_image = {d["image"]: split_of.get(d.get("U_id", "")) for d in images}
    conflicts = label_conflicts(images, cases, split_of)
    dupes = duplicates(bundle, [d["image"] for d in images], split_of_image, {d["image"]: d["U_id"] for d in images},
                       progress=progress)
    return {
        "report": "quality",
        "version": REPORT_VERSION,
        "bundle": {"path": str(bundle.root), "manifest_sha256": bundle.digest,
                   "images": len(images), "cases": len(cases)},
        "vocabulary": vocabulary(images),
        "conflicts": conflicts,
        "conflict_counts": {kind: len(rows) for kind, rows in conflicts.items()},
        "duplicates": {k: v for k, v in dupes.items() if k != "leakage"},
        "leakage": dupes["leakage"],
        "splits": split_balance(images, split_of),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _n(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def summary_lines(report: dict[str, Any], *, timed: bool = True) -> list[str]:
    """What the report found, in a few lines (the command's plain output; ``timed``: with the time it took)."""
    counts = report["conflict_counts"]
    dupes, leak = report["duplicates"], report["leakage"]
    vocab = report["vocabulary"]
    return [
        f"{report['bundle']['images']} images, {report['bundle']['cases']} cases"
        + (f" ({report['seconds']:.1f} s)" if timed else ""),
        "vocabulary: " + ", ".join(f"{path} {len(rows)} raw values" for path, rows in vocab.items()),
        "label conflicts: " + ", ".join(f"{kind.replace('_', ' ')} {n}" for kind, n in counts.items()),
        f"duplicates: {_n(len(dupes['exact']), 'group')} of identical pixels, "
        f"{_n(len(dupes['near']), 'near-duplicate pair')} "
        f"({dupes['near_cross_case']} across cases)"
        + ("" if dupes["rule"]["embeddings"]
           else f"; perceptual hash only (the cosine threshold belongs to {dupes['rule']['model']}'s embeddings, "
                "which this bundle lacks)"),
        f"leakage: {_n(len(leak['pairs']), 'pair')} across splits, touching {_n(len(leak['cases']), 'case')}"
        + (f" ({', '.join(leak['cases'][:12])}{' ...' if len(leak['cases']) > 12 else ''})" if leak["cases"] else ""),
    ]


# -- HTML ----------------------------------------------------------------------------

def _thumbnail(bundle: Bundle, name: str, side: int = 96) -> str:
    from PIL import Image

    try:
        with Image.open(bundle.image_path(name)) as image:
            image.thumbnail((side, side))
            buffer = io.BytesIO()
            image.convert("L").save(buffer, "PNG", optimize=True)
    except OSError:
        return ""
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


#: What a page of ours holds near its start, so ``--force`` replaces a report and nobody's other file.
REPORT_MARK = '<meta name="generator" content="medpix-tui report quality">'


def replaceable_report(path: Path) -> str | None:
    """Why ``path`` is not an earlier quality report that ``--force`` may replace (None: it is one)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    return None if REPORT_MARK.encode() in head else "it is no quality report of this tool"


def render_html(report: dict[str, Any], bundle: Bundle, *, max_rows: int = 300) -> str:
    """One self-contained page (thumbnails inline, no outside link)."""
    esc = html.escape
    thumbs: dict[str, str] = {}

    def img(name: str | None) -> str:
        if not name:
            return ""
        if name not in thumbs:
            thumbs[name] = _thumbnail(bundle, name)
        return f'<img class="thumb" alt="{esc(name)}" src="{thumbs[name]}">' if thumbs[name] else ""

    def table(headers: list[str], rows: Iterable[list[str]], cls: str = "", total: int = 0) -> str:
        head = "".join(f"<th>{esc(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
        cut = (f'<p class="cut">The first {max_rows} of {total} are shown; <code>report quality --json</code> '
               "lists them all.</p>" if total > max_rows else "")
        return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{cut}'

    summary = "<br>".join(esc(line) for line in summary_lines(report, timed=False))
    parts = [f"<h1>MedPix 2.0 quality report</h1><p>{summary}</p>"]
    parts.append('<h2 id="leakage">Leakage: near-duplicates across splits</h2>')
    parts.append(table(["a", "", "b", "", "splits", "hash bits", "cosine"], (
        [img(p["a"]), esc(p["a"]), img(p["b"]), esc(p["b"]), esc(" / ".join(map(str, p["splits"]))),
         str(p["phash_distance"]), "" if p["cosine"] is None else f"{p['cosine']:.3f}"]
        for p in report["leakage"]["pairs"][:max_rows]), "pairs", len(report["leakage"]["pairs"])))
    rule = report["duplicates"]["rule"]
    parts.append(f'<h2 id="near">Near-duplicate pairs</h2><p>Rule: hash distance &le; {rule["phash_alone"]}'
                 + (f', or cosine &ge; {rule["cosine"]} with hash distance &le; {rule["phash_with_cosine"]} '
                    f'({esc(rule["model"])}&#39;s embeddings).</p>' if rule["embeddings"]
                    else ' alone (this bundle lacks the embeddings the cosine threshold was chosen on).</p>'))
    parts.append(table(["a", "", "b", "", "same case", "hash bits", "cosine"], (
        [img(p["a"]), esc(p["a"]), img(p["b"]), esc(p["b"]), "yes" if p["same_case"] else "<b>no</b>",
         str(p["phash_distance"]), "" if p["cosine"] is None else f"{p['cosine']:.3f}"]
        for p in report["duplicates"]["near"][:max_rows]), "pairs", len(report["duplicates"]["near"])))
    parts.append('<h2 id="conflicts">Label conflicts</h2>')
    for kind, rows in report["conflicts"].items():
        parts.append(f"<h3>{esc(kind.replace('_', ' '))} ({len(rows)})</h3>")
        parts.append(table(["", "image", "case", "split", "detail"], (
            [img(r["image"]), esc(str(r["image"] or "")), esc(str(r["case"])), esc(str(r["split"])), esc(r["detail"])]
            for r in rows[:max_rows]), "conflicts", len(rows)))
    parts.append('<h2 id="vocabulary">Vocabulary: raw value &rarr; clean value</h2>')
    for path, rows in report["vocabulary"].items():
        parts.append(f"<h3>{esc(path)} ({len(rows)} raw values)</h3>")
        parts.append(table(["raw", "count", "clean"], (
            [f"<code>{esc(repr(r['raw']))}</code>", str(r["count"]), esc(str(r["clean"]))] for r in rows), "vocab"))
    parts.append('<h2 id="splits">Splits</h2>')
    for task in ("modality", "location"):
        parts.append(f"<h3>{task}</h3>")
        parts.append(table(["class", *SPLITS], (
            [esc(label), *(str(counts[s]) for s in SPLITS)] for label, counts in report["splits"][task].items())))
    style = ("body{font:14px system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
             "margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 6px;vertical-align:middle}"
             "th{background:#eee}.thumb{width:64px;height:64px;object-fit:contain;background:#000}")
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8">{REPORT_MARK}<title>MedPix 2.0 quality report</title>'
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
