"""Pilot tests of quiz mode (F6): decks, cards that hide the answer everywhere, the reveal, kept progress.

The cards are the release's own cases (the session bundle), so the hidden text is what a
student would really have to guess: its diagnosis, titles, topic and captions.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console
from textual.widgets import Checkbox, Input, Select, Static
from tui_support import SIZE, make_app, settle, type_text, wait_for

from medpix_tui.bundle import Bundle
from medpix_tui.quiz import DeckSpec, deck_uids, make_card
from medpix_tui.tui.app import MedpixApp
from medpix_tui.tui.screens.quiz import DeckDialog, QuizScreen

pytestmark = pytest.mark.asyncio


def screen_text(app: MedpixApp) -> str:
    """What the terminal shows, as plain text (the screen as Textual composes it)."""
    console = Console(width=app.size.width, height=app.size.height, file=io.StringIO(), record=True,
                      force_terminal=True, color_system="truecolor", legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True))
    return console.export_text()


def words_of(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def every_place(app: MedpixApp) -> dict[str, str]:
    """Each place an answer could leak, by name: titles, header, footer, tooltips, status, notices, text."""
    screen = app.screen
    places = {
        "screen title": f"{screen.title} {screen.sub_title}",
        "app title": f"{app.title} {app.sub_title}",
        "tooltips": " ".join(str(w.tooltip) for w in screen.walk_children() if w.tooltip is not None),
        "key tooltips": " ".join(f"{a.binding.description} {a.binding.tooltip}"
                                 for a in screen.active_bindings.values()),
        "notifications": " ".join(f"{n.title} {n.message}" for n in app._notifications),
        "status line": str(screen.query_one("#quiz-status", Static).render()),
        "widgets": " ".join(str(w.render()) for w in screen.query(Static)),
        "inputs": " ".join(f"{i.value} {i.placeholder}" for i in screen.query(Input)),
        "terminal": screen_text(app),
    }
    return {name: words_of(text) for name, text in places.items()}


def secrets(bundle: Bundle, uid: str) -> list[str]:
    """What must stay hidden: diagnosis, titles, topic and captions (their words, in order)."""
    case = bundle.store.get_case(uid) or {}
    hidden = [case["Case"].get("Case Diagnosis"), case["Case"].get("Title"), (case.get("Topic") or {}).get("Title")]
    hidden += [(d.get("Description") or {}).get("Caption") for d in bundle.store.images_of_case(uid)]
    return [words_of(h) for h in hidden if h and words_of(h)]


async def start_deck(pilot, category: str) -> QuizScreen:
    app = pilot.app
    await pilot.press("f6")
    await wait_for(pilot, lambda: isinstance(app.screen, DeckDialog))
    await settle(pilot)
    app.screen.query_one("#deck-results", Checkbox).value = False
    app.screen.query_one("#deck-category", Input).focus()
    await type_text(pilot, category)
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(app.screen, QuizScreen) and app.screen.card is not None)
    await settle(pilot)
    return app.screen


async def test_no_answer_leaks_before_the_reveal_then_the_reveal_scores(real_bundle: Bundle) -> None:
    spec = DeckSpec("category trauma", category="trauma")
    first = deck_uids(real_bundle.store, spec)[0]
    card = make_card(real_bundle.store, first, "findings")
    hidden = secrets(real_bundle, first)
    shown_text = words_of(" ".join(body for _, body in card.sections))
    # a secret the card's own history already says cannot be checked: keep only the others
    hidden = [h for h in hidden if h not in shown_text]
    diagnosis = words_of(real_bundle.store.get_case(first)["Case"]["Case Diagnosis"])
    assert diagnosis in hidden, "the test needs a card whose history does not name its diagnosis"

    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        quiz = await start_deck(pilot, "trauma")
        assert quiz.card is not None and quiz.card.uid == first and quiz.hides_answer
        await wait_for(pilot, lambda: "History" in screen_text(app))
        places = every_place(app)
        assert words_of(card.sections[0][1])[:40] in places["widgets"]  # the history is on the card
        for secret in hidden:
            for place, text in places.items():
                assert secret not in text, f"{secret!r} shown in the {place} before the reveal"
        # similar cases would name the answer: their key is off while it is hidden
        assert "similar_cases" not in {a.binding.action for a in quiz.active_bindings.values()} or \
            not app.check_action("similar_cases", ())
        assert "Similar cases" not in {c.title for c in app.get_system_commands(quiz)}
        await pilot.press("f7")
        await settle(pilot)
        assert app.screen is quiz

        await type_text(pilot, "glioblastoma")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "Case Diagnosis" in str(quiz.query_one("#quiz-answer", Static).render()))
        assert quiz.revealed and quiz.last_score is not None and quiz.last_score.verdict == "wrong"
        verdict = str(quiz.query_one("#quiz-verdict", Static).render())
        assert verdict.startswith("Wrong (0 points)") and quiz.last_score.reason in verdict
        assert diagnosis in words_of(str(quiz.query_one("#quiz-answer", Static).render()))
        assert "score 0 of 1 answered" in str(quiz.query_one("#quiz-status", Static).render())
        assert "Similar cases" in {c.title for c in app.get_system_commands(quiz)}

        await pilot.press("enter")  # the next card, hidden again
        await wait_for(pilot, lambda: quiz.card is not None and quiz.card.uid != first and quiz.hides_answer)
        await settle(pilot)
        assert not str(quiz.query_one("#quiz-answer", Static).render()).strip()
        nxt = quiz.card.uid
        shown = words_of(" ".join(b for _, b in quiz.card.sections))
        places = every_place(app)
        for secret in secrets(real_bundle, nxt):
            if secret not in shown:
                for place, text in places.items():
                    assert secret not in text, f"{secret!r} shown in the {place} before the reveal"


async def test_a_right_answer_scores_and_progress_is_kept_per_deck(real_bundle: Bundle, tmp_path: Path) -> None:
    spec = DeckSpec("category trauma", category="trauma")
    first = deck_uids(real_bundle.store, spec)[0]
    diagnosis = real_bundle.store.get_case(first)["Case"]["Case Diagnosis"]
    app = MedpixApp(real_bundle, image_renderer="halfcell", state_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        quiz = await start_deck(pilot, "trauma")
        quiz.query_one("#quiz-input", Input).value = diagnosis
        await pilot.press("enter")
        await wait_for(pilot, lambda: quiz.revealed)
        assert quiz.last_score.verdict == "correct" and quiz.last_score.credit == 1.0
        assert str(quiz.query_one("#quiz-verdict", Static).render()).startswith("Correct (1 point)")
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: quiz.hides_answer and quiz.card.uid != first)
        await pilot.press("ctrl+r")  # reveal without answering: missed
        await wait_for(pilot, lambda: quiz.revealed)
        assert quiz.last_score.verdict == "revealed"
        await settle(pilot)
    files = list((tmp_path / "quiz").rglob("*.json"))
    assert len(files) == 1
    saved = json.loads(files[0].read_text())
    assert saved["cards"][first]["credit"] == 1.0 and saved["step"] == 2

    again = MedpixApp(real_bundle, image_renderer="halfcell", state_dir=tmp_path)
    async with again.run_test(size=SIZE) as pilot:  # the same deck resumes: score and step kept
        await settle(pilot)
        quiz = await start_deck(pilot, "trauma")
        assert quiz.state.step == 2 and quiz.state.credit == 1.0
        assert "score 1 of 2 answered" in str(quiz.query_one("#quiz-status", Static).render())
        assert quiz.card.uid != first  # answered right: it comes back later


async def test_a_deck_from_the_current_results_and_an_empty_deck(real_bundle: Bundle) -> None:
    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await type_text(pilot, "glioma")
        await settle(pilot, 0.2)
        uids = {d["U_id"] for d in app.result.images}
        await pilot.press("f6")
        await wait_for(pilot, lambda: isinstance(app.screen, DeckDialog))
        await settle(pilot)
        assert app.screen.query_one("#deck-results", Checkbox).value
        app.screen.query_one("#deck-level", Select).value = "history"
        await pilot.click("#deck-start")
        await wait_for(pilot, lambda: isinstance(app.screen, QuizScreen) and app.screen.card is not None)
        quiz = app.screen
        assert set(quiz.deck) == uids and quiz.card.uid in uids and quiz.spec.name == "current results"
        assert [name for name, _ in quiz.card.sections] == ["History"]
        assert "glioma" not in words_of(f"{quiz.title} {quiz.sub_title}")  # the deck is named without the query

        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, DeckDialog))
        await settle(pilot)
        app.screen.query_one("#deck-results", Checkbox).value = False
        app.screen.query_one("#deck-category", Input).value = "no such category"
        await pilot.press("enter")
        await wait_for(pilot, lambda: any("holds no case" in n.message for n in app._notifications))
        await wait_for(pilot, lambda: isinstance(app.screen, QuizScreen))
        assert app.screen.deck and set(app.screen.deck) == uids  # the deck played stays


async def test_help_lists_the_new_keys_and_guides_the_quiz(real_bundle: Bundle) -> None:
    from medpix_tui.tui.screens.help import HelpScreen

    app = make_app(real_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        text = app.screen.query_one("Markdown").source
        assert all(f"`{key}`" in text for key in ("f5", "f6", "f7")) and "Quality report" in text
        await pilot.press("escape")
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Quality", "Quiz", "Similar cases"} <= titles
        quiz = await start_deck(pilot, "trauma")
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        text = app.screen.query_one("Markdown").source
        assert "## Quiz" in text and "Show the answer without guessing" in text
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is quiz)


async def test_the_new_screens_fit_80x24(real_bundle: Bundle) -> None:
    from test_tui_screens import footer_fits

    from medpix_tui.tui.screens.quality import QualityScreen

    app = make_app(real_bundle)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        quiz = await start_deck(pilot, "trauma")
        assert {"Back", "Reveal", "Next card", "Deck"} <= set(footer_fits(app, 80))
        assert quiz.query_one("#quiz-input", Input).region.height == 1
        assert quiz.query_one("#quiz-image").region.height >= 6
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, QualityScreen))
        await settle(pilot)
        assert {"Back", "Open case"} <= set(footer_fits(app, 80))
