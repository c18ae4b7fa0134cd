"""``quiz``: flash cards of cases for students, in the terminal, scored and spaced."""

from __future__ import annotations

import click

from ..errors import MedpixError
from ..source import SPLITS
from .data import bundle_option, open_bundle_from


@click.command()
@bundle_option
@click.option("--category", help="Cases whose topic category contains this (e.g. trauma, neoplasm).")
@click.option("--acr", help="Cases whose topic ACR code starts with this (e.g. 1. for the brain).")
@click.option("--modality", type=click.Choice(["CT", "MR"]), help="Cases with images of this modality.")
@click.option("--location", help="Cases with an image in this location or location category (e.g. Thorax).")
@click.option("--split", type=click.Choice(SPLITS), help="Only the authors' split.")
@click.option("--keyword", "-k", help="Cases of the images a keyword search finds (the search syntax of query).")
@click.option("--level", type=click.Choice(["history", "findings", "full"]), default="findings", show_default=True,
              help="What a card shows besides the images: the history, with findings, or with exam too.")
@click.option("--cards", "-n", type=click.IntRange(1, 10_000), default=10, show_default=True,
              help="How many cards this session.")
@click.option("--reset", is_flag=True, help="Forget this deck's progress and start again.")
@click.pass_context
def quiz(ctx: click.Context, bundle_path: str | None, category: str | None, acr: str | None, modality: str | None,
         location: str | None, split: str | None, keyword: str | None, level: str, cards: int, reset: bool) -> None:
    """Guess the diagnosis of cases from their images and history.

    A card shows the case's images (by id) and its history, with findings and exam at the
    chosen --level; title, diagnosis, differential, discussion, topic and captions stay
    hidden until you answer (or press Enter to reveal). Answers are scored against the
    diagnosis and its synonyms (case and topic titles, topic keywords): most of its words,
    and mostly its words, is full credit, a third of them half; an item of the differential
    is a quarter; an answer that begins "not ..." or says the opposite ("Hodgkin" for
    non-Hodgkin) nothing. Progress is kept per bundle
    and deck; cards you miss come back sooner, and a new card follows each repeated one.

    \b
    Examples:
      medpix-tui quiz --category trauma --level history
      medpix-tui quiz --acr 1. --modality MR -n 5
      medpix-tui quiz --keyword "ring enhancing"
    """
    from ..quiz import DeckSpec, deck_uids, load_state, make_card, reveal, save_state, score_answer, state_path

    bundle = open_bundle_from(ctx, bundle_path)
    store = bundle.store
    uids: tuple[str, ...] | None = None
    if keyword:
        uids = tuple(sorted({doc["U_id"] for _, doc in store.keyword_search(keyword, limit=0)}))
    named = [f"{k} {v}" for k, v in (("category", category), ("ACR", acr), ("modality", modality),
                                      ("location", location), ("split", split), ("keyword", keyword)) if v]
    spec = DeckSpec(", ".join(named) or "all cases", category, acr, modality, location, split, uids)
    deck = deck_uids(store, spec)
    from ..locations import state_dir

    path = state_path(state_dir().require(), bundle.digest, spec)
    state, notice = load_state(path, bundle.digest, spec)
    if notice:
        click.echo(f"note: {notice}", err=True)
    if reset:
        state.cards.clear()
        state.step = 0
    click.echo(f"Deck: {spec.name} ({len(deck)} cases). Enter reveals, q quits.")
    unsaved = False
    for _ in range(cards):
        uid = state.next_card(deck)
        card = make_card(store, uid, level)  # type: ignore[arg-type]
        click.echo("")
        click.secho(f"Card {state.step + 1} · {len(card.images)} image(s): "
                    + ", ".join(f"{name} ({label})" for name, label in zip(card.images, card.image_labels,
                                                                           strict=True)), bold=True)
        for section, text in card.sections:
            click.secho(section, underline=True)
            click.echo(text)
        try:
            answer = click.prompt("Your diagnosis", default="", show_default=False)
        except click.Abort:
            break
        if answer.strip().lower() in ("q", "quit"):
            break
        score = score_answer(answer, store.get_case(uid) or {})
        state.record(uid, score)
        try:
            save_state(path, state)
        except (MedpixError, OSError) as exc:  # the quiz goes on; only the progress is lost
            if not unsaved:
                click.echo(f"note: progress not kept: {getattr(exc, 'strerror', None) or exc}", err=True)
            unsaved = True
        colour = {"correct": "green", "partial": "yellow"}.get(score.verdict, "red")
        click.secho(f"{score.verdict} ({score.credit:g}): {score.reason}", fg=colour)
        for section, text in reveal(store, uid):
            click.secho(section, underline=True)
            click.echo(text)
    kept = "progress not kept (see the note above)" if unsaved else f"progress kept in {path}"
    click.echo(f"\nScore: {state.credit:g} of {state.answered} answered in this deck; {kept}")


COMMANDS = [quiz]
