"""Case and image pages in rich text, laid out like a MedPix case page."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

#: The sections of a case and of its topic, in MedPix page order: the CLI's page and the TUI's panes.
CASE_SECTIONS = ("History", "Exam", "Findings", "Differential Diagnosis", "Case Diagnosis", "Diagnosis By",
                 "Treatment & Follow Up", "Discussion")
TOPIC_SECTIONS = ("Disease Discussion", "ACR Code", "Category", "Keywords", "External Links", "Reference")
#: MedPix's placeholder for "no ACR code" (21 topics, 99 images of the release).
NO_ACR = "-1.-1"


def counted(n: int | str, noun: str) -> str:
    """``1 row``, ``2 rows``, ``500+ rows``: a count as a reader says it."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def shown_value(key: str, value: Any) -> str:
    """A field's text as shown to a reader: the ACR placeholder reads "none", N/A reads as empty."""
    text = "" if value is None else str(value).strip()
    if text == "N/A":
        return ""
    if key in ("ACR Code", "ACR Codes") and text == NO_ACR:
        return "none"
    return text


def titled(label: str, title: Any) -> Text:
    """``label: title`` as plain text, or ``label`` alone when the title is null or empty.

    A panel title given as a string is parsed as Rich markup: a title such as
    ``Osteosarcoma [/IV]`` would raise and ``[red]...`` would be styled, so data goes in as Text.
    """
    shown = shown_value("Title", title)
    return Text(f"{label}: {shown}" if shown else label)


def _sections(title: Text, data: dict[str, Any], keys: tuple[str, ...]) -> Panel:
    parts: list[RenderableType] = []
    for key in keys:
        value = shown_value(key, data.get(key))
        if value:
            parts += [Text(key, style="bold cyan"), Text(value), Text("")]
    return Panel(Group(*parts) if parts else Text("(empty)", style="dim"), title=title, title_align="left")


#: What a fact with no value reads as (null, empty or N/A alike).
MISSING = "—"


def _fact(text: str) -> Text:
    """A fact's cell: its text verbatim (never markup), or a dim dash, so null never reads "None"."""
    return Text(text) if text else Text(MISSING, style="dim")


def image_facts(doc: dict[str, Any]) -> Table:
    """Caption and the facts of one image as a two-column table."""
    desc = doc.get("Description") or {}
    kind, modality = shown_value("Type", doc.get("Type")), shown_value("Modality", desc.get("Modality"))
    place = shown_value("Location", doc.get("Location"))
    category = shown_value("Location Category", doc.get("Location Category"))
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for label, value in (("Image", shown_value("image", doc.get("image"))),
                         ("Case", shown_value("U_id", doc.get("U_id"))),
                         ("Modality", " · ".join(v for v in (kind, modality) if v)),
                         ("Plane", shown_value("Plane", desc.get("Plane"))),
                         ("Location", f"{place} ({category})" if place and category else place or category),
                         ("Age", shown_value("Age", desc.get("Age"))), ("Sex", shown_value("Sex", desc.get("Sex"))),
                         ("ACR codes", shown_value("ACR Codes", desc.get("ACR Codes"))),
                         ("Caption", shown_value("Caption", desc.get("Caption")))):
        table.add_row(label, _fact(value))
    return table


def case_page(case: dict[str, Any], images: list[dict[str, Any]], split: str | None = None) -> RenderableType:
    """A whole case: title, the case sections, its images, the topic."""
    title = shown_value("Title", (case.get("Case") or {}).get("Title"))
    uid = str(case.get("U_id"))
    # an untitled case is headed by its id alone, not the id twice nor "None"
    header = Text.assemble((title, "bold"), (f"   {uid}", "dim")) if title else Text(uid, style="bold")
    if split:
        header.append(f"   split: {split}", style="dim")
    strip = Table("Image", "Modality", "Plane", "Caption", title=f"{len(images)} images", title_justify="left",
                  expand=True)
    for doc in images:
        desc = doc.get("Description") or {}
        strip.add_row(Text(shown_value("image", doc.get("image"))), Text(shown_value("Type", doc.get("Type"))),
                      _fact(shown_value("Plane", desc.get("Plane"))), Text(shown_value("Caption", desc.get("Caption"))))
    topic = case.get("Topic") or {}
    return Group(header, _sections(Text("Case"), case.get("Case") or {}, CASE_SECTIONS), strip,
                 _sections(titled("Topic", topic.get("Title")), topic, TOPIC_SECTIONS))


def image_page(doc: dict[str, Any], case: dict[str, Any] | None) -> RenderableType:
    """One image with its facts, then a summary of its case."""
    parts: list[RenderableType] = [Panel(image_facts(doc), title=Text(shown_value("image", doc.get("image"))),
                                         title_align="left")]
    if case:
        c = case.get("Case") or {}
        parts.append(_sections(titled(f"Case {case.get('U_id')}", c.get("Title")), c,
                               ("History", "Findings", "Case Diagnosis")))
    return Group(*parts)
