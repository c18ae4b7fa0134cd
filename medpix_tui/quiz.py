"""Quiz mode: decks of cases, cards that hide the answer, scoring a typed diagnosis, spaced repetition.

MedPix exists for continuing medical education; its site quizzes students. A card shows a
case's images and history (and, at the level the student picks, its exam and findings) and
hides everything that names the answer: titles, diagnosis, differential, discussion, topic and
captions (captions often name the diagnosis). A typed answer is scored against the case
diagnosis by its words (most of the diagnosis said, and mostly the diagnosis), with the case
and topic titles and the topic's keywords as synonyms; a near miss earns half, an item of the
differential a quarter, an answer that begins by negating or says the opposite (Hodgkin for
non-Hodgkin) nothing; a word counts in its other forms. The reason is shown with the score.

Progress is kept per bundle and deck in the user state dir (:class:`QuizState`, written
atomically; a damaged or foreign file is ignored with a notice). Repetition is Leitner's:
a card answered right moves up a box and comes back later, a card missed goes back to the
first box and comes back after two other cards, and a new card comes after each repeated one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import InputError
from .query import value_at

if TYPE_CHECKING:
    from .store import Store

Level = Literal["history", "findings", "full"]
LEVELS: tuple[Level, ...] = ("history", "findings", "full")
#: What each level shows besides the images: case sections, in reading order.
LEVEL_SECTIONS: dict[Level, tuple[str, ...]] = {
    "history": ("History",),
    "findings": ("History", "Findings"),
    "full": ("History", "Exam", "Findings"),
}
#: Sections shown only after the answer (what would give it away).
HIDDEN_SECTIONS = ("Title", "Case Diagnosis", "Differential Diagnosis", "Diagnosis By", "Discussion",
                   "Treatment & Follow Up")
#: Cards come back after this many other cards, by box (0: just missed).
BOX_GAPS = (2, 5, 12, 30, 80)
STATE_VERSION = 1
MAX_STATE_BYTES = 4 * 1024 * 1024

_STOP = frozenset("""a an and the of with to in on for by from or at as is are was were be been secondary due
    left right bilateral acute chronic type disease syndrome case patient""".split())
_WORD = re.compile(r"[a-z0-9]+")
#: An abbreviation as written in a diagnosis: two or more capitals ("NSCLC", "ACL").
_ACRONYM = re.compile(r"\b[A-Z][A-Z0-9]{1,9}\b")
# Topic keywords arrive run together ("pulmonary alveolar proteinosisPAPinterstitial lung disease"):
# a lower-case letter before a capital, or a run of capitals before a lower-case letter, starts a new one.
_KEYWORD_BOUNDARY = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z]{2})(?=[a-z])")


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 4 and word.endswith("s") and not word.endswith("ss") else word


#: "non-Hodgkin", "non ossifying": the prefix belongs to its word ("non" alone made non-Hodgkin
#: and Hodgkin lymphoma the same words, and "non-ossifying" missed "Nonossifying").
_NON = re.compile(r"\bnon[\s-]+(?=[a-z])")


def tokens(text: str) -> set[str]:
    """Content words, lower-cased and de-pluralised (what answers are compared by)."""
    return {_stem(w) for w in _WORD.findall(_NON.sub("non", text.lower())) if w not in _STOP}


def _same(said: str, want: str) -> bool:
    """Whether two words are one word in two forms (infarct/infarction, hyperglycemia/hyperglycemic):
    equal, or sharing all but the last letter of the shorter and at least five letters (carcinoma and
    carcinoid stay apart)."""
    if said == want:
        return True
    shorter = min(len(said), len(want))
    shared = len(os.path.commonprefix([said, want]))
    return shared >= 5 and shared >= shorter - 1


def _common(said: set[str], want: set[str]) -> int:
    """How many wanted words were said, in any form :func:`_same` allows."""
    return sum(1 for w in want if any(_same(s, w) for s in said))


def _contradicts(said: set[str], target: str) -> str | None:
    """A said word the target negates by its prefix ("hodgkin" for "non-Hodgkin", or the reverse)."""
    want = tokens(target)
    for word in said:
        if f"non{word}" in want or (word.startswith("non") and word[3:] in want):
            return word
    return None


def split_keywords(text: str | None) -> list[str]:
    """The topic's keywords as separate phrases."""
    if not text:
        return []
    parts = re.split(r"[;,\n]+", text)
    return [p.strip() for part in parts for p in _KEYWORD_BOUNDARY.split(part) if p.strip()]


