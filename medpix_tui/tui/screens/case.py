"""A case, read as on a MedPix case page: the image with its legend, the case and the topic.

The screen walks a list of result images: next and previous move through the results
(and the results table's cursor follows), the strip moves through the images of the case on
show. The keyword search's words are marked in the caption, case and topic text; ``/``
finds text inside the open case.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.widgets import Input, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from ...render import CASE_SECTIONS, TOPIC_SECTIONS, shown_value
from ..app import GuardedScreen, MedpixApp, alive, copy_id, focus_now, medpix, takes_text
from ..saving import SaveOption, Writer, save_interactively
from ..widgets.doc_pane import HIT_STYLE, DocPane
from ..widgets.footer import KeyFooter
from ..widgets.header import SafeHeader
from ..widgets.image_strip import ImageStrip
from ..widgets.image_view import ImageView


def image_legend(doc: dict[str, Any], highlight: str | None = None, split: str | None = None) -> Content:
    """Modality, plane, age and sex first (they must stay visible), then where, then the caption."""
    desc = doc.get("Description") or {}
    age = f"{desc['Age']} y" if desc.get("Age") not in (None, "") else ""
    facts = [desc.get("Modality") or doc.get("Type"), desc.get("Plane"), age, desc.get("Sex")]
    where = [" / ".join(v for v in (doc.get("Location Category"), doc.get("Location")) if v),
             f"ACR {shown_value('ACR Codes', desc['ACR Codes'])}" if desc.get("ACR Codes") else "",
             f"Figure {desc['Figure Part']}" if desc.get("Figure Part") else "", doc["image"],
             f"split: {split}" if split else ""]
    caption = Content(desc.get("Caption") or "(no caption)")
    if highlight:
        caption = caption.highlight_regex(re.compile(highlight, re.IGNORECASE), style=HIT_STYLE)
    return Content.assemble(
        (" · ".join(str(f) for f in facts if f), "bold"), "\n",
        (" · ".join(w for w in where if w), "dim"), "\n",
        caption,
    )


class CaseScreen(GuardedScreen):
    """One result at a time, with its whole case."""

    CSS_PATH = "case.tcss"
    BINDINGS = [
        Binding("escape", "back", "Back", tooltip="Return to the results (or close the find box)"),
        Binding("n", "step(1)", "Next", tooltip="Next result"),
        Binding("p", "step(-1)", "Prev", tooltip="Previous result"),
        Binding("right_square_bracket", "image(1)", "Image", key_display="]", tooltip="Next image of this case"),
        Binding("left_square_bracket", "image(-1)", "Prev image", key_display="[", show=False,
                tooltip="Previous image of this case"),
        Binding("f", "fullscreen", "Full", tooltip="Show the image on the whole screen"),
        Binding("t", "toggle_pane", "Topic", tooltip="Switch between the case and its topic"),
        Binding("slash", "find", "Find", key_display="/", priority=True,
                tooltip="Find text in the case or topic shown"),
        Binding("s", "save", "Save", show=False, tooltip="Save the image document, the case or the topic as JSON"),
        Binding("c", "copy", "Copy id", show=False,
                tooltip="Copy the image id to the clipboard (OSC 52: works over SSH)"),
        Binding("C", "copy_case", "Copy case id", show=False, tooltip="Copy the case id to the clipboard"),
    ]

    def __init__(self, names: list[str], index: int, *, highlight: str | None = None,
                 follow: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.names = names
        self.index = index
        #: A regex of the searched words, marked in the text (None: no keyword search).
        self.highlight = highlight
        #: Told each result shown, so the results table's cursor follows.
        self.follow = follow
        self.split: str | None = None
        self.image: dict[str, Any] | None = None
        self.case: dict[str, Any] | None = None
        self.case_images: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield SafeHeader()
        with Horizontal(id="case-body"):
            with Vertical(id="case-left"):
                yield ImageView(medpix(self).image_class, id="case-image")
                yield Static(id="legend")
                yield ImageStrip(id="strip")
            with TabbedContent(id="case-panes"):
                with TabPane("Case", id="pane-case"):
                    yield DocPane(CASE_SECTIONS, id="case-doc")
                with TabPane("Topic", id="pane-topic"):
                    yield DocPane(TOPIC_SECTIONS, id="topic-doc")
        yield Input(placeholder="find in this case (Enter: next match, Esc: close)", id="find", compact=True)
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one("#case-doc", DocPane).focus()
        self._fetch(self.names[self.index])

    @work(thread=True, exclusive=True, group="case")
    def _fetch(self, name: str) -> None:
        worker = get_current_worker()
        store = medpix(self).store
        with medpix(self).store_lock:
            image = store.get_image(name)
            uid = image["U_id"] if image else None
            same_case = self.case is not None and uid == self.case.get("U_id")
            case = self.case if same_case else (store.get_case(uid) if uid else None)
            images = self.case_images if same_case else (store.images_of_case(uid) if uid else [])
            split = store.split_of(uid) if uid else None
        if not worker.is_cancelled and alive(self):
            self.app.call_from_thread(self._show, name, image, case, images, split)

    def _show(self, name: str, image: dict[str, Any] | None, case: dict[str, Any] | None, images: list[dict[str, Any]],
              split: str | None = None) -> None:
        if name != self.names[self.index] or not alive(self):
            return
        self.split = split
        if self.follow is not None:
            self.follow(name)
        new_case = case is not self.case or case is None
        self.case, self.case_images = case, images or ([image] if image else [])
        body = (case or {}).get("Case") or {}
        topic = (case or {}).get("Topic") or {}
        uid = (image or {}).get("U_id", "?")
        self.title = f"{uid} · result {self.index + 1} of {len(self.names)}"
        self.sub_title = self._case_title()
        if new_case:  # the next result from the same case keeps the reader's place in the text
            self.query_one("#case-doc", DocPane).show(body.get("Title", ""), body, self.highlight)
            self.query_one("#topic-doc", DocPane).show(topic.get("Title", ""), topic, self.highlight)
            finding = self.query_one("#find", Input)
            if finding.display and finding.value:
                self._find(finding.value)
        self._show_image(image, name)

    def _show_image(self, image: dict[str, Any] | None, name: str) -> None:
        if not alive(self):
            return
        self.image = image
        legend = self.query_one("#legend", Static)
        view = self.query_one("#case-image", ImageView)
        if image is None:
            legend.update(Content(f"{name}: no such image in this bundle"))
            view.show(None)
            return
        legend.update(image_legend(image, self.highlight, self.split))
        self.query_one(ImageStrip).set_images(self.case_images, image["image"])
        view.show(medpix(self).bundle.image_path(image["image"]))

    # -- actions -------------------------------------------------------------------
    def action_back(self) -> None:
        finding = self.query("#find").results(Input)
        box = next(iter(finding), None)
        if box is not None and box.display:
            self._close_find()
            return
        self.dismiss()

    def _pane(self) -> DocPane:
        panes = self.query_one(TabbedContent)
        return self.query_one("#topic-doc" if panes.active == "pane-topic" else "#case-doc", DocPane)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """/ is a priority key (the find box takes the keys at once) but a letter in the find box."""
        if action == "find" and takes_text(self):
            return False
        return super().check_action(action, parameters)

    def action_find(self) -> None:
        """Open the find box over the footer; what is typed is marked in the pane shown."""
        box = self.query_one("#find", Input)
        box.display = True
        focus_now(box)  # "/fracture" typed at speed: its f opened the full screen

    def _close_find(self) -> None:
        box = self.query_one("#find", Input)
        box.value = ""
        box.display = False
        for pane in self.query(DocPane):
            pane.find("")
        self._pane().focus()

    @on(Input.Changed, "#find")
    def _find_typed(self, event: Input.Changed) -> None:
        self._find(event.value)

    def _case_title(self) -> str:
        return ((self.case or {}).get("Case") or {}).get("Title") or "case not found"

    def _find(self, text: str) -> None:
        count = self._pane().find(text)
        if text.strip():
            self.sub_title = (f"{count} match{'es' if count != 1 else ''} for {text!r}" if count
                              else f"no match for {text!r}")
        else:  # the find box emptied or closed: the case's title again
            self.sub_title = self._case_title()

    @on(Input.Submitted, "#find")
    def _find_next(self) -> None:
        self._pane().find_next()

    def action_copy(self) -> None:
        """Copy the image id (OSC 52: the terminal's clipboard, also over SSH)."""
        if self.image is not None:
            copy_id(self, self.image["image"])

    def action_copy_case(self) -> None:
        if self.image is not None:
            copy_id(self, self.image["U_id"])

    def action_step(self, delta: int) -> None:
        """Move to the next or previous result (stops at either end)."""
        index = self.index + delta
        if not 0 <= index < len(self.names):
            self.notify("No more results that way", severity="warning", timeout=2)
            return
        self.index = index
        self._fetch(self.names[index])

    def action_image(self, delta: int) -> None:
        """Move through the images of the case on show (wrapping around)."""
        if self.image is None or not self.case_images:
            return
        names = [d["image"] for d in self.case_images]
        position = names.index(self.image["image"]) if self.image["image"] in names else 0
        self._show_image(self.case_images[(position + delta) % len(names)], names[0])

    @on(ImageStrip.Chosen)
    def _chosen(self, event: ImageStrip.Chosen) -> None:
        if self.image is not None and event.name != self.image["image"]:
            doc = next((d for d in self.case_images if d["image"] == event.name), None)
            if doc is not None:
                self._show_image(doc, event.name)

    def action_toggle_pane(self) -> None:
        panes = self.query_one(TabbedContent)
        panes.active = "pane-topic" if panes.active == "pane-case" else "pane-case"
        box = self.query_one("#find", Input)
        if box.display and box.value:
            self._find(box.value)
        self._pane().focus()

    def action_fullscreen(self) -> None:
        from .image import ImageScreen

        if self.image is None:
            self.notify("No image to show", severity="warning")
            return
        names = [d["image"] for d in self.case_images]
        at = names.index(self.image["image"]) if self.image["image"] in names else 0
        full = ImageScreen(self.case_images, at)
        self.app.push_screen(full, lambda _: self._back_from_full(full.shown))

    def _back_from_full(self, doc: dict[str, Any]) -> None:
        """Back from the full screen, the case shows the image it was showing (its arrows step the case's)."""
        if alive(self) and doc in self.case_images and (self.image is None or doc["image"] != self.image["image"]):
            self._show_image(doc, doc["image"])

    @work(exclusive=True, group="save")
    async def action_save(self) -> None:
        """Save the image document, the case or the topic as JSON."""
        if self.image is None:
            self.notify("Nothing to save", severity="warning")
            return
        options = _save_options(medpix(self), self.image, self.case)
        await save_interactively(medpix(self), "Save from this case", options)


def _save_options(app: MedpixApp, image: dict[str, Any], case: dict[str, Any] | None) -> list[SaveOption]:
    """The image document, the case and its topic: each as one JSON file with its export manifest (the id)."""
    from ...export import ExportQuery, save_documents
    from ...store import CASES, IMAGES

    source = {"screen": "case", "case": image["U_id"], "image": image["image"]}

    def writer(collection: str, ident: str, shape: str) -> Writer:
        query = ExportQuery(collection, ids=(ident,))
        return lambda path, force: save_documents(app.store, Path(path), "json", query, shape=shape,
                                                  bundle=app.bundle, source=source, force=force).files[0]

    name = image["image"]
    options = [SaveOption("Image document (JSON)", f"{name}.json", writer(IMAGES, name, "document"))]
    if case is not None:
        uid = case["U_id"]
        options.append(SaveOption("Case (JSON)", f"{uid}.json", writer(CASES, uid, "document")))
        options.append(SaveOption("Topic (JSON)", f"{uid}-topic.json", writer(CASES, uid, "topic")))
    return options
