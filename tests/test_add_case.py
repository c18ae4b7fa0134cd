"""``add-case``: a lab's case is validated like ingest validates, and bad input changes nothing."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from scraper_support import png_bytes

from medpix_tui.add_case import add_case
from medpix_tui.errors import InputError, ValidationError
from medpix_tui.source import load_source


def _image_doc(uid: str, name: str, kind: str) -> dict:
    return {"Type": kind, "U_id": uid, "image": name,
            "Description": {"ACR Codes": "7.2", "Age": "54", "Caption": f"Caption of {name}.", "Figure Part": None,
                            "Modality": "CT w/contrast (IV)" if kind == "CT" else "MR - T2 weighted",
                            "Plane": "Axial", "Sex": "female"},
            "Location": "Gastrointestinal", "Location Category": "Abdomen"}


def _case_doc(uid: str, ct: list[str], mr: list[str]) -> dict:
    return {"U_id": uid, "TAC": ct, "MRI": mr,
            "Case": {"Title": f"Title {uid}", "History": "History text.", "Case Diagnosis": "Diagnosis text."},
            "Topic": {"Title": f"Topic {uid}", "Disease Discussion": "Discussion.", "ACR Code": "7.2",
                      "Category": "Inflammatory"}}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A small valid source folder: one case with a CT and an MR image."""
    root = tmp_path / "source"
    (root / "images").mkdir(parents=True)
    names = ["MPX8001_synpic1", "MPX8001_synpic2"]
    (root / "Case_topic.json").write_text(json.dumps([_case_doc("MPX8001", names[:1], names[1:])], indent=4))
    (root / "Descriptions.json").write_text(json.dumps(
        [_image_doc("MPX8001", names[0], "CT"), _image_doc("MPX8001", names[1], "MR")], indent=4))
    for i, name in enumerate(names):
        (root / "images" / f"{name}.png").write_bytes(png_bytes(i))
    return root


@pytest.fixture
def new_case(tmp_path: Path) -> tuple[Path, Path, dict]:
    """A case file for LAB0001 (two CT, one MR) and its image folder."""
    names = ["LAB0001_img1", "LAB0001_img2", "LAB0001_img3"]
    payload = {"case": _case_doc("LAB0001", names[:2], names[2:]),
               "images": [_image_doc("LAB0001", n, "CT" if i < 2 else "MR") for i, n in enumerate(names)]}
    images = tmp_path / "lab-images"
    images.mkdir()
    for i, name in enumerate(names):
        (images / f"{name}.png").write_bytes(png_bytes(10 + i))
    path = tmp_path / "case.json"
    path.write_text(json.dumps(payload))
    return path, images, payload


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_adds_the_case_its_documents_and_images(source: Path, new_case: tuple[Path, Path, dict]) -> None:
    path, images, payload = new_case
    summary = add_case(path, images, source)
    assert (summary.uid, summary.ct, summary.mr, len(summary.images)) == ("LAB0001", 2, 1, 3)
    data = load_source(source)  # the full ingest check, images decoded
    assert data.cases[-1] == payload["case"] and data.images[-3:] == payload["images"]
    assert (source / "images" / "LAB0001_img3.png").read_bytes() == (images / "LAB0001_img3.png").read_bytes()
    assert (source / "Case_topic.json").read_text() == json.dumps(data.cases, indent=4)
    assert not [p for p in source.rglob(".*")]


def test_accepts_the_case_document_with_an_images_key(source: Path, new_case: tuple[Path, Path, dict]) -> None:
    path, images, payload = new_case
    path.write_text(json.dumps({**payload["case"], "images": payload["images"]}))
    add_case(path, images, source)
    assert load_source(source).cases[-1] == payload["case"]


def _mutate(payload: dict, change: Callable[[dict], object]) -> dict:
    payload = copy.deepcopy(payload)
    change(payload)
    return payload