def _differential_items(text: str | None) -> list[str]:
    """Items of a differential written as a list ("*Pulmonary edema (CHF)") or a sentence."""
    if not text:
        return []
    items = re.split(r"[\n*•;]+|,\s+|\s+vs\.?\s+|\bversus\b", text)
    return [re.sub(r"^\s*(ddx|differential)( is| includes)?[:\s]*", "", i, flags=re.I).strip(" .-:")
            for i in items if len(i.strip()) > 2]


@dataclass(frozen=True)
class Score:
    """How a typed answer fared: credit in [0, 1], a verdict and the reason shown with it."""

    credit: float
    verdict: Literal["correct", "partial", "wrong", "revealed"]
    reason: str


#: A typed answer that begins by saying what the case is not ("not a fracture") names no diagnosis;
#: "no" and "without" are left alone ("no IVC" for "Absence of IVC", "laceration without embolization").
_NEGATION = re.compile(r"^\W*(not|isn'?t|is not|never|unlikely|excluded?|ruled? out|rule out)\b", re.IGNORECASE)
#: Credit by verdict: naming a differential item is a plausible alternative, half of a near miss.
CREDIT = {"correct": 1.0, "partial": 0.5, "differential": 0.25}


def score_answer(answer: str, case: dict[str, Any]) -> Score:
    """Score ``answer`` against a case document (``Clinical_Reports`` schema).

    Correct: most of a target's words said (recall at least 0.6) and most of what was said in
    it (precision at least 0.5), so a lone generic word ("cyst" for "colloid cyst") or a list of
    guesses is no full credit, and adding a right word never lowers a score. Partial: a third of
    a target's words. A differential item earns a quarter; an answer that begins by negating, or
    says the opposite of the diagnosis ("hodgkin" for non-Hodgkin), nothing.
    """
    said = tokens(answer)
    diagnosis = str(value_at(case, "Case.Case Diagnosis") or value_at(case, "Case.Title") or "")
    if not said:
        return Score(0.0, "revealed", f"no answer; the diagnosis is {diagnosis!r}")
    if _NEGATION.search(answer):
        return Score(0.0, "wrong", f"a negated answer names no diagnosis: type what you think it is "
                                   f"(the diagnosis is {diagnosis!r})")
    names = [diagnosis, str(value_at(case, "Case.Title") or ""), str(value_at(case, "Topic.Title") or "")]
    for name in names:
        if (word := _contradicts(said, name)) is not None:
            return Score(0.0, "wrong", f"{word!r} is the opposite of {name!r}")
    level, best_target = _best_match(said, [*names, *split_keywords(value_at(case, "Topic.Keywords"))])
    if level == 2:
        return Score(CREDIT["correct"], "correct", f"matches {best_target!r} ({_share(said, best_target)})")
    if level == 1:  # near the diagnosis counts more than a differential item said whole
        return Score(CREDIT["partial"], "partial", f"close to {best_target!r} ({_share(said, best_target)})")
    differential = _differential_items(value_at(case, "Case.Differential Diagnosis"))
    ddx_level, ddx_target = _best_match(said, differential)
    if ddx_level == 2:
        return Score(CREDIT["differential"], "partial",
                     f"in the differential ({ddx_target!r}), not the diagnosis {diagnosis!r}")
    return Score(0.0, "wrong", f"no match with the diagnosis {diagnosis!r}")


def _match(said: set[str], target: str) -> tuple[int, float]:
    """How ``said`` fares against one target: 2 correct, 1 partial, 0 neither; then its Dice overlap."""
    want = tokens(target)
    common = _common(said, want)
    if not want or not common:
        return 0, 0.0
    recall, precision = common / len(want), common / len(said)
    level = 2 if recall >= 0.6 and precision >= 0.5 else 1 if recall >= 0.3 else 0
    if level == 0 and _ACRONYM.search(target) and said <= {w.lower() for w in _ACRONYM.findall(target)}:
        level = 1  # the diagnosis's own abbreviation said alone ("NSCLC"): a near miss, not nothing
    return level, 2 * common / (len(said) + len(want))


