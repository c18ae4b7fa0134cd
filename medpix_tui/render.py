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


def _sections(title: str, data: dict[str, Any], keys: tuple[str, ...]) -> Panel:
    parts: list[RenderableType] = []
    for key in keys:
        value = shown_value(key, data.get(key))
        if value:
            parts += [Text(key, style="bold cyan"), Text(value), Text("")]
    return Panel(Group(*parts) if parts else Text("(empty)", style="dim"), title=title, title_align="left")


def image_facts(doc: dict[str, Any]) -> Table:
    """Caption and the facts of one image as a two-column table."""
    desc = doc.get("Description") or {}
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for label, value in (("Image", doc.get("image")), ("Case", doc.get("U_id")),
                         ("Modality", f"{doc.get('Type')} · {desc.get('Modality')}"),
                         ("Plane", desc.get("Plane")),
                         ("Location", f"{doc.get('Location')} ({doc.get('Location Category')})"),
                         ("Age", desc.get("Age")), ("Sex", desc.get("Sex")),
                         ("ACR codes", shown_value("ACR Codes", desc.get("ACR Codes"))),
                         ("Caption", desc.get("Caption"))):
        table.add_row(label, Text(str(value if value is not None else "—")))
    return table


def case_page(case: dict[str, Any], images: list[dict[str, Any]], split: str | None = None) -> RenderableType:
    """A whole case: title, the case sections, its images, the topic."""
    title = (case.get("Case") or {}).get("Title") or case.get("U_id")
    header = Text.assemble((str(title), "bold"), (f"   {case.get('U_id')}", "dim"),
                           (f"   split: {split}" if split else "", "dim"))
    strip = Table("Image", "Modality", "Plane", "Caption", title=f"{len(images)} images", title_justify="left",
                  expand=True)
    for doc in images:
        desc = doc.get("Description") or {}
        cells = (doc["image"], doc["Type"], str(desc.get("Plane") or "—"), str(desc.get("Caption") or ""))
        strip.add_row(*map(Text, cells))
    topic = case.get("Topic") or {}
    return Group(header, _sections("Case", case.get("Case") or {}, CASE_SECTIONS), strip,
                 _sections(f"Topic: {topic.get('Title', '')}", topic, TOPIC_SECTIONS))


def image_page(doc: dict[str, Any], case: dict[str, Any] | None) -> RenderableType:
    """One image with its facts, then a summary of its case."""
    parts: list[RenderableType] = [Panel(image_facts(doc), title=str(doc.get("image")), title_align="left")]
    if case:
        c = case.get("Case") or {}
        parts.append(_sections(f"Case {case['U_id']}: {c.get('Title', '')}", c,
                               ("History", "Findings", "Case Diagnosis")))
    return Group(*parts)
