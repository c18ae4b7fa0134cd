"""Bounded and checked inputs (issue 23, items 4, 5 and 8): each attack of the issue, refused in one line.

Ingest (``bundle build``) and ``add-case`` share one implementation of every check, so each
source attack runs through both. The hostile files are made up here: header-only PNG bombs
(as ``tests/test_hardening_badinput.py`` makes them), sparse 2 GB files (no disk used),
documents in the release's schema (``tests/support.py``) with one field made hostile.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from textual.widgets import Input, Static

from medpix_tui.bundle import build_bundle, open_bundle
from medpix_tui.cli import main
from medpix_tui.errors import QueryError
from medpix_tui.query import MAX_DEPTH, compile_regex, parse_filter, validate_filter
from medpix_tui.source import MAX_JSON_BYTES, MAX_PROBLEMS, is_plain_id
from medpix_tui.store import IMAGES
from tests.support import tiny_case, tiny_image, tree_digest, write_source
from tests.tui_support import SIZE, make_app, settle, wait_for

TWO_GB = 2 * 1024 ** 3
ROOT = Path(__file__).resolve().parents[1]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header(width: int, height: int) -> bytes:
    """A PNG declaring ``width`` x ``height`` grey pixels with no pixel data (a bomb when large)."""
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(b"")) + png_chunk(b"IEND", b""))


def sparse(path: Path, head: bytes, size: int) -> Path:
    """``head`` followed by zeros up to ``size`` bytes, without writing them (a sparse file)."""
    path.write_bytes(head)
    with open(path, "r+b") as f:
        f.truncate(size)
    return path


def one_line(args: list[str], expected: str, code: int = 2) -> str:
    result = CliRunner().invoke(main, args, env={"MEDPIX_MONGO_URI": None})
    assert result.exit_code == code, result.output[-2000:]
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.output[-2000:]
    assert "internal error" not in lines[0] and "Traceback" not in result.output
    return lines[0]


# -- one attack, through both doors -------------------------------------------------------

def _case(uid: str = "N1", name: str = "N1_a") -> tuple[dict[str, Any], dict[str, Any]]:
    return tiny_case(uid, [name], []), tiny_image(uid, name, "CT")


def _png(path: Path) -> bytes:
    from PIL import Image

    Image.new("L", (16, 16), color=90).save(path)
    return path.read_bytes()


def _dollar_key(case: dict, image: dict) -> None:
    image["Description"]["$where"] = "sleep(1000)"


def _nul_key(case: dict, image: dict) -> None:
    image["Description"]["Cap\x00tion"] = "x"


def _empty_key(case: dict, image: dict) -> None:
    case["Case"][""] = "x"


def _dollar_top_key(case: dict, image: dict) -> None:
    image["$set"] = "x"


def _huge_int(case: dict, image: dict) -> None:
    image["Extra"] = 2 ** 70


def _nested_dollar(case: dict, image: dict) -> None:
    case["Extra"] = {"a": [{"$gt": 1}]}


def _lone_surrogate(case: dict, image: dict) -> None:
    image["Description"]["Caption"] = "\ud800 from a JSON escape"


DOC_ATTACKS = {
    "lone-surrogate": (_lone_surrogate, "Description.Caption: text holds a lone surrogate"),
    "dollar-key": (_dollar_key, "Description.$where: invalid key"),
    "nul-key": (_nul_key, "Description.Cap\\x00tion: invalid key"),
    "empty-key": (_empty_key, "Case.: invalid key"),
    "dollar-top-key": (_dollar_top_key, "$set: invalid key"),
    "integer-beyond-64-bits": (_huge_int, "Extra: integer out of range (1180591620717411303424"),
    "nested-dollar-key": (_nested_dollar, "Extra.a.0.$gt: invalid key"),
}


def _write_source_with(root: Path, case: dict, image: dict, png: bytes | None = None) -> Path:
    src = write_source(root, [case], [image])
    if png is not None:
        (src / "images" / f"{image['image']}.png").write_bytes(png)
    return src


@pytest.mark.parametrize("name", sorted(DOC_ATTACKS))
def test_document_attack_is_refused_by_build_and_add_case(name: str, tmp_path: Path) -> None:
    spoil, expected = DOC_ATTACKS[name]
    case, image = _case()
    spoil(case, image)
    src = _write_source_with(tmp_path / "src", case, image)
    one_line(["bundle", "build", "--source", str(src), "--out", str(tmp_path / "out"), "--no-model"], expected)
    assert not (tmp_path / "out").exists()

    target = write_source(tmp_path / "target")
    before = tree_digest(target)
    (tmp_path / "imgs").mkdir()
    _png(tmp_path / "imgs" / f"{image['image']}.png")
    (tmp_path / "case.json").write_text(json.dumps({"case": case, "images": [image]}))
    one_line(["add-case", str(tmp_path / "case.json"), "--images", str(tmp_path / "imgs"), "--source", str(target)],
             expected)
    assert tree_digest(target) == before, "add-case changed nothing"


def _trailing_zeros(path: Path) -> None:
    png = _png(path)
    sparse(path, png, len(png) + TWO_GB)


def _trailing_megabyte(path: Path) -> None:
    png = _png(path)
    sparse(path, png, len(png) + 2 ** 20)


def _bomb_20k(path: Path) -> None:
    path.write_bytes(png_header(20_000, 20_000))


def _bomb_11k(path: Path) -> None:
    path.write_bytes(png_header(11_000, 11_000))


def _just_over_the_cap(path: Path) -> None:
    path.write_bytes(png_header(5_000, 4_000))


def _jpeg_named_png(path: Path) -> None:
    from PIL import Image

    Image.new("L", (16, 16)).save(path, format="JPEG")


def _truncated(path: Path) -> None:
    path.write_bytes(_png(path)[:40])


IMAGE_ATTACKS = {
    "png-then-2-gb-of-zeros": (_trailing_zeros, "image file too large (21474837"),
    "png-then-1-mb-of-zeros": (_trailing_megabyte, f"data after the PNG's end (IEND): {2 ** 20} bytes"),
    "png-20000x20000": (_bomb_20k, "image too large (20000 x 20000 pixels, limit 16000000)"),
    "png-11000x11000": (_bomb_11k, "image too large (11000 x 11000 pixels"),
    "png-20-megapixels": (_just_over_the_cap, "image too large (5000 x 4000 pixels"),
    "jpeg-named-png": (_jpeg_named_png, "image file does not decode (not a PNG file)"),
    "truncated-png": (_truncated, "image file does not decode (truncated PNG"),
}


@pytest.mark.parametrize("name", sorted(IMAGE_ATTACKS))
def test_image_attack_is_refused_by_build_and_add_case(name: str, tmp_path: Path) -> None:
    make, expected = IMAGE_ATTACKS[name]
    case, image = _case()
    src = write_source(tmp_path / "src", [case], [image])
    make(src / "images" / "N1_a.png")
    started = time.monotonic()
    one_line(["bundle", "build", "--source", str(src), "--out", str(tmp_path / "out"), "--no-model"], expected)
    assert time.monotonic() - started < 30, "refused from the header, nothing decoded or copied"
    assert not (tmp_path / "out").exists()

    target = write_source(tmp_path / "target")
    before = tree_digest(target)
    (tmp_path / "imgs").mkdir()
    make(tmp_path / "imgs" / "N1_a.png")
    (tmp_path / "case.json").write_text(json.dumps({"case": case, "images": [image]}))
    one_line(["add-case", str(tmp_path / "case.json"), "--images", str(tmp_path / "imgs"), "--source", str(target)],
             expected)
    assert tree_digest(target) == before


def test_bomb_warning_is_an_error_for_every_reader(tmp_path: Path) -> None:
    """Between Pillow's limit and twice it Pillow only warns; once the library is imported it is an error
    (in a fresh interpreter: pytest resets warning filters around each test)."""
    path = tmp_path / "big.png"
    path.write_bytes(png_header(9_000, 9_000))  # 81 M pixels: over 64 M, under 128 M
    code = ("import sys, medpix_tui.source\nfrom PIL import Image\n"
            "try:\n    Image.open(sys.argv[1])\nexcept Image.DecompressionBombWarning:\n    print('refused')")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], check=False, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.strip() == "refused" and proc.stderr == "", proc.stderr


# -- ids, splits, JSON files -----------------------------------------------------------

@pytest.mark.parametrize("name", ["T1_a\n", "T1_a\r", "T1 a", "T1_a\t", "T1\x00", "\u00a0T1", "T1_a\u2028", ""])
def test_ids_with_whitespace_or_controls_are_not_plain(name: str) -> None:
    assert not is_plain_id(name)


def test_image_id_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    src = write_source(tmp_path / "src", [tiny_case("T1", ["T1_a\n"], [])], [tiny_image("T1", "T1_a\n", "CT")])
    assert (src / "images" / "T1_a\n.png").exists()  # the file exists, named as the attack named it
    one_line(["bundle", "build", "--source", str(src), "--out", str(tmp_path / "out"), "--no-model"],
             "not a plain id: 'T1_a\\n'")


def test_case_id_with_a_trailing_newline_is_refused_by_add_case(tmp_path: Path) -> None:
    target = write_source(tmp_path / "target")
    case, image = _case("N1\n", "N1_a")
    (tmp_path / "imgs").mkdir()
    _png(tmp_path / "imgs" / "N1_a.png")
    (tmp_path / "case.json").write_text(json.dumps({"case": case, "images": [image]}))
    one_line(["add-case", str(tmp_path / "case.json"), "--images", str(tmp_path / "imgs"), "--source", str(target)],
             "U_id: not a plain id: 'N1\\n'")


def test_case_in_two_splits_is_refused(tmp_path: Path) -> None:
    src = write_source(tmp_path / "src", splits={"train": ["T1", "T2"], "test": ["T1"]})
    one_line(["bundle", "build", "--source", str(src), "--out", str(tmp_path / "out"), "--no-model"],
             "splitted_dataset/uid_list.json:T1:test: case is also listed under train: a case belongs to one split")


def test_two_gb_descriptions_json_is_refused_by_its_size(tmp_path: Path) -> None:
    src = write_source(tmp_path / "src")
    sparse(src / "Descriptions.json", b"[", TWO_GB)
    started = time.monotonic()
    one_line(["bundle", "build", "--source", str(src), "--out", str(tmp_path / "out"), "--no-model"],
             f"Descriptions.json: file too large ({TWO_GB} bytes, limit {MAX_JSON_BYTES})")
    assert time.monotonic() - started < 10, "refused without reading it"
    case_json = sparse(tmp_path / "case.json", b"{", TWO_GB)
    (tmp_path / "imgs").mkdir()
    one_line(["add-case", str(case_json), "--images", str(tmp_path / "imgs"),
              "--source", str(write_source(tmp_path / "t"))],
             "case.json: file too large")


def test_json_integer_of_5000_digits_is_one_line(tmp_path: Path) -> None:
    src = write_source(tmp_path / "src")
    (src / "Case_topic.json").write_text("[" + "9" * 5000 + "]")
    one_line(["bundle", "build", "--source", str(src), "--out", str(tmp_path / "out"), "--no-model"],
             "Case_topic.json: invalid JSON: Exceeds the limit")


def test_a_million_bad_documents_stop_at_the_problem_cap(tmp_path: Path) -> None:
    src = write_source(tmp_path / "src")
    (src / "Descriptions.json").write_text("[" + ",".join(["{}"] * 1_000_000) + "]")
    line = one_line(["bundle", "build", "--source", str(src), "--out", str(tmp_path / "out"), "--no-model"],
                    "problem(s)")
    assert f"invalid source: {MAX_PROBLEMS} problem(s)" in line


# -- filters and regexes ---------------------------------------------------------------------

@pytest.mark.parametrize("pattern", ["(?V1)glioma", "(?au)x", "(?aL)x", "(" * 499 + ")" * 499])
def test_regex_the_regex_module_rejects_is_one_line(pattern: str, real_bundle_path: Path) -> None:
    one_line(["query", "--bundle", str(real_bundle_path), "--field", f"Description.Caption={pattern}"], "invalid regex")
    with pytest.raises(QueryError):
        compile_regex(pattern, "i")


def test_filter_nested_900_levels_is_refused(real_bundle_path: Path) -> None:
    nested = '{"$and":[' * 900 + "{}" + "]}" * 900
    one_line(["query", "--bundle", str(real_bundle_path), "--filter", nested], f"nested deeper than {MAX_DEPTH} levels")
    deep: dict[str, Any] = {}
    for _ in range(5000):  # built in Python, beyond what json.loads would parse
        deep = {"a": deep}
    with pytest.raises(QueryError, match="nested deeper"):
        validate_filter({"x": deep})


def test_filter_of_117_kb_is_refused_by_its_size(real_bundle_path: Path) -> None:
    flt = json.dumps({"$or": [{"Type": {"$regex": f"(a|b)*z{i}"}} for i in range(3200)]})
    assert len(flt) > 117_000
    one_line(["query", "--bundle", str(real_bundle_path), "--filter", flt], "filter too long")


def test_filter_of_many_conditions_is_refused() -> None:
    with pytest.raises(QueryError, match="filter too large"):
        validate_filter({"$or": [{"a": {"$ne": str(i)}} for i in range(3000)]})
    assert validate_filter({"image": {"$in": [str(i) for i in range(50_000)]}}), "long $in lists of names still work"


def test_filter_integer_beyond_64_bits_is_refused() -> None:
    with pytest.raises(QueryError, match="64-bit"):
        parse_filter('{"Description.Age": {"$gt": 100000000000000000000000}}')


def test_filter_evaluation_has_a_time_limit(real_bundle_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("medpix_tui.scan.FILTER_TIME_LIMIT", 0.0)
    store = open_bundle(real_bundle_path).store
    with pytest.raises(QueryError, match="filter took longer than 0 s"):
        store.find(IMAGES, {"Description.Age": {"$gt": "1"}})


@pytest.mark.asyncio
async def test_tui_field_query_with_rejected_flags_is_a_notice(tmp_path: Path) -> None:
    bundle = open_bundle(build_bundle(write_source(tmp_path / "src"), tmp_path / "b", with_model=False))
    app = make_app(bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        before = app.result
        app.screen.query_one("#fq-path", Input).value = "Description.Caption"
        app.screen.query_one("#fq-regex", Input).value = "(?V1)glioma"
        await wait_for(pilot, lambda: any("invalid regex" in n.message for n in app._notifications))
        await settle(pilot)
        assert app.is_running and before is not None and app.result is None  # the error state: no stale result
        assert "invalid regex" in str(app.screen.query_one("#status", Static).render())
