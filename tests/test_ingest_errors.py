"""Bad source folders: one clear line, exit status 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from medpix_tui.cli import main
from tests.support import tiny_case, tiny_image, tree_digest, write_source


def _bad(tmp: Path, kind: str) -> Path:
    src = tmp / "src"
    if kind == "no-folder":
        return tmp / "missing"
    if kind == "truncated-json":
        write_source(src)
        (src / "Case_topic.json").write_text('[{"U_id": "T1", "TAC": [')
    elif kind == "not-utf8":
        write_source(src)
        (src / "Descriptions.json").write_bytes(b'[{"Type": "CT\xff\xfe"}]')
    elif kind == "not-array":
        write_source(src)
        (src / "Descriptions.json").write_text('{"Type": "CT"}')
    elif kind == "missing-key":
        c = tiny_case("T1", ["T1_a"], [])
        del c["Topic"]
        write_source(src, cases=[c], images=[tiny_image("T1", "T1_a", "CT")])
    elif kind == "wrong-type":
        c = tiny_case("T1", ["T1_a"], [])
        c["TAC"] = "T1_a"
        write_source(src, cases=[c], images=[tiny_image("T1", "T1_a", "CT")])
    elif kind == "bad-modality":
        write_source(src, cases=[tiny_case("T1", ["T1_a"], [])], images=[tiny_image("T1", "T1_a", "XR")])
    elif kind == "duplicate-case":
        write_source(src, cases=[tiny_case("T1", ["T1_a"], []), tiny_case("T1", [], [])],
                     images=[tiny_image("T1", "T1_a", "CT")])
    elif kind == "duplicate-image":
        write_source(src, cases=[tiny_case("T1", ["T1_a"], [])], images=[tiny_image("T1", "T1_a", "CT")] * 2)
    elif kind == "dangling-uid":
        write_source(src, cases=[tiny_case("T1", ["T1_a"], [])],
                     images=[tiny_image("T1", "T1_a", "CT"), tiny_image("T9", "T9_a", "CT")])
    elif kind == "unlisted-name":
        write_source(src, cases=[tiny_case("T1", ["T1_a", "T1_z"], [])], images=[tiny_image("T1", "T1_a", "CT")])
    elif kind == "path-traversal":
        write_source(src, cases=[tiny_case("T1", ["../etc/passwd"], [])],
                     images=[tiny_image("T1", "../etc/passwd", "CT")])
    elif kind == "absolute-path":
        write_source(src, cases=[tiny_case("T1", ["/abs"], [])], images=[tiny_image("T1", "/abs", "CT")])
    elif kind == "missing-image-file":
        write_source(src)
        (src / "images" / "T1_a.png").unlink()
    elif kind == "empty-image-file":
        write_source(src)
        (src / "images" / "T1_a.png").write_bytes(b"")
    elif kind == "truncated-png":
        write_source(src)
        data = (src / "images" / "T1_a.png").read_bytes()
        (src / "images" / "T1_a.png").write_bytes(data[: len(data) // 2])
    elif kind == "not-an-image":
        write_source(src)
        (src / "images" / "T1_a.png").write_text("<html>not found</html>")
    elif kind == "huge-caption":
        write_source(src, cases=[tiny_case("T1", ["T1_a"], [])],
                     images=[tiny_image("T1", "T1_a", "CT", "x" * 2_000_000)])
    elif kind == "modality-list-mismatch":
        write_source(src, cases=[tiny_case("T1", ["T1_a"], [])], images=[tiny_image("T1", "T1_a", "MR")])
    elif kind == "bad-split-file":
        write_source(src, splits={"train": "T1"})
    elif kind == "age-out-of-range":  # add-case refused it; a source holding one must be refused alike
        image = tiny_image("T1", "T1_a", "CT")
        image["Description"]["Age"] = "130"
        write_source(src, cases=[tiny_case("T1", ["T1_a"], [])], images=[image])
    return src


CASES = {
    "no-folder": "source folder not found",
    "truncated-json": "Case_topic.json: invalid JSON at line 1",
    "not-utf8": "Descriptions.json: not UTF-8 text",
    "not-array": "Descriptions.json: must be a JSON array",
    "missing-key": "Case_topic.json:#0 (T1):Topic: missing",
    "wrong-type": "Case_topic.json:#0 (T1):TAC: must be a list",
    "bad-modality": "Type: must be CT or MR, got 'XR'",
    "duplicate-case": "U_id: duplicated case id",
    "duplicate-image": "image: duplicated image id",
    "dangling-uid": "U_id: no case with U_id 'T9'",
    "unlisted-name": "image 'T1_z' has no image document",
    "path-traversal": "not a plain image id: '../etc/passwd'",
    "absolute-path": "not a plain image id: '/abs'",
    "missing-image-file": "images/T1_a.png:T1_a: image file is missing",
    "empty-image-file": "images/T1_a.png:T1_a: image file is empty",
    "truncated-png": "images/T1_a.png:T1_a: image file does not decode",
    "not-an-image": "images/T1_a.png:T1_a: image file does not decode",
    "huge-caption": "Description.Caption: text too long (2000000 characters",
    "modality-list-mismatch": "image 'T1_a' is MR, listed under TAC",
    "bad-split-file": "uid_list.json:train: must be a list of U_id",
    "age-out-of-range": "Description.Age: must be a whole number of years from 0 to 120 written as plain text",
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_bad_source_is_refused_in_one_line(tmp_path: Path, kind: str) -> None:
    src = _bad(tmp_path, kind)
    before = tree_digest(tmp_path)
    out = tmp_path / "bundle"
    result = CliRunner().invoke(main, ["bundle", "build", "--source", str(src), "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert CASES[kind] in lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()
    assert tree_digest(tmp_path) == before, "nothing may be written or changed"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    cases = [tiny_case("T1", ["T1_a", "gone"], []), {"U_id": "T2"}]
    images = [tiny_image("T1", "T1_a", "XR"), tiny_image("T7", "T7_a", "CT")]
    src = write_source(tmp_path / "src", cases=cases, images=images)
    result = CliRunner().invoke(main, ["bundle", "build", "--source", str(src), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2
    for needle in ("T2", "TAC: missing", "must be CT or MR"):
        assert needle in result.output


def test_valid_tiny_source_builds(tmp_path: Path) -> None:
    src = write_source(tmp_path / "src", splits={"train": ["T1"], "dev": [], "test": ["T2"]})
    out = tmp_path / "b"
    result = CliRunner().invoke(main, ["bundle", "build", "--source", str(src), "--out", str(out), "--no-model"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["Image_Descriptions"] == 3 and manifest["counts"]["splits"] == {"train": 2, "test": 1}


def test_every_problem_can_be_listed(tmp_path: Path) -> None:
    names = [f"M1_{i:02d}" for i in range(25)]
    source = write_source(tmp_path / "src", [tiny_case("M1", names, [])], [tiny_image("M1", n, "CT") for n in names],
                          write_images=False)
    args = ["bundle", "build", "--source", str(source), "--out", str(tmp_path / "b"), "--no-model"]
    short = CliRunner().invoke(main, args)
    assert short.exit_code == 2 and len(short.output.splitlines()) == 1
    assert short.output.rstrip().endswith("... and 5 more (bundle build --all-problems lists them all)")
    full = CliRunner().invoke(main, [*args, "--all-problems"])
    lines = full.output.splitlines()
    assert full.exit_code == 2 and len(lines) == 26
    assert lines[-1] == "error: invalid source: 25 problem(s), listed above"
    assert [line.split(":")[1] for line in lines[:-1]] == [f" images/{n}.png" for n in names]
    assert not (tmp_path / "b").exists()