def _best_match(said: set[str], targets: Iterable[str]) -> tuple[int, str]:
    """The best verdict level over ``targets`` and the target that gives it (the closest among equals)."""
    scored = [(_match(said, t), t) for t in targets if t.strip()]
    (level, _dice), target = max(scored, default=((0, 0.0), ""), key=lambda st: st[0])
    return level, target


def _share(said: set[str], target: str) -> str:
    want = tokens(target)
    return f"{_common(said, want)} of {len(want)} words"


# -- decks and cards ---------------------------------------------------------------------

@dataclass(frozen=True)
class DeckSpec:
    """Which cases a deck holds: filters ANDed together, or an explicit list (the current results)."""

    name: str = "all cases"
    category: str | None = None
    acr: str | None = None
    modality: str | None = None
    location: str | None = None
    split: str | None = None
    uids: tuple[str, ...] | None = None

    @property
    def deck_id(self) -> str:
        """Stable name of the deck's state file (the same definition resumes the same progress)."""
        definition = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(definition.encode()).hexdigest()[:16]


def deck_uids(store: Store, spec: DeckSpec) -> list[str]:
    """The cases of a deck, in id order; an empty deck is bad input."""
    splits = store.splits()
    chosen = []
    wanted = set(spec.uids) if spec.uids is not None else None
    for case in store.find("Clinical_Reports"):
        uid = case["U_id"]
        if wanted is not None and uid not in wanted:
            continue
        if spec.category and spec.category.lower() not in str(value_at(case, "Topic.Category") or "").lower():
            continue
        if spec.acr and not str(value_at(case, "Topic.ACR Code") or "").startswith(spec.acr):
            continue
        if spec.modality == "CT" and not case.get("TAC") or spec.modality == "MR" and not case.get("MRI"):
            continue
        if spec.split and splits.get(uid) != spec.split:
            continue
        if spec.location and not any(
                spec.location.lower() in str(img.get("Location Category", "")).lower()
                or spec.location.lower() in str(img.get("Location", "")).lower()
                for img in store.images_of_case(uid)):
            continue
        chosen.append(uid)
    if not chosen:
        raise InputError(f"the deck {spec.name!r} holds no case: loosen its filters")
    return sorted(chosen)


@dataclass(frozen=True)
class Card:
    """What a student sees before answering: nothing that names the diagnosis."""

    uid: str
    images: tuple[str, ...]
    sections: tuple[tuple[str, str], ...]
    #: For the image strip: modality and plane only (captions often name the diagnosis).
    image_labels: tuple[str, ...]


def make_card(store: Store, uid: str, level: Level) -> Card:
    if level not in LEVELS:
        raise InputError(f"level must be one of {', '.join(LEVELS)}")
    case = store.get_case(uid) or {}
    images = store.images_of_case(uid)
    sections = tuple((name, str(value_at(case, f"Case.{name}")).strip()) for name in LEVEL_SECTIONS[level]
                     if str(value_at(case, f"Case.{name}") or "").strip() not in ("", "N/A"))
    labels = tuple(f"{img.get('Type', '')} {value_at(img, 'Description.Plane') or ''}".strip() for img in images)
    return Card(uid, tuple(img["image"] for img in images), sections, labels)


def reveal(store: Store, uid: str) -> list[tuple[str, str]]:
    """What the reveal shows: the hidden case sections and the topic."""
    case = store.get_case(uid) or {}
    shown = [(name, str(value_at(case, f"Case.{name}")).strip()) for name in HIDDEN_SECTIONS
             if str(value_at(case, f"Case.{name}") or "").strip() not in ("", "N/A")]
    topic = value_at(case, "Topic.Title")
    if topic:
        shown.append(("Topic", f"{topic} (ACR {value_at(case, 'Topic.ACR Code') or 'none'}, "
                               f"{value_at(case, 'Topic.Category') or 'no category'})"))
    return shown


