"""Parse a MedPix case page into Case, Topic and per-image fields, by label, never by position.

The live pages change their markup over time, so the parser only trusts the labels a reader
sees ("History", "ACR Code", "Modality"...). It walks the page's text blocks in document
order; a block that is a known label (``<h2>History</h2>``, ``<dt>Plane</dt>``,
``<th>Modality:</th>``) or starts with one (``<p><b>History:</b> text</p>``, a line
``Plane: Axial``) opens that field, and the following blocks fill it until the next label,
heading, or the end of the table row or list that holds it.

Which record a label belongs to (case, topic, or one image) is decided by scope:

* an element whose id, class or ``data-section`` names ``topic`` (or ``case``) scopes its
  content; so does a heading that reads "Topic" or "Case";
* an element whose ``data-image-id``, ``data-image`` or id holds a ``synpicNNN`` id, or a
  ``<figure>`` (or "figure"/"image" class) holding an ``<img>`` of one, scopes one image; so does a heading
  like "Image 2: MPX1009_synpic46283";
* labels that only make sense elsewhere are routed there (``ACR Code`` in the case part
  goes to the topic; ``Age``/``Sex``/``Location`` outside an image are patient defaults;
  ``Modality`` outside any image block goes to an anonymous image, ``""``).

Unknown text before the first label is ignored; navigation, scripts and forms are skipped.

The live MedPix case page is an AngularJS application: a plain GET gets a shell whose
``{{...}}`` template text is filled in only once the page's scripts have fetched the case.
:func:`parse_page` refuses such a page (:class:`PageNotRendered`), and reads a rendered page's
``class="section"`` blocks (a heading naming the field, then its text) keeping the text
exactly as the DOM holds it: line breaks and runs of spaces included.
"""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass, field

from bs4 import BeautifulSoup, Comment, NavigableString, Tag
from bs4.element import Declaration, Doctype, ProcessingInstruction

#: Field names in the order of the release's ``Case`` and ``Topic`` objects.
CASE_FIELDS = ("Title", "History", "Exam", "Findings", "Differential Diagnosis", "Case Diagnosis",
               "Diagnosis By", "Treatment & Follow Up", "Discussion")
TOPIC_FIELDS = ("Title", "Disease Discussion", "ACR Code", "Category", "Keywords", "Reference", "External Links")

_SKIP = frozenset({"script", "style", "noscript", "template", "nav", "header", "footer", "form", "button",
                   "select", "head", "svg", "iframe", "title", "object", "canvas"})
_BLOCK = frozenset({"address", "article", "aside", "blockquote", "body", "caption", "dd", "details", "div", "dl",
                    "dt", "fieldset", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "html",
                    "li", "main", "ol", "p", "pre", "section", "summary", "table", "tbody", "td", "tfoot", "th",
                    "thead", "tr", "ul"})
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
#: Label/value structures: a field opened inside one ends with it.
_PAIRS = frozenset({"table", "tr", "dl"})
_EMPHASIS = frozenset({"b", "strong", "label", "span", "em", "i", "u"})
_BR = "\x00"
_SYNPIC = re.compile(r"synpic\d+", re.IGNORECASE)
_IMAGE_HEADING = re.compile(r"^(image|figure|fig\.?)\b", re.IGNORECASE)
_PLAIN_LABEL = re.compile(r"\s*([A-Za-z][A-Za-z &/\-]{1,40}?)\s*:")
_MARKERS = {"topic": "topic", "topic information": "topic", "disease topic": "topic",
            "case": "case", "case information": "case", "clinical case": "case"}


def _norm(label: str) -> str:
    """Normalise a label for lookup: case, spacing, '&'/'and', trailing colon."""
    text = label.replace("\xa0", " ").lower().replace("follow-up", "follow up").replace("/", " & ")
    text = re.sub(r"\s+", " ", text).strip().rstrip(":").strip()
    return text.replace(" and ", " & ")


def _table(*pairs: tuple[str, str, str]) -> dict[str, tuple[str, str]]:
    return {_norm(alias): (target, name) for alias, target, name in pairs}


