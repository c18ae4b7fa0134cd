"""Modal dialogs: where to save (with a sensible default name), whether to overwrite, and one
value read whole.

:class:`FormDialog` is the shape every form dialog shares (the save dialog here, the quiz's
deck and the similar-cases history): Enter or the primary button submits, Escape or Cancel
answers None.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, RadioButton, RadioSet, TextArea

from ..saving import SaveOption, resolve_path

ResultT = TypeVar("ResultT")


class FormDialog(ModalScreen[ResultT | None]):
    """A form in a modal: Enter in a box or the primary button calls :meth:`submit`; Escape or Cancel: None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    @staticmethod
    def buttons(submit: str, submit_id: str, cancel_id: str) -> Horizontal:
        """The row under the form: the primary action, then Cancel."""
        return Horizontal(Button(submit, variant="primary", id=submit_id, classes="submit"),
                          Button("Cancel", id=cancel_id, classes="cancel"), classes="buttons")

    @on(Input.Submitted)
    @on(Button.Pressed, ".submit")
    def _submitted(self) -> None:
        self.submit()

    def submit(self) -> None:
        """Dismiss with what the form says, or tell the user what is missing and stay."""
        raise NotImplementedError

    @on(Button.Pressed, ".cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class SaveDialog(FormDialog[tuple[SaveOption, Path]]):
    """Pick what to save and the file (or folder) name; the name follows the choice until edited."""

    CSS_PATH = "dialogs.tcss"

    def __init__(self, title: str, options: list[SaveOption], base: Path | None, *, choice: int = 0,
                 path: str | None = None) -> None:
        """``base`` is the folder names are relative to; None in a served app, whose saves are downloads."""
        super().__init__()
        self.dialog_title = title
        self.options = options
        self.base = base
        self._choice = choice
        #: What the path box starts with (a failed save comes back with what was typed).
        self._path = path

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog") as box:
            box.border_title = self.dialog_title
            if len(self.options) > 1:
                with RadioSet(id="save-what"):
                    for i, option in enumerate(self.options):
                        yield RadioButton(option.label, value=i == self._choice)
            else:
                yield Label(self.options[0].label, classes="what")
            start = self._path or self.options[self._choice].default_name
            if self.base is None:
                yield Label("File name (your browser downloads it; nothing is written on the server):",
                            classes="hint")
                yield Input(start, id="save-path", select_on_focus=False)
            else:
                yield Label("Save to (relative to the folder shown below):", classes="hint")
                yield Input(start, id="save-path", select_on_focus=False)
                yield Label(str(self.base), classes="hint", id="save-base")
            yield self.buttons("Save", "save", "cancel")

    def on_mount(self) -> None:
        self.query_one("#save-path", Input).focus()

    @on(RadioSet.Changed)
    def _choose(self, event: RadioSet.Changed) -> None:
        path = self.query_one("#save-path", Input)
        if path.value == self.options[self._choice].default_name:
            path.value = self.options[event.index].default_name
        self._choice = event.index

    def submit(self) -> None:
        text = self.query_one("#save-path", Input).value
        if not text.strip():
            self.notify("Type a file name", severity="warning")
            return
        path = Path(Path(text.strip()).name) if self.base is None else resolve_path(text, self.base)
        chosen = self.options[self._choice]
        typed = path.suffix.lower()
        other = next((o for o in self.options if o is not chosen and typed
                      and Path(o.default_name).suffix.lower() == typed != Path(chosen.default_name).suffix.lower()),
                     None)
        if other is not None:  # "t1.parquet" with JSON chosen wrote JSON under a Parquet name
            self.notify(f"The name ends {typed}, which is \"{other.label}\": choose that, or another name",
                        severity="warning")
            return
        self.dismiss((chosen, path))


class ConfirmDialog(ModalScreen[bool]):
    """A yes/no question; no is the default, as replacing a file loses it."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, *, yes: str = "Replace (y)", no: str = "Keep (n)") -> None:
        super().__init__()
        self.question = question
        self.yes, self.no = yes, no

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog confirm") as box:
            box.border_title = "Confirm"
            yield Label(self.question, classes="question")
            with Horizontal(classes="buttons"):
                yield Button(self.yes, variant="error", id="yes")
                yield Button(self.no, variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class ValueDialog(ModalScreen[None]):
    """One value whole (a table cell shows a line of it), to read, scroll and select; Esc closes."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS = [Binding("escape,q", "close", "Close")]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_text, self.text = title, text

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog value") as box:
            box.border_title = self.title_text
            box.border_subtitle = "Esc closes"
            yield TextArea(self.text, read_only=True, soft_wrap=True, show_line_numbers=False, id="value-text")

    def on_mount(self) -> None:
        self.query_one("#value-text", TextArea).focus()

    def action_close(self) -> None:
        self.dismiss(None)