# -- progress -----------------------------------------------------------------------------

@dataclass
class CardProgress:
    box: int = 0
    due: int = 0
    seen: int = 0
    credit: float = 0.0


@dataclass
class QuizState:
    """One deck's progress in one bundle: boxes, when each card is due, the score."""

    bundle: str
    deck: str
    step: int = 0
    cards: dict[str, CardProgress] = field(default_factory=dict)
    #: Whether the last card shown had been seen before: then an unseen card comes next.
    repeated_last: bool = False

    @property
    def answered(self) -> int:
        return sum(p.seen for p in self.cards.values())

    @property
    def credit(self) -> float:
        return sum(p.credit for p in self.cards.values())

    def next_card(self, uids: list[str]) -> str:
        """The card due soonest: a card due now or overdue first, then unseen cards in order.

        Unseen cards count as due just after now, so a missed card (due two steps on) comes
        back after two others instead of after the whole deck. But never two seen cards in a
        row while unseen ones remain: a student who missed the first three cards saw only those
        three, again and again, and never a new case.
        """
        order = {uid: i for i, uid in enumerate(uids)}
        if self.repeated_last and (unseen := [uid for uid in uids if uid not in self.cards]):
            return unseen[0]

        def due(uid: str) -> tuple[float, int, int]:
            card = self.cards.get(uid)
            return (self.step + 0.5, 0, order[uid]) if card is None else (card.due, card.box, order[uid])

        return min(uids, key=due)

    def record(self, uid: str, score: Score) -> None:
        """Move the card between boxes and schedule it again."""
        self.repeated_last = uid in self.cards
        card = self.cards.setdefault(uid, CardProgress())
        self.step += 1
        card.seen += 1
        card.credit += score.credit
        if score.verdict == "correct":
            card.box = min(card.box + 1, len(BOX_GAPS) - 1)
        elif score.verdict in ("wrong", "revealed"):
            card.box = 0
        card.due = self.step + BOX_GAPS[card.box]

    def to_json(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "bundle": self.bundle, "deck": self.deck, "step": self.step,
                "repeated_last": self.repeated_last,
                "cards": {uid: asdict(p) for uid, p in sorted(self.cards.items())}}


def state_path(state_dir: Path, bundle_digest: str, spec: DeckSpec) -> Path:
    return Path(state_dir) / "quiz" / bundle_digest[:16] / f"{spec.deck_id}.json"


def load_state(path: Path, bundle_digest: str, spec: DeckSpec) -> tuple[QuizState, str | None]:
    """The saved progress, or a fresh one and a notice when the file is damaged or not this deck's."""
    fresh = QuizState(bundle_digest, spec.deck_id)
    try:
        if not path.is_file():
            return fresh, None
        if path.stat().st_size > MAX_STATE_BYTES:
            return fresh, f"ignored {path}: larger than {MAX_STATE_BYTES} bytes"
        data = json.loads(path.read_text(encoding="utf-8"))
        if not (isinstance(data, dict) and data.get("version") == STATE_VERSION
                and data.get("bundle") == bundle_digest and data.get("deck") == spec.deck_id):
            return fresh, f"ignored {path}: not this deck's progress"
        cards = {}
        for uid, raw in dict(data["cards"]).items():
            progress = CardProgress(int(raw["box"]), int(raw["due"]), int(raw["seen"]), float(raw["credit"]))
            if not (isinstance(uid, str) and 0 <= progress.box < len(BOX_GAPS) and progress.seen >= 0):
                raise ValueError(uid)
            cards[uid] = progress
        return QuizState(bundle_digest, spec.deck_id, int(data["step"]), cards,
                         data.get("repeated_last") is True), None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        return fresh, f"ignored {path}: damaged ({type(exc).__name__})"


def save_state(path: Path, state: QuizState) -> None:
    """Written atomically: a crash keeps the previous progress."""
    from .atomic import atomic_file

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, force=True) as tmp:
        tmp.write_text(json.dumps(state.to_json(), indent=0), encoding="utf-8")
