"""The authors' field query: a collection, then field = regex pairs (case-insensitive, ANDed).

The pair being typed counts at once (results follow the keyboard); Enter or "Add" keeps it
as a chip, and a chip is removed by pressing it. ``path=regex`` (or ``path~regex``) typed
in the field box is a whole pair. Switching collection drops the chips whose field the new
collection does not have, and says which.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.message import Message
from textual.suggester import SuggestFromList
from textual.widgets import Button, Input, Label, Select

from ...errors import QueryError
from ...query import field_filter
from ...session import FIELDS, known_paths, split_pair
from ...store import CASES, COLLECTIONS, IMAGES


class FieldQuery(Vertical):
    """Collection picker, field and regex inputs, and the kept pairs."""

    DEFAULT_CSS = """
    FieldQuery { height: auto; }
    FieldQuery > #fq-row { height: 1; }
    FieldQuery #fq-collection { width: 24; }
    FieldQuery #fq-path { width: 2fr; max-width: 32; margin-left: 1; }
    FieldQuery .fq-tilde { width: 3; content-align: center middle; color: $text-muted; }
    FieldQuery #fq-regex { width: 1fr; }
    FieldQuery #fq-add { margin-left: 1; min-width: 7; }
    FieldQuery > #fq-chips { height: auto; display: none; }
    FieldQuery > #fq-chips.-some { display: block; }
    FieldQuery #fq-chips Button { margin-right: 1; min-width: 4; }
    """

    class Changed(Message):
        """The collection, the kept pairs or the pair being typed changed."""

        def __init__(self, collection: str, pairs: tuple[tuple[str, str], ...]) -> None:
            super().__init__()
            self.collection = collection
            self.pairs = pairs

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._kept: list[tuple[str, str]] = []

    def compose(self) -> ComposeResult:
        with Horizontal(id="fq-row"):
            yield Select([(c, c) for c in COLLECTIONS], value=IMAGES, allow_blank=False, compact=True,
                         id="fq-collection")
            yield Input(placeholder="field, e.g. Description.Caption", compact=True, id="fq-path",
                        suggester=SuggestFromList(FIELDS[IMAGES], case_sensitive=False))
            yield Label("~", classes="fq-tilde")
            yield Input(placeholder="regex (case-insensitive)", compact=True, id="fq-regex")
            yield Button("Add", compact=True, id="fq-add")
        yield Horizontal(id="fq-chips")

    @property
    def collection(self) -> str:
        value = self.query_one("#fq-collection", Select).value
        return value if isinstance(value, str) else IMAGES

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """Kept pairs plus the pair being typed, when both halves are filled."""
        pending = self._pending()
        return tuple(self._kept) + ((pending,) if pending else ())

    def _pending(self) -> tuple[str, str] | None:
        path = self.query_one("#fq-path", Input).value.strip()
        regex = self.query_one("#fq-regex", Input).value
        if not regex and (whole := split_pair(path)) is not None:
            return whole
        return (path, regex) if path and regex else None

    def restore(self, collection: str, pairs: tuple[tuple[str, str], ...]) -> None:
        """Show a remembered collection and kept pairs."""
        self.query_one("#fq-collection", Select).value = collection
        self._kept = list(pairs)
        self._redraw_chips()
        self._announce()

    def clear(self) -> None:
        """Forget every pair (the collection stays)."""
        self._kept.clear()
        self.query_one("#fq-path", Input).value = ""
        self.query_one("#fq-regex", Input).value = ""
        self._redraw_chips()
        self._announce()

    def _announce(self) -> None:
        self.post_message(self.Changed(self.collection, self.pairs))

    @on(Select.Changed, "#fq-collection")
    def _collection_changed(self, event: Select.Changed) -> None:
        event.stop()
        fields = FIELDS.get(self.collection, FIELDS[CASES])
        self.query_one("#fq-path", Input).suggester = SuggestFromList(fields, case_sensitive=False)
        self._drop_unmatchable()
        self._announce()

    def _drop_unmatchable(self) -> None:
        """Chips whose field the collection does not have could never match: drop them and say so."""
        if not self._kept:
            return
        from ..app import medpix

        try:
            known = known_paths(medpix(self).store, self.collection)
        except Exception:  # noqa: BLE001 - the store not open yet: the search will say what is wrong
            return
        dropped = [(p, r) for p, r in self._kept if p not in known]
        if dropped:
            self._kept = [pair for pair in self._kept if pair not in dropped]
            self._redraw_chips()
            names = ", ".join(f"{p}~{r}" for p, r in dropped)
            self.notify(f"Dropped {names}: {self.collection} has no such field", title="Field query",
                        severity="warning")

    @on(Input.Changed, "#fq-path, #fq-regex")
    def _typed(self, event: Input.Changed) -> None:
        event.stop()
        self._announce()

    @on(Input.Submitted, "#fq-path")
    def _path_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if split_pair(event.value) is not None and not self.query_one("#fq-regex", Input).value:
            self._keep(event)  # a whole path=regex pair
            return
        if any(sep in event.value for sep in "=~"):  # one side empty ("Caption=", "=glioma"): say so
            self.notify("A field query is FIELD=REGEX, e.g. Description.Caption=glioma: one side is empty",
                        title="Field query", severity="warning")
            return
        self.query_one("#fq-regex", Input).focus()

    @on(Input.Submitted, "#fq-regex")
    @on(Button.Pressed, "#fq-add")
    def _keep(self, event: Input.Submitted | Button.Pressed) -> None:
        event.stop()
        pending = self._pending()
        if pending is None:
            self.notify("Type a field and a regex first", severity="warning")
            return
        try:  # a bad regex is not kept as a chip: it stays in the boxes, to be fixed (the search says why)
            field_filter([pending])
        except QueryError as exc:
            self.notify(str(exc), title="Field query", severity="error")
            return
        self._kept.append(pending)
        self.query_one("#fq-path", Input).value = ""
        self.query_one("#fq-regex", Input).value = ""
        self.query_one("#fq-path", Input).focus()
        self._redraw_chips()
        self._announce()

    @on(Button.Pressed, "#fq-chips Button")
    def _remove(self, event: Button.Pressed) -> None:
        event.stop()
        index = int(event.button.name or "0")
        del self._kept[index]
        self._redraw_chips()
        self._announce()

    def _redraw_chips(self) -> None:
        chips = self.query_one("#fq-chips", Horizontal)
        chips.remove_children()
        chips.mount_all(Button(Content(f"{path} ~ {regex} ✕"), name=str(i), compact=True, tooltip="Press to remove")
                        for i, (path, regex) in enumerate(self._kept))
        chips.set_class(bool(self._kept), "-some")
