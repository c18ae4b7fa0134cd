"""Quiz mode (F6): flash cards of cases, a typed diagnosis scored, nothing of the answer before the reveal.

A card shows the case's images and its history (with findings, and exam, at the level the
student picks). Titles, diagnosis, differential, discussion, topic and captions stay off
the screen, its title and status line until the answer is given (Enter) or revealed
(ctrl+r): the card is :func:`medpix_tui.quiz.make_card`, the strip names images by number,
modality and plane only, and the case document used for scoring never reaches a widget
before the reveal. While an answer is hidden the similar-cases key is off (``hides_answer``).

Progress is kept per bundle and deck in the app's state dir (a served app has none: then
it lasts while the app runs). The deck comes from the current search results or from
filters (:class:`DeckDialog`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Checkbox, Input, Label, Select, Static
from textual.worker import get_current_worker

from ...errors import MedpixError
from ...quiz import (
    LEVELS,
    Card,
    DeckSpec,
    Level,
    QuizState,
    Score,
    deck_uids,
    load_state,
    make_card,
    reveal,
    save_state,
    score_answer,
    state_path,
)
from ...source import SPLITS
from ...store import CASES
from ..app import alive, medpix
from ..widgets.footer import KeyFooter
from ..widgets.header import SafeHeader
from ..widgets.image_strip import ImageStrip
from ..widgets.image_view import ImageView
from .dialogs import FormDialog

LEVEL_NAMES: dict[str, str] = {"history": "history", "findings": "history and findings",
                               "full": "history, exam and findings"}
ASK = "Your diagnosis: Enter scores it (Enter on nothing, or ctrl+r, reveals)"
NEXT = "Enter or ctrl+n: next card · ctrl+o: another deck"
VERDICT_STYLE = {"correct": "bold green", "partial": "bold yellow", "wrong": "bold red", "revealed": "bold red"}


class DeckDialog(FormDialog[tuple[DeckSpec, Level]]):
    """Which cases the deck holds (the current results, or filters ANDed) and what a card shows."""

    CSS_PATH = "quiz.tcss"

    def __init__(self, results: tuple[str, ...] | None, level: Level) -> None:
        super().__init__()
        self.results = results
        self.level = level

    def compose(self) -> ComposeResult:
        with Vertical(id="deck-dialog", classes="dialog") as box:
            box.border_title = "Quiz deck"
            count = len(self.results or ())
            yield Checkbox(f"Only the current search results ({count} cases)" if count
                           else "Only the current search results (none: search first)",
                           value=bool(count), disabled=not count, id="deck-results")
            with Grid(id="deck-grid"):
                yield Label("Category")
                yield Input(placeholder="contains, e.g. trauma, neoplasm", id="deck-category", compact=True)
                yield Label("ACR code")
                yield Input(placeholder="starts with, e.g. 1. (brain)", id="deck-acr", compact=True)
                yield Label("Modality")
                yield Select([("CT", "CT"), ("MR", "MR")], prompt="any", id="deck-modality", compact=True)
                yield Label("Location")
                yield Input(placeholder="contains, e.g. Thorax", id="deck-location", compact=True)
                yield Label("Split")
                yield Select([(s, s) for s in SPLITS], prompt="any", id="deck-split", compact=True)
                yield Label("A card shows")
                yield Select([(LEVEL_NAMES[level], level) for level in LEVELS], value=self.level, allow_blank=False,
                             id="deck-level", compact=True)
            yield self.buttons("Start", "deck-start", "deck-cancel")

    def on_mount(self) -> None:
        self.query_one("#deck-category", Input).focus()

    def _text(self, widget_id: str) -> str | None:
        return self.query_one(widget_id, Input).value.strip() or None

    def _choice(self, widget_id: str) -> Any:
        value = self.query_one(widget_id, Select).value
        return None if value is Select.NULL else value

    def submit(self) -> None:
        filters = {"category": self._text("#deck-category"), "acr": self._text("#deck-acr"),
                   "modality": self._choice("#deck-modality"), "location": self._text("#deck-location"),
                   "split": self._choice("#deck-split")}
        named = [f"{k if k != 'acr' else 'ACR'} {v}" for k, v in filters.items() if v]
        uids = self.results if self.query_one("#deck-results", Checkbox).value and self.results else None
        name = ", ".join((["current results"] if uids else []) + named) or "all cases"
        self.dismiss((DeckSpec(name, uids=uids, **filters), self._choice("#deck-level") or "findings"))


class QuizScreen(Screen[None]):
    """One card at a time: images and history, an answer box, then the reveal with the score."""

    CSS_PATH = "quiz.tcss"
    BINDINGS = [
        Binding("escape", "back", "Back", tooltip="Back to the search (the quiz stays where it is: F6)"),
        Binding("ctrl+r", "reveal", "Reveal", tooltip="Show the answer without guessing (scored as missed)"),
        Binding("ctrl+n", "next_card", "Next card", tooltip="The next card due (after the answer)"),
        Binding("ctrl+o", "deck", "Deck", tooltip="Choose another deck: the current results or filters"),
        Binding("ctrl+l", "level", "Level", tooltip="What a card shows: history, with findings, with exam too"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.spec: DeckSpec | None = None
        self.level: Level = "findings"
        self.deck: list[str] = []
        self.state: QuizState | None = None
        #: Where this deck's progress is kept; None: in memory (no state dir).
        self.path: Path | None = None
        self.card: Card | None = None
        self.revealed = False
        self.last_score: Score | None = None
        self._case: dict[str, Any] | None = None  # for scoring only: never shown before the reveal
        self._images: list[dict[str, Any]] = []
        self._image_index = 0
        #: Progress of each deck played this session without a state dir (deck id -> state).
        self._memory: dict[str, QuizState] = {}

    @property
    def hides_answer(self) -> bool:
        """Whether a card's answer is on screen yet (while hidden, nothing may name it)."""
        return self.card is not None and not self.revealed

    def compose(self) -> ComposeResult:
        yield SafeHeader()
        with Horizontal(id="quiz-body"):
            with Vertical(id="quiz-left"):
                yield ImageView(medpix(self).image_class, id="quiz-image")
                yield Static("", id="quiz-legend", markup=False)
                yield ImageStrip(id="quiz-strip")
            with Vertical(id="quiz-right-column"):
                yield Static("", id="quiz-verdict", markup=False)  # the score stays in sight above the text
                with VerticalScroll(id="quiz-right"):
                    yield Static("Choose a deck (ctrl+o).", id="quiz-card", markup=False)
                    yield Static("", id="quiz-answer", markup=False)
        yield Input(placeholder=ASK, id="quiz-input", compact=True)
        yield Static("", id="quiz-status", markup=False)
        yield KeyFooter()

    def on_mount(self) -> None:
        self.title = "Quiz"
        self.sub_title = "no deck yet"
        self.call_after_refresh(self.action_deck)

    # -- decks ---------------------------------------------------------------------
    def action_deck(self) -> None:
        result = medpix(self).result
        # the results make a deck of their own only once a search narrowed them
        narrowed = (result is not None and bool(result.images)
                    and result.case_count < medpix(self).bundle.manifest.get("counts", {}).get(CASES, 0))
        results = tuple(sorted({d["U_id"] for d in result.images})) if result is not None and narrowed else None
        self.app.push_screen(DeckDialog(results, self.level), self._deck_chosen)

    def _deck_chosen(self, choice: tuple[DeckSpec, Level] | None) -> None:
        if choice is None or not alive(self):
            if self.spec is None:
                self._status("No deck yet: press ctrl+o to choose one.")
            return
        spec, self.level = choice
        self._status(f"Dealing the deck {spec.name}…")
        self._load_deck(spec)

    def _state_file(self, spec: DeckSpec) -> tuple[Path | None, str]:
        app = medpix(self)
        digest = app.bundle.digest
        return (state_path(app.state_dir, digest, spec) if app.state_dir is not None else None), digest

    @work(thread=True, exclusive=True, group="quiz-deck")
    def _load_deck(self, spec: DeckSpec) -> None:
        app = medpix(self)
        notice = None
        try:
            with app.store_lock:
                uids = deck_uids(app.store, spec)
            path, digest = self._state_file(spec)
            if path is not None:
                state, notice = load_state(path, digest, spec)
            else:
                state = self._memory.setdefault(spec.deck_id, QuizState(digest, spec.deck_id))
        except (MedpixError, OSError) as exc:
            if not get_current_worker().is_cancelled:
                self.app.call_from_thread(self._deck_failed, str(exc))
            return
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._deck_ready, spec, uids, state, path, notice)

    def _deck_failed(self, message: str) -> None:
        if not alive(self):
            return
        self.notify(message, title="Quiz deck", severity="error", timeout=5)
        self._status(message if self.spec is None else self._progress())
        if self.spec is None:
            self.action_deck()

    def _deck_ready(self, spec: DeckSpec, uids: list[str], state: QuizState, path: Path | None,
                    notice: str | None) -> None:
        if not alive(self):
            return
        self.spec, self.deck, self.state, self.path = spec, uids, state, path
        self.sub_title = f"deck: {spec.name} ({len(uids)} cases)"
        if notice:
            self.notify(notice, title="Quiz progress", severity="warning", timeout=6)
        self._deal()

    # -- cards ---------------------------------------------------------------------
    def _deal(self) -> None:
        if self.state is None or not self.deck:
            return
        self.card, self.revealed = None, False
        self._fetch(self.state.next_card(self.deck), self.level)

    @work(thread=True, exclusive=True, group="quiz-card")
    def _fetch(self, uid: str, level: Level) -> None:
        app = medpix(self)
        with app.store_lock:
            card = make_card(app.store, uid, level)
            case = app.store.get_case(uid) or {}
            images = app.store.images_of_case(uid)
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show_card, card, case, images)

    def _show_card(self, card: Card, case: dict[str, Any], images: list[dict[str, Any]]) -> None:
        if not alive(self):
            return
        self.card, self._case, self.revealed, self.last_score = card, case, False, None
        by_name = {d["image"]: d for d in images}
        self._images = [by_name.get(name, {"image": name}) for name in card.images]
        text = Text()
        for section, body in card.sections:
            text.append(f"{section}\n", style="bold underline")
            text.append(f"{body}\n\n")
        if not card.sections:
            text.append("(this case has no history or findings: guess from the images)\n")
        self.query_one("#quiz-card", Static).update(text)
        verdict = self.query_one("#quiz-verdict", Static)
        verdict.update("")
        verdict.display = False
        self.query_one("#quiz-answer", Static).update("")
        self.query_one("#quiz-right", VerticalScroll).scroll_home(animate=False)
        answer = self.query_one("#quiz-input", Input)
        answer.value, answer.placeholder = "", ASK
        answer.focus()
        # the strip names images by number, modality and plane: captions often name the diagnosis
        self.query_one(ImageStrip).set_images(
            [{"image": name, "Type": label.split(" ")[0] if label else "",
              "Description": {"Plane": " ".join(label.split(" ")[1:])}}
             for name, label in zip(card.images, card.image_labels, strict=True)],
            card.images[0] if card.images else "")
        self._show_image(0)
        self._status(self._progress())

    def _show_image(self, index: int) -> None:
        card = self.card
        view = self.query_one("#quiz-image", ImageView)
        legend = self.query_one("#quiz-legend", Static)
        if card is None or not card.images:
            view.show(None)
            legend.update("No image in this case")
            return
        self._image_index = index
        label = card.image_labels[index]
        line = f"Image {index + 1} of {len(card.images)}" + (f" · {label}" if label else "")
        if self.revealed:
            caption = ((self._images[index].get("Description") or {}).get("Caption") or "(no caption)")
            line += f"\n{caption}"
        legend.update(line)
        view.show(medpix(self).bundle.image_path(card.images[index]))

    @on(ImageStrip.Chosen)
    def _chosen(self, event: ImageStrip.Chosen) -> None:
        if self.card is not None and event.name in self.card.images:
            self._show_image(self.card.images.index(event.name))

    @on(Input.Submitted, "#quiz-input")
    def _submitted(self, event: Input.Submitted) -> None:
        if self.card is None:
            return
        if self.revealed:
            self._deal()
        else:
            self._answer(event.value)

    def _answer(self, text: str) -> None:
        """Score ``text`` (nothing typed: revealed, no credit), keep the progress, show the answer."""
        card, state = self.card, self.state
        if card is None or state is None or self.revealed:
            return
        score = score_answer(text, self._case or {})
        state.record(card.uid, score)
        self.revealed, self.last_score = True, score
        if self.path is not None:
            self._save(self.path, state)
        verdict = Text()
        verdict.append(f"{score.verdict.capitalize()} ({score.credit:g} point{'s' if score.credit != 1 else ''})",
                       style=VERDICT_STYLE[score.verdict])
        if text.strip():
            verdict.append(f" · you said {text.strip()!r}")
        verdict.append(f"\n{score.reason}")
        shown = self.query_one("#quiz-verdict", Static)
        shown.update(verdict)
        shown.display = True
        self._fill_reveal(card.uid)
        answer = self.query_one("#quiz-input", Input)
        answer.value, answer.placeholder = "", NEXT
        self._show_image(self._image_index)
        self._status(self._progress())

    @work(thread=True, exclusive=True, group="quiz-reveal")
    def _fill_reveal(self, uid: str) -> None:
        with medpix(self).store_lock:
            sections = reveal(medpix(self).store, uid)
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show_reveal, uid, sections)

    def _show_reveal(self, uid: str, sections: list[tuple[str, str]]) -> None:
        if not alive(self) or self.card is None or self.card.uid != uid or not self.revealed:
            return
        text = Text()
        for section, body in sections:
            text.append(f"{section}\n", style="bold underline")
            text.append(f"{body}\n\n")
        text.append(f"Case {uid}", style="dim")
        answer = self.query_one("#quiz-answer", Static)
        answer.update(text)
        self.call_after_refresh(self.query_one("#quiz-right", VerticalScroll).scroll_to_widget, answer, top=True,
                                animate=False)

    @work(thread=True, group="quiz-save")
    def _save(self, path: Path, state: QuizState) -> None:
        try:
            save_state(path, state)
        except (MedpixError, OSError) as exc:
            self.app.call_from_thread(self.notify, f"progress not kept: {exc}", severity="warning")

    def _progress(self) -> str:
        if self.spec is None or self.state is None:
            return "No deck yet: press ctrl+o to choose one."
        kept = "" if self.path is not None else " · progress kept until you quit"
        return (f"{len(self.deck)} cases · card {self.state.step + (0 if self.revealed else 1)} · "
                f"score {self.state.credit:g} of {self.state.answered} answered · {self.level}{kept}")

    def _status(self, text: str) -> None:
        self.query_one("#quiz-status", Static).update(text)

    # -- actions -------------------------------------------------------------------
    def action_back(self) -> None:
        self.app.switch_mode("search")

    def action_reveal(self) -> None:
        if self.hides_answer:
            self._answer("")

    def action_next_card(self) -> None:
        if self.card is None:
            return
        if not self.revealed:
            self.notify("Answer first, or reveal the answer (ctrl+r)", severity="warning", timeout=2)
            return
        self._deal()

    def action_level(self) -> None:
        """Show less or more of the case: history, with findings, with exam (the card on screen follows)."""
        self.level = LEVELS[(LEVELS.index(self.level) + 1) % len(LEVELS)]
        self.notify(f"Cards show {LEVEL_NAMES[self.level]}", timeout=2)
        if self.card is not None and not self.revealed:
            self._fetch(self.card.uid, self.level)
        else:
            self._status(self._progress())