_CASE_LABELS = _table(
    ("title", "case", "Title"), ("case title", "case", "Title"), ("history", "case", "History"),
    ("exam", "case", "Exam"), ("physical exam", "case", "Exam"), ("findings", "case", "Findings"),
    ("imaging findings", "case", "Findings"), ("differential diagnosis", "case", "Differential Diagnosis"),
    ("ddx", "case", "Differential Diagnosis"), ("case diagnosis", "case", "Case Diagnosis"),
    ("diagnosis", "case", "Case Diagnosis"), ("diagnosis by", "case", "Diagnosis By"),
    ("treatment & follow up", "case", "Treatment & Follow Up"), ("follow up", "case", "Treatment & Follow Up"),
    ("discussion", "case", "Discussion"), ("case discussion", "case", "Discussion"),
    ("topic title", "topic", "Title"), ("disease discussion", "topic", "Disease Discussion"),
    ("acr code", "topic", "ACR Code"), ("category", "topic", "Category"), ("keywords", "topic", "Keywords"),
    ("keyword", "topic", "Keywords"), ("reference", "topic", "Reference"), ("references", "topic", "Reference"),
    ("external links", "topic", "External Links"),
    ("age", "patient", "Age"), ("patient age", "patient", "Age"), ("sex", "patient", "Sex"),
    ("gender", "patient", "Sex"), ("location", "patient", "Location"),
    ("modality", "image", "Modality"), ("plane", "image", "Plane"), ("caption", "image", "Caption"),
    ("figure part", "image", "Figure Part"), ("acr codes", "image", "ACR Codes"),
)
_TOPIC_LABELS = {**_CASE_LABELS, **_table(("title", "topic", "Title"), ("discussion", "topic", "Disease Discussion"))}
_IMAGE_LABELS = {**_CASE_LABELS, **_table(
    ("acr code", "image", "ACR Codes"), ("age", "image", "Age"), ("patient age", "image", "Age"),
    ("sex", "image", "Sex"), ("gender", "image", "Sex"), ("location", "image", "Location"))}
_LABELS = {"case": _CASE_LABELS, "topic": _TOPIC_LABELS, "image": _IMAGE_LABELS}


@dataclass
class CasePage:
    """What one case page says. ``images`` maps a lower-case ``synpicNNN`` id ("" when unnamed) to its fields."""

    case: dict[str, str] = field(default_factory=dict)
    topic: dict[str, str] = field(default_factory=dict)
    patient: dict[str, str] = field(default_factory=dict)
    images: dict[str, dict[str, str]] = field(default_factory=dict)
    heading: str | None = None
    duplicates: list[str] = field(default_factory=list)


def image_key(name: str) -> str:
    """The key a page uses for an image: its ``synpicNNN`` part, else the whole name, lower-cased."""
    match = _SYNPIC.search(name)
    return (match.group(0) if match else name).lower()


def _raw(node: Tag | NavigableString) -> str:
    """Text of a node with ``<br>`` kept as a marker; skipped elements contribute nothing."""
    if isinstance(node, NavigableString):
        return "" if isinstance(node, (Comment, Doctype, Declaration, ProcessingInstruction)) else str(node)
    if node.name == "br":
        return _BR
    if node.name in _SKIP:
        return ""
    return "".join(_raw(child) for child in node.children if isinstance(child, (Tag, NavigableString)))


def _clean(raw: str) -> str:
    """Collapse whitespace as a browser does; ``<br>`` becomes a newline, ``&nbsp;`` a space."""
    text = re.sub(r"[ \t\r\n\f]+", " ", raw).replace(_BR, "\n").replace("\xa0", " ")
    return "\n".join(line.strip() for line in text.split("\n")).strip()


def _container_scope(el: Tag) -> tuple[str, str] | None:
    """The scope an element opens through its attributes, if any."""
    ident = " ".join(str(el.get(a, "")) for a in ("data-image-id", "data-image", "id"))
    match = _SYNPIC.search(ident)
    if match:
        return ("image", match.group(0).lower())
    tokens = [str(el.get("id", "")).lower(), str(el.get("data-section", "")).lower(),
              *(c.lower() for c in el.get("class") or [])]
    if el.name == "figure" or el.has_attr("data-image-id") or el.has_attr("data-image") or any(
            t in ("image", "figure", "image-details", "image-info") for t in tokens):
        img = el.find("img", src=_SYNPIC)
        return ("image", image_key(str(img["src"])) if img else "")
    if any("topic" in t for t in tokens if t):
        return ("topic", "")
    if any(t == "case" or t.startswith(("case-", "case_")) for t in tokens):
        return ("case", "")
    return None


