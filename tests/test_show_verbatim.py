"""``show`` prints the data as it is: brackets in a title are text, not Rich markup, and null reads empty."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from medpix_tui.bundle import build_bundle
from medpix_tui.cli import main
from medpix_tui.render import case_page, image_page
from tests.support import tiny_case, tiny_image, write_source


def marked_up_cases() -> list[dict[str, Any]]:
    """Cases whose text looks like markup (a closing tag, a bracketed side, a style) and one with a null title."""
    tagged, styled, untitled = (tiny_case("T1", ["T1_a"], []), tiny_case("T2", ["T2_a"], []),
                                tiny_case("LAB0001", ["LAB0001_a"], []))
    tagged["Topic"]["Title"] = "Osteosarcoma [/IV]"
    tagged["Case"]["Title"] = "Fracture [right/left]"
    styled["Case"]["Title"] = "[red]Bold claim"
    styled["Case"]["History"] = "[bold]loud[/bold] history"
    untitled["Case"]["Title"] = None
    untitled["Topic"]["Title"] = None
    return [tagged, styled, untitled]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("show_verbatim")
    cases = marked_up_cases()
    images = [tiny_image(c["U_id"], c["TAC"][0], "CT", "[/x] caption [b]") for c in cases]
    return build_bundle(write_source(root / "source", cases, images), root / "bundle")


def show(bundle: Path, item_id: str) -> str:
    result = CliRunner().invoke(main, ["show", "--bundle", str(bundle), item_id])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_closing_tag_in_a_title_is_shown_not_parsed(bundle: Path) -> None:
    page = show(bundle, "T1")
    assert "Topic: Osteosarcoma [/IV]" in page and "Fracture [right/left]" in page
    assert "[/x] caption [b]" in page
    image = show(bundle, "T1_a")
    assert "Case T1: Fracture [right/left]" in image and "[/x] caption [b]" in image


def test_a_style_tag_in_the_data_is_text_not_a_style() -> None:
    case = marked_up_cases()[1]
    image = tiny_image("T2", "T2_a", "CT", "[red]caption")
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="standard", width=100)
    console.print(case_page(case, [image]))
    console.print(image_page(image, case))
    shown = out.getvalue()
    assert "[red]Bold claim" in shown and "[bold]loud[/bold] history" in shown and "[red]caption" in shown
    assert "\x1b[31m" not in shown  # nothing turned red


def test_a_null_title_reads_empty_not_none(bundle: Path) -> None:
    image = show(bundle, "LAB0001_a")
    assert "Case LAB0001 " in image and "None" not in image
    page = show(bundle, "LAB0001")
    assert page.splitlines()[0].strip() == "LAB0001" and "None" not in page and "Topic " in page


def test_null_facts_of_an_image_read_as_a_dash() -> None:
    image = {"image": "X_a", "U_id": "X", "Type": None, "Location": None, "Location Category": None,
             "Description": {"Modality": None, "Caption": None, "Plane": None}}
    out = io.StringIO()
    Console(file=out, width=100).print(image_page(image, None))
    assert "None" not in out.getvalue() and "Modality   —" in out.getvalue()
