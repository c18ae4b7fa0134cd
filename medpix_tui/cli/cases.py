"""``similar-cases``: cases like the one in front of you, from a typed history."""

from __future__ import annotations

import json

import click

from .data import bundle_option, open_bundle_from
from .options import FiniteFloatRange


@click.command("similar-cases")
@click.option("--text", "-t", default=None, help="A history and findings, as a physician would type them.")
@click.option("--case", "case_id", default=None, help="Use this bundle case's history and findings (it is left out).")
@click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True, help="How many cases.")
@click.option("--image", default=None,
              help="Mix in image similarity: a bundle image id (its case is left out) or an image file "
                   "(PNG, JPEG, DICOM).")
@click.option("--image-weight", type=FiniteFloatRange(0, 1), default=0.5, show_default=True,
              help="Share of the image's similarity in the score when --image is given.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@bundle_option
@click.pass_context
def similar_cases(ctx: click.Context, text: str | None, case_id: str | None, k: int, image: str | None,
                  image_weight: float, as_json: bool, bundle_path: str | None) -> None:
    """The K cases whose history and findings read most like TEXT.

    Cases are ranked by cosine between all-MiniLM-L6-v2 sentence embeddings of the query and
    of each case's history and findings (made at bundle build, offline).

    \b
    Examples:
      medpix-tui similar-cases --text "54 year old woman with sudden severe headache" -k 5
      medpix-tui similar-cases --case MPX1009 --json
      medpix-tui similar-cases --text "hematuria" --image MPX1009_synpic46283
    """
    from ..errors import InputError

    if (text is None) == (case_id is None):
        raise InputError("give either --text or --case")
    if text is not None and not text.strip():
        raise InputError("--text is empty: type a history or findings")
    if image is not None and not image.strip():
        raise InputError("--image is empty")
    if image is None and ctx.get_parameter_source("image_weight") is not click.core.ParameterSource.DEFAULT:
        raise InputError("--image-weight needs --image (the image whose similarity it weighs)")
    bundle = open_bundle_from(ctx, bundle_path)
    exclude: frozenset[str] = frozenset()
    if case_id is not None:
        from ..model.case_text import query_of_case

        case = bundle.store.get_case(case_id)
        if case is None:
            raise InputError(f"no case {case_id!r} in the bundle")
        text, exclude = query_of_case(case), frozenset({case_id})
    image_query = None
    if image is not None:
        from ..model.service import BundleModel

        try:
            image_query, image_case = BundleModel(bundle).image_query(image)
        except InputError as exc:
            raise InputError(f"--image: {exc}") from None
        exclude |= {image_case} if image_case else set()
    from ..model.case_text import similar_cases as rank

    assert text is not None
    result = rank(bundle, text, k, image_query=image_query, image_weight=image_weight, exclude=exclude)
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False))
        return
    for row in result:
        click.echo(f"{row['score']:.3f}  {row['case']}  [{row['split'] or '-'}]  {str(row['title'] or '')[:80]}")


COMMANDS = [similar_cases]