class _Reader:
    """Walks the page's blocks, tracking scope and the open field."""

    def __init__(self, start: str = "case") -> None:
        self.page = CasePage()
        self.scope: tuple[str, str] = (start, "")
        self.current: tuple[dict[str, str], str] | None = None
        self._nested: dict[int, bool] = {}

    def _has_blocks(self, el: Tag) -> bool:
        """Whether ``el`` holds block elements (memoised: bs4's ``find`` is slow to call per element)."""
        key = id(el)
        if key not in self._nested:
            self._nested[key] = any(
                isinstance(c, Tag) and c.name not in _SKIP and (c.name in _BLOCK or self._has_blocks(c))
                for c in el.children)
        return self._nested[key]

    def _slot(self, hit: tuple[str, str]) -> tuple[dict[str, str], str]:
        target, name = hit
        if target == "image":
            key = self.scope[1] if self.scope[0] == "image" else ""
            return self.page.images.setdefault(key, {}), name
        return getattr(self.page, target), name

    def _open(self, hit: tuple[str, str], text: str) -> None:
        record, name = self._slot(hit)
        if name in record:  # a label seen twice in one record: keep the first value
            self.current = None
            return
        record[name] = ""
        self.current = (record, name)
        self._append(text)

    def _append(self, text: str) -> None:
        if self.current is None or not text:
            return
        record, name = self.current
        record[name] = f"{record[name]}\n\n{text}" if record[name] else text

    def walk(self, el: Tag) -> None:
        run: list[Tag | NavigableString] = []
        for child in el.children:
            if isinstance(child, Tag) and child.name in _SKIP:
                continue
            if isinstance(child, Tag) and (child.name in _BLOCK or self._has_blocks(child)):
                self.block(run)
                run = []
                self.container(child)
            elif isinstance(child, (Tag, NavigableString)):
                run.append(child)
        self.block(run)

    def container(self, el: Tag) -> None:
        scope = _container_scope(el)
        if scope and scope[0] == "image" and scope[1] and scope[1] in self.page.images and self.scope != scope:
            self.page.duplicates.append(scope[1])
            return
        saved = self.scope
        if scope:
            self.scope, self.current = scope, None
        if self._has_blocks(el):
            self.walk(el)
        else:
            self.block(list(el.children), tag=el.name)
        if scope:
            self.scope, self.current = saved, None
        elif el.name in _PAIRS:
            self.current = None

    def block(self, nodes: list, tag: str = "") -> None:
        text = _clean("".join(_raw(n) for n in nodes))
        if not text:
            return
        labels = _LABELS[self.scope[0]]
        hit = labels.get(_norm(text))
        if hit:
            self._open(hit, "")
            return
        marker = _MARKERS.get(_norm(text))
        if marker:
            self.scope, self.current = (marker, ""), None
            return
        synpic = _SYNPIC.search(text)
        if _IMAGE_HEADING.match(text) and synpic:
            self.scope, self.current = ("image", synpic.group(0).lower()), None
            return
        if tag in _HEADINGS:  # a heading that is no label ends the open field
            if tag == "h1" and self.page.heading is None:
                self.page.heading = text
            self.current = None
            return
        for hit, part in _segments(nodes, labels):
            if hit:
                self._open(hit, part)
            else:
                self._append(part)


def _segments(nodes: list, labels: dict[str, tuple[str, str]]) -> list[tuple[tuple[str, str] | None, str]]:
    """Split one block at inline labels (``<b>History:</b>`` or a leading ``Plane:``)."""
    segments: list[tuple[tuple[str, str] | None, list[str]]] = [(None, [])]
    strip_colon = False
    for node in nodes:
        if isinstance(node, Tag):
            label = _clean(_raw(node))
            hit = labels.get(_norm(label)) if label.endswith(":") else None
            if hit is None and node.name in _EMPHASIS and labels.get(_norm(label)):
                after = node.next_sibling
                if isinstance(after, NavigableString) and after.lstrip().startswith(":"):
                    hit, strip_colon = labels[_norm(label)], True
            if hit:
                segments.append((hit, []))
            else:
                segments[-1][1].append(_raw(node))
            continue
        piece = _raw(node)
        if strip_colon:
            piece, strip_colon = piece.lstrip()[1:], False
        so_far = "".join(segments[-1][1])
        if not _clean(so_far) or so_far.rstrip(" \t\r\n").endswith(_BR):  # at the start of a line
            match = _PLAIN_LABEL.match(piece)
            if match and labels.get(_norm(match.group(1))):
                segments.append((labels[_norm(match.group(1))], []))
                piece = piece[match.end():]
        segments[-1][1].append(piece)
    return [(hit, _clean("".join(parts))) for hit, parts in segments if hit or _clean("".join(parts))]