BAD: list[tuple[str, Callable[[dict], object], str]] = [
    ("missing Topic", lambda p: p["case"].pop("Topic"), "case:#0 (LAB0001):Topic: missing"),
    ("bad Type", lambda p: p["images"][0].update(Type="XR"), "Type: must be CT or MR"),
    ("unsafe id", lambda p: p["images"][0].update(image="../evil"), "not a plain id"),
    ("text field not text", lambda p: p["case"]["Case"].update(History=3), "Case.History: must be text or null"),
    ("case id taken", lambda p: (p["case"].update(U_id="MPX8001"), [i.update(U_id="MPX8001") for i in p["images"]]),
     "a case with this id is already in the source"),
    ("image id taken", lambda p: (p["case"]["TAC"].__setitem__(0, "MPX8001_synpic1"),
                                  p["images"][0].update(image="MPX8001_synpic1")),
     "an image with this id is already in the source"),
    ("listed under the wrong modality", lambda p: p["images"][2].update(Type="CT"), "is CT, listed under MRI"),
    ("image not listed", lambda p: p["case"]["TAC"].pop(), "not listed in its case's TAC or MRI"),
    ("image of another case", lambda p: p["images"][1].update(U_id="LAB0002"), "no case with U_id 'LAB0002'"),
    ("unexpected key", lambda p: p.update(extra=1), "unexpected key(s) 'extra'"),
    ("images not a list", lambda p: p.update(images={}), "'images' must be a list"),
    ("no images", lambda p: (p.update(images=[]), p["case"].update(TAC=[], MRI=[])), "needs at least one image"),
    ("a location category the model does not know", lambda p: p["images"][0].update({"Location Category": "Brain"}),
     "Location Category: must be one of Head, Thorax"),
    ("an age in words", lambda p: p["images"][1]["Description"].update(Age="fifty"),
     ":Description.Age: must be a whole number of years from 0 to 120 written as plain text, e.g. \"54\"; "
     "got 'fifty'"),
    ("an age in other digits", lambda p: p["images"][0]["Description"].update(Age="٥٤"), "Description.Age: must be"),
    ("a padded age", lambda p: p["images"][0]["Description"].update(Age=" 54"), "Description.Age: must be a whole"),
    ("an age with a leading zero", lambda p: p["images"][0]["Description"].update(Age="054"), "Description.Age"),
    ("a sex the release does not know", lambda p: p["images"][0]["Description"].update(Sex="robot"),
     "Description.Sex: must be one of female, male, N/A; got 'robot'"),
    ("an age past 120", lambda p: p["images"][0]["Description"].update(Age="540"), "Description.Age: must be a whole"),
    ("a negative age", lambda p: p["images"][0]["Description"].update(Age="-3"), "Description.Age: must be a whole"),
    ("NaN in a case's own key", lambda p: p["case"].update(Extra=float("nan")),
     "case:#0 (LAB0001):Extra: NaN is not valid JSON: a number must be finite"),
    ("Infinity deep in an image document", lambda p: p["images"][1].update(Extra={"a": [1, float("inf")]}),
     "images:#1 (LAB0001_img2):Extra.a.1: Infinity is not valid JSON"),
    ("-Infinity as an age", lambda p: p["images"][0]["Description"].update(Age=float("-inf")),
     "images:#0 (LAB0001_img1):Description.Age: -Infinity is not valid JSON"),
    ("a null case title", lambda p: p["case"]["Case"].update(Title=None),
     "case:#0 (LAB0001):Case.Title: a title is required text, got null"),
    ("a blank topic title", lambda p: p["case"]["Topic"].update(Title="  "), "Topic.Title: a title is required text"),
    ("no case title", lambda p: p["case"]["Case"].pop("Title"), "Case.Title: a title is required text, got missing"),
    ("images inside the case too", lambda p: p["case"].update(images=[]), "'images' goes next to 'case', not inside"),
    ("an image named as its own case", lambda p: (p["case"]["TAC"].__setitem__(0, "LAB0001"),
                                                  p["images"][0].update(image="LAB0001")),
     "images:#0 (LAB0001):image: equals a case id, so `show` would never reach the image"),
    ("an image named as a case in the source", lambda p: (p["case"]["TAC"].__setitem__(0, "MPX8001"),
                                                          p["images"][0].update(image="MPX8001")),
     "images:#0 (MPX8001):image: equals a case id"),
    ("a case named as an image in the source",
     lambda p: (p["case"].update(U_id="MPX8001_synpic1"), [i.update(U_id="MPX8001_synpic1") for i in p["images"]]),
     "case:MPX8001_synpic1:U_id: equals an image id in the source"),
    ("a case id that differs from one in the source only in letter case",
     lambda p: (p["case"].update(U_id="mpx8001"), [i.update(U_id="mpx8001") for i in p["images"]]),
     "case:mpx8001:U_id: differs from the case MPX8001 only in letter case"),
    ("an image id that differs from one in the source only in letter case",
     lambda p: (p["case"]["TAC"].__setitem__(0, "mpx8001_synpic1"), p["images"][0].update(image="mpx8001_synpic1")),
     "images:#0 (mpx8001_synpic1):image: differs from the image MPX8001_synpic1 only in letter case"),
]