def _soup(html: str) -> BeautifulSoup:
    return BeautifulSoup(html, "html.parser")


class PageNotRendered(ValueError):
    """A page that still shows template text: its scripts never ran (or never finished)."""


_TEMPLATE = re.compile(r"\{\{.*?\}\}", re.DOTALL)


def _exact(node: Tag | NavigableString) -> str:
    """Text of a node exactly as the DOM holds it (``<br>`` is a newline); skipped elements give nothing."""
    return _raw(node).replace(_BR, "\n")


def _template_text(soup: BeautifulSoup) -> str | None:
    """The first ``{{...}}`` left in the page's visible text, if any."""
    match = _TEMPLATE.search(_raw(soup))
    return match.group(0)[:60] if match else None


def _scope_of(el: Tag) -> tuple[str, str]:
    for parent in el.parents:
        if isinstance(parent, Tag) and parent.name != "[document]":
            scope = _container_scope(parent)
            if scope:
                return scope
    return ("case", "")


def _parse_sections(soup: BeautifulSoup, sections: list[Tag]) -> CasePage:
    """A rendered page: each ``section`` block is a heading (the label) and its text."""
    page = CasePage()
    title = soup.find(class_="case-title")
    if isinstance(title, Tag):
        page.heading = _exact(title) or None
    for sec in sections:
        head = sec.find(class_="section-title") or sec.find(list(_HEADINGS))
        if not isinstance(head, Tag):
            continue
        scope = _scope_of(sec)
        hit = _LABELS[scope[0]].get(_norm(_clean(_raw(head))))
        if hit is None:
            continue
        body = sec.find(class_="section-text")
        if isinstance(body, Tag):
            text = _exact(body)
        else:
            text = "".join(_exact(c) for c in sec.children
                           if c is not head and isinstance(c, (Tag, NavigableString))).strip()
        target, name = hit
        if target == "image":
            record = page.images.setdefault(scope[1] if scope[0] == "image" else "", {})
        else:
            record = getattr(page, target)
        if text and name not in record:
            record[name] = text
    return page


def parse_page(html: str) -> CasePage:
    """A case page as served or rendered; raises :class:`PageNotRendered` for an unrendered shell."""
    soup = _soup(html)
    left = _template_text(soup)
    if left:
        raise PageNotRendered(f"page not rendered (template text {left!r} left)")
    sections = [s for s in soup.find_all(class_="section")
                if isinstance(s, Tag) and not s.find_parent(class_="section")]
    if sections:
        return _parse_sections(soup, sections)
    reader = _Reader("case")
    reader.walk(soup)
    return reader.page


def parse_case_page(html: str) -> CasePage:
    """Case, Topic, patient defaults and per-image fields found on a MedPix case page."""
    reader = _Reader("case")
    reader.walk(_soup(html))
    return reader.page


#: Open-i abstract label -> release ``Case`` field.
ABSTRACT_LABELS = {"diagnosis": "Case Diagnosis", "history": "History", "findings": "Findings",
                   "ddx": "Differential Diagnosis", "dxhow": "Diagnosis By", "exam": "Exam",
                   "differential diagnosis": "Differential Diagnosis", "diagnosis by": "Diagnosis By",
                   "treatment & follow up": "Treatment & Follow Up", "discussion": "Discussion"}
_ABSTRACT_LABEL = re.compile(r"(?:<p>\s*)?<(b|strong)>\s*([A-Za-z][A-Za-z &]{0,30}?)\s*:\s*</\1> ?", re.IGNORECASE)


def parse_abstract(text: str) -> dict[str, str]:
    """Case fields from an Open-i abstract (``<p><b>Diagnosis: </b>...</p><p><b>History: </b>...``).

    Each value is the text between its label and the next known label, less the closing
    ``</p>``, entities decoded, line breaks and spaces kept as served.
    """
    marks = [(m, ABSTRACT_LABELS[_norm(m.group(2))]) for m in _ABSTRACT_LABEL.finditer(text)
             if _norm(m.group(2)) in ABSTRACT_LABELS]
    fields: dict[str, str] = {}
    for i, (match, name) in enumerate(marks):
        end = marks[i + 1][0].start() if i + 1 < len(marks) else len(text)
        value = re.sub(r"</p>\s*$", "", text[match.end():end])
        value = html_lib.unescape(value)
        if value.strip() and name not in fields:
            fields[name] = value
    return fields