@pytest.mark.parametrize(("label", "change", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_error_and_changes_nothing(source: Path, new_case: tuple[Path, Path, dict], label: str,
                                                    change: Callable[[dict], object], message: str) -> None:
    path, images, payload = new_case
    path.write_text(json.dumps(_mutate(payload, change)))
    before = _snapshot(source)
    with pytest.raises(InputError) as err:
        add_case(path, images, source)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert _snapshot(source) == before


@pytest.mark.parametrize(("label", "setup", "message"), [
    ("invalid JSON", lambda path, images, source: path.write_text("{not json"), "invalid JSON at line 1 column 2"),
    ("not an object", lambda path, images, source: path.write_text("[]"), "must be a JSON object, got list"),
    ("image missing", lambda path, images, source: (images / "LAB0001_img2.png").unlink(), "image file is missing"),
    ("image not decodable", lambda path, images, source: (images / "LAB0001_img2.png").write_bytes(b"<html>"),
     "image file does not decode"),
    ("image of 1x1 pixels", lambda path, images, source: Image.new("L", (1, 1), 80).save(images / "LAB0001_img2.png"),
     "image of 1x1 pixels is too small"),
    ("blank image (an empty screenshot)",
     lambda path, images, source: Image.new("RGB", (64, 48), (30, 30, 30)).save(images / "LAB0001_img2.png"),
     "image is blank (one colour throughout)"),
    ("file already in images/", lambda path, images, source: (source / "images" / "LAB0001_img1.png").write_bytes(b"x"),
     "images/LAB0001_img1.png already exists in the source"),
    ("broken source", lambda path, images, source: (source / "Descriptions.json").write_text("[{"),
     "Descriptions.json: invalid JSON"),
])
def test_bad_files_are_one_error_and_change_nothing(source: Path, new_case: tuple[Path, Path, dict], label: str,
                                                    setup: Callable[..., object], message: str) -> None:
    path, images, _ = new_case
    setup(path, images, source)
    before = _snapshot(source)
    with pytest.raises(InputError, match=None) as err:
        add_case(path, images, source)
    assert message in str(err.value)
    assert _snapshot(source) == before


@pytest.mark.parametrize(("fault", "expected", "match"), [
    (OSError(28, "No space left on device"), InputError, "No space left on device; nothing was changed"),
    # Descriptions.json is in place, Case_topic.json not yet: the worst moment for a Ctrl-C
    (KeyboardInterrupt(), KeyboardInterrupt, None),
], ids=["failed-write", "ctrl-c-between-the-renames"])
def test_a_failed_or_interrupted_write_changes_nothing(source: Path, new_case: tuple[Path, Path, dict],
                                                       monkeypatch: pytest.MonkeyPatch, fault: BaseException,
                                                       expected: type[BaseException], match: str | None) -> None:
    path, images, _ = new_case
    before = _snapshot(source)
    real_replace = os.replace

    def failing_replace(src: object, dst: object) -> None:
        if str(dst).endswith("Case_topic.json"):
            raise fault
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(expected, match=match):
        add_case(path, images, source)
    assert _snapshot(source) == before


def test_the_real_release_refuses_a_colliding_id(new_case: tuple[Path, Path, dict], source_dir: Path) -> None:
    path, images, payload = new_case
    payload = _mutate(payload, lambda p: (p["case"].update(U_id="MPX1009"), [i.update(U_id="MPX1009")
                                                                              for i in p["images"]]))
    path.write_text(json.dumps(payload))
    with pytest.raises(ValidationError, match="a case with this id is already in the source"):
        add_case(path, images, source_dir)


def test_cli_adds_and_reports_errors_in_one_line(source: Path, new_case: tuple[Path, Path, dict]) -> None:
    from medpix_tui.cli import main

    path, images, _ = new_case
    runner = CliRunner()
    ok = runner.invoke(main, ["add-case", str(path), "--images", str(images), "--source", str(source)])
    assert ok.exit_code == 0, ok.output
    assert ok.output.strip() == f"added case LAB0001 with 3 image(s) (2 CT, 1 MR) to {source}"
    again = runner.invoke(main, ["add-case", str(path), "--images", str(images), "--source", str(source)])
    assert again.exit_code == 2
    lines = again.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid new case: 4 problem(s)")
    assert "a case with this id is already in the source" in lines[0]
    help_text = runner.invoke(main, ["add-case", "--help"]).output
    assert '"images"' in help_text and "--images" in help_text
