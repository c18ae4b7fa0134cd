"""Bad-input corpus: every case is refused with one ``error:`` line, its exit status, and nothing written.

Each entry builds its bad input under the test's own folder, runs one ``medpix-tui`` command
and checks: the exit status, exactly one output line (``error: ...`` holding the expected
message), no traceback, no output created, and every file under the test folder and both
bundles unchanged. ``tests/test_ingest_errors.py`` (20 sources) and the CLI cases of
``tests/test_export_cli.py`` (9) are not repeated here; this corpus adds the rest.
Cases marked ``nobody`` run as user ``nobody`` (root ignores permissions).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from medpix_tui.bundle import build_bundle, pack_bundle
from medpix_tui.cli import main
from tests.support import tiny_case, tiny_image, tree_digest, write_source

ROOT = Path(__file__).resolve().parents[1]


# -- helpers -------------------------------------------------------------------------

def let_nobody_in(path: Path) -> None:
    """Give ``nobody`` search and read access to ``path`` and every folder above it."""
    for p in [path, *path.parents]:
        if p != Path("/") and os.stat(p).st_mode & 0o005 != 0o005:
            p.chmod(os.stat(p).st_mode | 0o005)


def run_as_nobody(args: list[str], home: Path, timeout: float = 120) -> tuple[int, str]:
    """``python -m medpix_tui ARGS`` as user nobody (plain subprocess when not root)."""
    cmd = [sys.executable, "-m", "medpix_tui", *args]
    if os.geteuid() == 0:
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *cmd]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(home), "MEDPIX_CACHE": str(home / "cache")}
    env.pop("MEDPIX_MONGO_URI", None)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=home,
                         stdin=subprocess.DEVNULL)
    return out.returncode, out.stdout + out.stderr


def stat_tree(root: Path) -> dict[str, tuple[int, int, int]]:
    """relative path -> (size, mtime, mode) of every entry: cheap proof a large tree is untouched."""
    return {p.relative_to(root).as_posix(): (p.lstat().st_size, p.lstat().st_mtime_ns, p.lstat().st_mode)
            for p in sorted(root.rglob("*"))}


def all_entries(root: Path) -> dict[str, str]:
    """relative path -> sha256 (files) or 'dir' (folders): leftovers of any kind show up."""
    out = {rel: sha for rel, sha in tree_digest(root).items()}
    out.update({p.relative_to(root).as_posix(): "dir" for p in root.rglob("*") if p.is_dir()})
    return out


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` pixels (a decompression bomb when large)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def dicom_file(path: Path, *, pixels: bytes | None = None, rows: int = 64, cols: int = 64) -> Path:
    """A small made-up CT DICOM file, with the given pixel bytes or none at all."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName = "CT", "Madeup^Test"
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = rows, cols, 16, 16, 15
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    if pixels is not None:
        ds.PixelData = pixels
    ds.save_as(path, enforce_file_format=True)
    return path


# -- the corpus ----------------------------------------------------------------------

@dataclass
class Ctx:
    """What a case may use: its own folder, the session bundle and a tiny bundle (both read-only)."""

    tmp: Path
    bundle: Path
    tiny: Path

    def source(self, cases: list[Any] | None = None, images: list[Any] | None = None, **kw: Any) -> Path:
        return write_source(self.tmp / "src", cases, images, **kw)

    def build(self, src: Path) -> list[str]:
        return ["bundle", "build", "--source", str(src), "--out", str(self.tmp / "out"), "--no-model"]

    def tiny_copy(self) -> Path:
        return Path(shutil.copytree(self.tiny, self.tmp / "b"))

    def query(self, *args: str) -> list[str]:
        return ["query", "--bundle", str(self.bundle), *args]


@dataclass
class Bad:
    area: str
    setup: Callable[[Ctx], list[str]]
    message: str
    code: int = 2
    nobody: bool = False
    #: classify gets as far as reading the file (the model is stubbed when the bundle has none)
    reads_file: bool = False
    #: a known bug in code this suite does not own (strict: the test fails once it is fixed)
    xfail: str | None = None


CORPUS: dict[str, Bad] = {}


def bad(area: str, message: str, code: int = 2, **kw: Any) -> Callable:
    def register(fn: Callable[[Ctx], list[str]]) -> Callable:
        CORPUS[f"{area}-{fn.__name__.strip('_').replace('_', '-')}"] = Bad(area, fn, message, code, **kw)
        return fn
    return register


# ingest: bundle build --source (beyond the 20 sources of test_ingest_errors.py)

@bad("ingest", "Description.Caption: text too long (5000000 characters")
def caption_5mb(c: Ctx) -> list[str]:  # a 50 MB file is refused by its size first (test_hostile_inputs.py)
    return c.build(c.source([tiny_case("T1", ["T1_a"], [])], [tiny_image("T1", "T1_a", "CT", "x" * 5_000_000)]))


@bad("ingest", "Case_topic.json: must be a JSON array, got null")
def json_null(c: Ctx) -> list[str]:
    src = c.source()
    (src / "Case_topic.json").write_text("null")
    return c.build(src)


@bad("ingest", "Descriptions.json: invalid JSON: nested too deeply")
def json_nested_100k(c: Ctx) -> list[str]:
    src = c.source()
    (src / "Descriptions.json").write_text("[" * 100_000 + "]" * 100_000)
    return c.build(src)


@bad("ingest", "Case_topic.json: invalid JSON at line 1 column 1: Unexpected UTF-8 BOM")
def json_bom(c: Ctx) -> list[str]:
    src = c.source()
    (src / "Case_topic.json").write_bytes(b"\xef\xbb\xbf" + (src / "Case_topic.json").read_bytes())
    return c.build(src)


@bad("ingest", "Descriptions.json: invalid JSON at line 1 column 1: Expecting value")
def json_empty_file(c: Ctx) -> list[str]:
    src = c.source()
    (src / "Descriptions.json").write_bytes(b"")
    return c.build(src)


@bad("ingest", "Case_topic.json: not UTF-8 text (byte 0)")
def json_utf16(c: Ctx) -> list[str]:
    src = c.source()
    (src / "Case_topic.json").write_bytes((src / "Case_topic.json").read_text().encode("utf-16"))
    return c.build(src)


@bad("ingest", "Descriptions.json: file is missing")
def descriptions_missing(c: Ctx) -> list[str]:
    src = c.source()
    (src / "Descriptions.json").unlink()
    return c.build(src)


@bad("ingest", "Case_topic.json:#1: must be an object, got str")
def case_not_object(c: Ctx) -> list[str]:
    return c.build(c.source([tiny_case("T1", ["T1_a"], []), "T2"], [tiny_image("T1", "T1_a", "CT")]))


@bad("ingest", "Descriptions.json:#0 (T1_a):Description: must be an object, got str")
def description_not_object(c: Ctx) -> list[str]:
    img = tiny_image("T1", "T1_a", "CT")
    img["Description"] = "a caption"
    return c.build(c.source([tiny_case("T1", ["T1_a"], [])], [img]))


@bad("ingest", "Description.Caption: must be text or null, got int")
def caption_is_number(c: Ctx) -> list[str]:
    img = tiny_image("T1", "T1_a", "CT")
    img["Description"]["Caption"] = 42
    return c.build(c.source([tiny_case("T1", ["T1_a"], [])], [img]))


@bad("ingest", "Description.Age: must be text or null, got float")
def age_is_nan(c: Ctx) -> list[str]:
    src = c.source([tiny_case("T1", ["T1_a"], [])], [tiny_image("T1", "T1_a", "CT")])
    (src / "Descriptions.json").write_text((src / "Descriptions.json").read_text().replace('"Age": "40"', '"Age": NaN'))
    return c.build(src)


@bad("ingest", "Case_topic.json:#0:U_id: not a plain id: '7'")
def uid_is_number(c: Ctx) -> list[str]:
    case = tiny_case("T1", ["T1_a"], [])
    case["U_id"] = 7
    return c.build(c.source([case], [tiny_image("T1", "T1_a", "CT")]))


@bad("ingest", "not a plain image id: 'T1\\\\a'")
def name_with_backslash(c: Ctx) -> list[str]:
    return c.build(c.source([tiny_case("T1", ["T1\\a"], [])], [tiny_image("T1", "T1\\a", "CT")]))


@bad("ingest", "not a plain image id: '.hidden'")
def name_hidden_dotfile(c: Ctx) -> list[str]:
    return c.build(c.source([tiny_case("T1", [".hidden"], [])], [tiny_image("T1", ".hidden", "CT")]))


@bad("ingest", "not a plain image id: 'T1\\x00a'")
def name_with_nul(c: Ctx) -> list[str]:
    return c.build(c.source([tiny_case("T1", ["T1\x00a"], [])], [tiny_image("T1", "T1\x00a", "CT")],
                            write_images=False))


@bad("ingest", "not a plain id: '..'")
def uid_dotdot(c: Ctx) -> list[str]:
    return c.build(c.source([tiny_case("..", ["T1_a"], [])], [tiny_image("..", "T1_a", "CT")]))


@bad("ingest", "images: image folder is missing")
def image_folder_missing(c: Ctx) -> list[str]:
    src = c.source()
    shutil.rmtree(src / "images")
    return c.build(src)


@bad("ingest", "image 'T1_a' belongs to case 'T1'")
def image_of_other_case(c: Ctx) -> list[str]:
    cases = [tiny_case("T1", ["T1_a"], []), tiny_case("T2", ["T1_a"], [])]
    return c.build(c.source(cases, [tiny_image("T1", "T1_a", "CT")]))


@bad("ingest", "Descriptions.json:#1 (T1_b):image: not listed in its case's TAC or MRI")
def image_unlisted(c: Ctx) -> list[str]:
    return c.build(c.source([tiny_case("T1", ["T1_a"], [])],
                            [tiny_image("T1", "T1_a", "CT"), tiny_image("T1", "T1_b", "CT")]))


@bad("ingest", "Location Category: must be text, got list")
def location_is_list(c: Ctx) -> list[str]:
    img = tiny_image("T1", "T1_a", "CT")
    img["Location Category"] = ["Head"]
    return c.build(c.source([tiny_case("T1", ["T1_a"], [])], [img]))


@bad("ingest", "images/T1_a.png:T1_a: image too large (30000 x 30000 pixels, limit 16000000)")
def png_bomb_header(c: Ctx) -> list[str]:
    src = c.source()
    (src / "images" / "T1_a.png").write_bytes(png_header(30_000, 30_000))
    return c.build(src)


@bad("ingest", "images/T1_a.png:T1_a: image file does not decode")
def image_symlink_outside(c: Ctx) -> list[str]:
    src = c.source()
    (src / "images" / "T1_a.png").unlink()
    (src / "images" / "T1_a.png").symlink_to("/etc/passwd")
    return c.build(src)


@bad("ingest", "images/T1_a.png:T1_a: image file is missing")
def image_is_a_folder(c: Ctx) -> list[str]:
    src = c.source()
    (src / "images" / "T1_a.png").unlink()
    (src / "images" / "T1_a.png").mkdir()
    return c.build(src)


@bad("ingest", "splitted_dataset/uid_list.json: must be an object of split name -> list of U_id")
def split_file_null(c: Ctx) -> list[str]:
    src = c.source(splits={"train": ["T1"]})
    (src / "splitted_dataset" / "uid_list.json").write_text("null")
    return c.build(src)


@bad("ingest", "source folder not found")
def source_is_a_file(c: Ctx) -> list[str]:
    c.tmp.mkdir(parents=True, exist_ok=True)
    (c.tmp / "file.json").write_text("[]")
    return c.build(c.tmp / "file.json")


@bad("ingest", "folder does not exist: ")
def out_parent_missing(c: Ctx) -> list[str]:
    return ["bundle", "build", "--source", str(c.source()), "--out", str(c.tmp / "no" / "such" / "b"), "--no-model"]


@bad("ingest", "refusing to build into")
def force_out_is_the_source(c: Ctx) -> list[str]:
    src = c.source()
    return ["bundle", "build", "--source", str(src), "--out", str(src), "--force", "--no-model"]


@bad("ingest", "overlaps the source folder")
def force_out_is_the_sources_images(c: Ctx) -> list[str]:
    src = c.source()
    return ["bundle", "build", "--source", str(src), "--out", str(src / "images"), "--force", "--no-model"]


@bad("ingest", "not a folder this tool wrote (no manifest.json)")
def force_over_a_folder_that_is_not_a_bundle(c: Ctx) -> list[str]:
    home = c.tmp / "home"
    home.mkdir(parents=True)
    (home / "thesis.tex").write_text("years of work")
    return ["bundle", "build", "--source", str(c.source()), "--out", str(home), "--force", "--no-model"]


@bad("ingest", "cannot write in", nobody=True)
def out_in_read_only_folder(c: Ctx) -> list[str]:
    src = c.source()
    ro = c.tmp / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    return ["bundle", "build", "--source", str(src), "--out", str(ro / "b"), "--no-model"]


# query: operator injection, invalid and catastrophic regexes, bad paths and windows

@bad("query", "operator $function is not allowed")
def function_operator(c: Ctx) -> list[str]:
    return c.query("--filter", '{"$function": {"body": "function() {return true}", "args": [], "lang": "js"}}')


@bad("query", "operator $expr is not allowed")
def expr_operator(c: Ctx) -> list[str]:
    return c.query("--filter", '{"$expr": {"$gt": ["$Description.Age", 1]}}')


@bad("query", "operator $where is not allowed")
def where_nested_in_or(c: Ctx) -> list[str]:
    return c.query("--filter", '{"$or": [{"Type": "CT"}, {"$and": [{"$where": "sleep(100000)"}]}]}')


@bad("query", "operator $where is not allowed inside an embedded document")
def where_in_embedded_document(c: Ctx) -> list[str]:
    return c.query("--filter", '{"Description": {"Caption": {"$where": "1"}}}')


@bad("query", "operator $function is not allowed")
def function_in_elem_match(c: Ctx) -> list[str]:
    return c.query("-c", "Clinical_Reports", "--filter", '{"TAC": {"$elemMatch": {"$function": {}}}}')


@bad("query", "operator $expr is not allowed inside an embedded document")
def expr_in_eq_operand(c: Ctx) -> list[str]:
    return c.query("--filter", '{"Type": {"$in": [{"$expr": 1}]}}')


@bad("query", "operator $jsonSchema is not allowed")
def json_schema_operator(c: Ctx) -> list[str]:
    return c.query("--filter", '{"$jsonSchema": {"required": ["Type"]}}')


@bad("query", "took longer than 2 s; simplify it")
def catastrophic_regex(c: Ctx) -> list[str]:
    return c.query("--field", "Description.Caption=^(.*?a){20}(?<=z)$")


@bad("query", "$regex inside $elemMatch")
def catastrophic_regex_in_elem_match(c: Ctx) -> list[str]:
    return c.query("-c", "Clinical_Reports", "--filter", r'{"TAC": {"$elemMatch": {"$regex": "^(\\w|\\w)*!"}}}')


@bad("query", "invalid regex '(': missing )")
def invalid_regex_under_not(c: Ctx) -> list[str]:
    return c.query("--filter", '{"Type": {"$not": {"$regex": "("}}}')


@bad("query", "invalid regex")
def regex_python_only_syntax_differs(c: Ctx) -> list[str]:
    return c.query("--field", "Type=[[:alpha:]")


@bad("query", "$regex must be a string, got int")
def regex_not_a_string(c: Ctx) -> list[str]:
    return c.query("--filter", '{"Type": {"$regex": 5}}')


@bad("query", "invalid $options 'z'")
def regex_bad_options(c: Ctx) -> list[str]:
    return c.query("--filter", '{"Type": {"$regex": "c", "$options": "z"}}')


@bad("query", "$options needs $regex")
def options_alone_in_elem_match(c: Ctx) -> list[str]:
    return c.query("-c", "Clinical_Reports", "--filter", '{"TAC": {"$elemMatch": {"$options": "i"}}}')


@bad("query", "regex too long (1001 characters, limit 1000)")
def regex_too_long(c: Ctx) -> list[str]:
    return c.query("--field", "Type=" + "a" * 1001)


@bad("query", "filter nested deeper than 20 levels")
def filter_too_deep(c: Ctx) -> list[str]:
    flt: dict = {"Type": "CT"}
    for _ in range(25):
        flt = {"$and": [flt]}
    return c.query("--filter", json.dumps(flt))


@bad("query", "invalid field path '$where'")
def field_path_operator(c: Ctx) -> list[str]:
    return c.query("--field", "$where=1")


@bad("query", "invalid field path '$natural'")
def sort_on_operator(c: Ctx) -> list[str]:
    return c.query("--sort", "$natural")


@bad("query", "invalid field path '$x'")
def projection_operator(c: Ctx) -> list[str]:
    return c.query("--fields-out", "image,$x")


@bad("query", "skip and limit must be zero or positive")
def negative_skip(c: Ctx) -> list[str]:
    return c.query("--skip", "-1")


@bad("query", "a filter must be a JSON object, got list")
def filter_is_a_list(c: Ctx) -> list[str]:
    return c.query("--filter", '[{"Type": "CT"}]')


@bad("query", "$in needs a list, got str")
def in_not_a_list(c: Ctx) -> list[str]:
    return c.query("--filter", '{"Type": {"$in": "CT"}}')


@bad("query", "$size needs a non-negative integer")
def size_negative(c: Ctx) -> list[str]:
    return c.query("-c", "Clinical_Reports", "--filter", '{"TAC": {"$size": -1}}')


@bad("query", "$or needs a non-empty list of filters")
def empty_or(c: Ctx) -> list[str]:
    return c.query("--filter", '{"$or": []}')


@bad("query", "--keyword ranks images")
def keyword_on_cases(c: Ctx) -> list[str]:
    return c.query("-c", "Clinical_Reports", "--keyword", "fracture")


@bad("query", "invalid --mongo-uri")
def bad_mongo_uri(c: Ctx) -> list[str]:
    return c.query("--mongo-uri", "notmongo://host")


@bad("query", "no case or image with id '../../../etc/passwd'")
def show_path_traversal(c: Ctx) -> list[str]:
    return ["show", "--bundle", str(c.bundle), "../../../etc/passwd"]


@bad("query", "SQL function read_text() not allowed")
def sql_reads_a_file_outside_the_bundle(c: Ctx) -> list[str]:
    return ["sql", "--bundle", str(c.bundle), "SELECT * FROM read_text('/etc/hostname')"]


@bad("query", "SQL statement not allowed: COPY reads or writes files")
def sql_writes_a_file(c: Ctx) -> list[str]:
    return ["sql", "--bundle", str(c.bundle), f"COPY (SELECT 1) TO '{c.tmp / 'out.csv'}'"]


# export: missing, read-only and existing outputs; bad filters; writing into the bundle

@bad("export", "folder is not writable", nobody=True)
def into_read_only_folder(c: Ctx) -> list[str]:
    ro = c.tmp / "ro"
    ro.mkdir(parents=True)
    ro.chmod(0o555)
    return ["export", "--bundle", str(c.tiny), "--format", "csv", "--out", str(ro / "out")]


@bad("export", "mine.json: it is no earlier export of this tool")  # --force would not replace it either
def json_over_existing_file(c: Ctx) -> list[str]:
    c.tmp.mkdir(parents=True)
    (c.tmp / "mine.json").write_text('{"keep": true}')
    return ["export", "--bundle", str(c.bundle), "--format", "json", "--out", str(c.tmp / "mine.json")]


@bad("export", "file.txt is a file")  # "folder does not exist" misnamed it
def parent_is_a_file(c: Ctx) -> list[str]:
    c.tmp.mkdir(parents=True)
    (c.tmp / "file.txt").write_text("x")
    return ["export", "--bundle", str(c.bundle), "--format", "csv", "--out", str(c.tmp / "file.txt" / "out")]


@bad("export", "operator $where is not allowed")
def with_injected_filter(c: Ctx) -> list[str]:
    return ["export", "--bundle", str(c.bundle), "--format", "csv", "--out", str(c.tmp / "out"),
            "--filter", '{"$where": "1"}']


@bad("export", "took longer than 2 s")
def with_catastrophic_regex(c: Ctx) -> list[str]:
    return ["export", "--bundle", str(c.bundle), "--format", "jsonl", "--out", str(c.tmp / "out"),
            "--field", "Description.Caption=^(.*?a){20}(?<=z)$"]


@bad("export", "not a folder this tool wrote (no .medpix-export)")
def force_over_a_foreign_folder(c: Ctx) -> list[str]:
    c.tmp.mkdir(parents=True)
    (c.tmp / "notes.txt").write_text("mine")
    return ["export", "--bundle", str(c.bundle), "--format", "parquet", "--out", str(c.tmp), "--force"]


@bad("export", "it is not a folder this tool wrote")
def force_a_folder_export_over_a_file(c: Ctx) -> list[str]:
    c.tmp.mkdir(parents=True)
    (c.tmp / "data.csv").write_text("mine")
    return ["export", "--bundle", str(c.bundle), "--format", "csv", "--out", str(c.tmp / "data.csv"), "--force"]


@bad("export", "which is read-only")
def into_the_bundle_with_force(c: Ctx) -> list[str]:
    b = c.tiny_copy()
    return ["export", "--bundle", str(b), "--format", "csv", "--out", str(b / "images"), "--force"]


@bad("export", "which is read-only")
def over_the_bundles_parent_with_force(c: Ctx) -> list[str]:
    b = c.tiny_copy()
    return ["export", "--bundle", str(b), "--format", "csv", "--out", str(c.tmp), "--force"]


# bundle: missing, incomplete, foreign or hostile bundles and archives

@bad("bundle", "bundle not found")
def verify_missing_folder(c: Ctx) -> list[str]:
    return ["bundle", "verify", str(c.tmp / "nope")]


@bad("bundle", "is not a complete bundle (no manifest.json)")
def half_built_folder(c: Ctx) -> list[str]:
    b = c.tiny_copy()
    (b / "manifest.json").unlink()
    return ["query", "--bundle", str(b), "--limit", "1"]


@bad("bundle", "manifest.json is unreadable")
def manifest_not_json(c: Ctx) -> list[str]:
    b = c.tiny_copy()
    (b / "manifest.json").write_text('{"files": ')
    return ["bundle", "info", str(b)]


@bad("bundle", "has bundle format 99; this version reads 1")
def future_format_version(c: Ctx) -> list[str]:
    b = c.tiny_copy()
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["format_version"] = 99
    (b / "manifest.json").write_text(json.dumps(manifest))
    return ["query", "--bundle", str(b)]


@bad("bundle", "damaged or not a bundle archive")
def archive_not_a_tar(c: Ctx) -> list[str]:
    c.tmp.mkdir(parents=True)
    (c.tmp / "medpix.tar").write_bytes(os.urandom(4096))
    return ["query", "--bundle", str(c.tmp / "medpix.tar")]


def _archive_with(c: Ctx, member: tarfile.TarInfo, data: bytes = b"") -> list[str]:
    archive = pack_bundle(c.tiny, c.tmp / "medpix.tar")
    with tarfile.open(archive, "a") as tar:
        member.size = len(data) if member.isfile() else 0
        import io
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return ["query", "--bundle", str(archive)]


@bad("bundle", "entry 'medpix-2.0/../../escaped.txt' is outside the bundle folder")
def archive_dotdot_member(c: Ctx) -> list[str]:
    c.tmp.mkdir(parents=True)
    return _archive_with(c, tarfile.TarInfo("medpix-2.0/../../escaped.txt"), b"owned")


@bad("bundle", "entry '/tmp/escaped.txt' is outside the bundle folder")
def archive_absolute_member(c: Ctx) -> list[str]:
    c.tmp.mkdir(parents=True)
    return _archive_with(c, tarfile.TarInfo("/tmp/escaped.txt"), b"owned")


@bad("bundle", "entry 'medpix-2.0/images/link.png' is a link")
def archive_symlink_member(c: Ctx) -> list[str]:
    c.tmp.mkdir(parents=True)
    link = tarfile.TarInfo("medpix-2.0/images/link.png")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return _archive_with(c, link)


@bad("bundle", "entry 'medpix-2.0/images/extra.png' is not in its manifest")
def archive_extra_member(c: Ctx) -> list[str]:
    c.tmp.mkdir(parents=True)
    return _archive_with(c, tarfile.TarInfo("medpix-2.0/images/extra.png"), png_header(1, 1))


@bad("bundle", "medpix.tar: it is no bundle archive of this tool")  # somebody's file: not even --force replaces it
def pack_over_existing_file(c: Ctx) -> list[str]:
    c.tmp.mkdir(parents=True)
    (c.tmp / "medpix.tar").write_text("mine")
    return ["bundle", "pack", str(c.tiny), str(c.tmp / "medpix.tar")]


@bad("bundle", "it is a device, FIFO or socket, not a file")
def pack_forced_over_a_fifo(c: Ctx) -> list[str]:
    # --force replaced /dev/full itself with a 232 MB file (a tester ran as root)
    c.tmp.mkdir(parents=True)
    os.mkfifo(c.tmp / "pipe")
    return ["bundle", "pack", str(c.tiny), str(c.tmp / "pipe"), "--force"]


@bad("bundle", "does not verify; refusing to pack it (changed: search.sqlite)")
def pack_tampered_bundle(c: Ctx) -> list[str]:
    b = c.tiny_copy()
    data = bytearray((b / "search.sqlite").read_bytes())
    data[-1] ^= 0xFF
    (b / "search.sqlite").write_bytes(bytes(data))
    return ["bundle", "pack", str(b), str(c.tmp / "medpix.tar")]


# classify: files that hold no usable image (the model is stubbed when the bundle has none)

def _classify(c: Ctx, path: Path) -> list[str]:
    return ["classify", "--bundle", str(c.bundle), str(path)]


@bad("classify", "DICOM file has no pixel data", reads_file=True)
def dicom_without_pixels(c: Ctx) -> list[str]:
    c.tmp.mkdir(parents=True)
    return _classify(c, dicom_file(c.tmp / "scan.dcm"))


@bad("classify", "cannot decode DICOM pixel data", reads_file=True)
def dicom_truncated_pixels(c: Ctx) -> list[str]:
    c.tmp.mkdir(parents=True)
    return _classify(c, dicom_file(c.tmp / "scan.dcm", pixels=b"\0\1" * 10))


@bad("classify", "not a DICOM file (no DICOM header, and no data set without one", reads_file=True)
def dicom_extension_garbage(c: Ctx) -> list[str]:
    c.tmp.mkdir(parents=True)
    (c.tmp / "scan.dcm").write_bytes(b"\0" * 10)
    return _classify(c, c.tmp / "scan.dcm")


@bad("classify", "not a readable PNG, JPEG or DICOM image", reads_file=True)
def not_an_image(c: Ctx) -> list[str]:
    c.tmp.mkdir(parents=True)
    (c.tmp / "notes.png").write_text("<html>404</html>")
    return _classify(c, c.tmp / "notes.png")


@bad("classify", "not a readable PNG, JPEG or DICOM image", reads_file=True)
def truncated_png(c: Ctx) -> list[str]:
    c.tmp.mkdir(parents=True)
    from PIL import Image

    Image.new("L", (64, 64), 7).save(c.tmp / "scan.png")
    data = (c.tmp / "scan.png").read_bytes()
    (c.tmp / "scan.png").write_bytes(data[: len(data) // 2])
    return _classify(c, c.tmp / "scan.png")


@bad("classify", "not a readable PNG, JPEG or DICOM image", reads_file=True)
def empty_file(c: Ctx) -> list[str]:
    c.tmp.mkdir(parents=True)
    (c.tmp / "scan.png").write_bytes(b"")
    return _classify(c, c.tmp / "scan.png")


@bad("classify", "no such file", reads_file=True)
def missing_file(c: Ctx) -> list[str]:
    return _classify(c, c.tmp / "gone.png")


@bad("classify", "has no model checkpoint")
def bundle_without_model(c: Ctx) -> list[str]:
    c.tmp.mkdir(parents=True)
    from PIL import Image

    Image.new("L", (8, 8)).save(c.tmp / "ok.png")
    return ["classify", "--bundle", str(c.tiny), str(c.tmp / "ok.png")]


# add-case: a new case added to a source folder

def _add_case(c: Ctx, case: Any, images: dict[str, bytes | None] | None = None, raw: bytes | None = None) -> list[str]:
    src = c.source()
    new = c.tmp / "new"
    (new / "images").mkdir(parents=True)
    (new / "case.json").write_bytes(raw if raw is not None else json.dumps(case).encode())
    from PIL import Image

    for name, data in (images or {}).items():
        if data is None:
            Image.new("L", (16, 16), 3).save(new / "images" / f"{name}.png")
        else:
            (new / "images" / f"{name}.png").write_bytes(data)
    return ["add-case", str(new / "case.json"), "--images", str(new / "images"), "--source", str(src)]


def _new_case(uid: str = "N1", name: str = "N1_a") -> dict[str, Any]:
    return {**tiny_case(uid, [name], []), "images": [tiny_image(uid, name, "CT")]}


@bad("add-case", "case.json: invalid JSON at line 1 column 24")
def truncated_case_json(c: Ctx) -> list[str]:
    return _add_case(c, None, raw=b'{"U_id": "N1", "TAC": [')


@bad("add-case", "case:T1:U_id: a case with this id is already in the source")
def colliding_case_id(c: Ctx) -> list[str]:
    return _add_case(c, _new_case("T1", "T1_new"), {"T1_new": None})


@bad("add-case", "(T1_a):image: an image with this id is already in the source")
def colliding_image_id(c: Ctx) -> list[str]:
    return _add_case(c, _new_case("N1", "T1_a"), {"T1_a": None})


@bad("add-case", "TAC: not a plain image id: '../evil'")
def image_name_dotdot(c: Ctx) -> list[str]:
    return _add_case(c, _new_case("N1", "../evil"), {})


@bad("add-case", "images/N1_a.png:N1_a: image file is missing")
def image_file_missing(c: Ctx) -> list[str]:
    return _add_case(c, _new_case(), {})


@bad("add-case", "images/N1_a.png:N1_a: image file does not decode")
def image_not_an_image(c: Ctx) -> list[str]:
    return _add_case(c, _new_case(), {"N1_a": b"<html>404</html>"})


@bad("add-case", "must be an object, got NoneType")
def documents_of_wrong_type(c: Ctx) -> list[str]:
    return _add_case(c, {"case": None, "images": [None, 5]})


@bad("add-case", "images/N1_a.png:N1_a: image too large (30000 x 30000 pixels, limit 16000000)")
def png_bomb(c: Ctx) -> list[str]:
    return _add_case(c, _new_case(), {"N1_a": png_header(30_000, 30_000)})


@bad("add-case", "case.json: invalid JSON")
def case_json_nested_100k(c: Ctx) -> list[str]:
    return _add_case(c, None, raw=b"[" * 100_000 + b"]" * 100_000)


# -- running the corpus --------------------------------------------------------------

class StubModel:
    """Stands in for the CLIP model when the bundle ships none: reads each file as the model would."""

    def classify(self, path: Path) -> dict[str, Any]:
        from medpix_tui.model.preprocess import load_square

        load_square(Path(path), 32)
        probs = {"modality": {"CT": 1.0, "MR": 0.0}, "location": {"Head": 1.0}}
        return {"file": str(path), "modality": "CT", "location": "Head", "probabilities": probs}


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of the 3-image made-up source (no model), readable by nobody."""
    root = tmp_path_factory.mktemp("tiny")
    out = build_bundle(write_source(root / "src"), root / "tiny", with_model=False)
    let_nobody_in(out)
    return out


def test_corpus_is_large_enough() -> None:
    by_area: dict[str, int] = {}
    for case in CORPUS.values():
        by_area[case.area] = by_area.get(case.area, 0) + 1
    assert set(by_area) == {"ingest", "query", "export", "bundle", "classify", "add-case"}
    assert len(CORPUS) + 20 + 9 >= 40, by_area


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=c.xfail))
                                  if c.xfail else n
                                  for n, c in sorted(CORPUS.items())])
def test_bad_input_is_refused(name: str, tmp_path: Path, real_bundle_path: Path, tiny_bundle: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    case = CORPUS[name]
    if case.reads_file and not (real_bundle_path / "model").is_dir():
        monkeypatch.setattr("medpix_tui.cli.model._bundle_model", lambda ctx, path: StubModel())
    (tmp_path / "cache").mkdir()
    ctx = Ctx(tmp_path / "work", real_bundle_path, tiny_bundle)
    args = case.setup(ctx)
    ctx.tmp.mkdir(exist_ok=True)
    before = all_entries(tmp_path), stat_tree(real_bundle_path), tree_digest(tiny_bundle)
    if case.nobody:
        let_nobody_in(tmp_path)
        code, output = run_as_nobody(args, tmp_path)
    else:
        env = {"MEDPIX_CACHE": str(tmp_path / "cache"), "MEDPIX_BUNDLE": str(real_bundle_path),
               "MEDPIX_MONGO_URI": None}
        result = CliRunner().invoke(main, args, env=env)
        code, output = result.exit_code, result.output
    assert code == case.code, output[-2000:]
    assert "Traceback" not in output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("error: ") and case.message in lines[0], lines[0]
    assert "internal error" not in lines[0]
    assert (all_entries(tmp_path), stat_tree(real_bundle_path), tree_digest(tiny_bundle)) == before, \
        "nothing written or changed"
    assert not (ctx.tmp / "out").exists()


def test_unknown_fields_match_nothing(real_bundle_path: Path) -> None:
    """An unknown field is not an error (MongoDB semantics): it matches no document, or every one under
    $exists false."""
    runner = CliRunner()
    b = str(real_bundle_path)
    r = runner.invoke(main, ["query", "--bundle", b, "--field", "No.Such.Field=x", "--json"])
    assert r.exit_code == 0 and json.loads(r.output) == []
    r = runner.invoke(main, ["query", "--bundle", b, "--filter", '{"Nope": {"$exists": false}}',
                             "--fields-out", "image"])
    assert r.exit_code == 0 and len(r.output.splitlines()) == 2050


def test_huge_skip_is_an_empty_page(real_bundle_path: Path) -> None:
    r = CliRunner().invoke(main, ["query", "--bundle", str(real_bundle_path), "--skip", str(10**15), "--json"])
    assert r.exit_code == 0 and json.loads(r.output) == []


def test_outputs_get_the_usual_permissions(tiny_bundle: Path, tmp_path: Path) -> None:
    """Bundles and exports are readable by others as any new file is (not mkdtemp's private 0700)."""
    mask = os.umask(0o022)
    try:
        build_bundle(tiny_bundle.parent / "src", tmp_path / "b", with_model=False)
        r = CliRunner().invoke(main, ["export", "--bundle", str(tiny_bundle), "--format", "csv",
                                      "--out", str(tmp_path / "csv")])
        assert r.exit_code == 0, r.output
        r = CliRunner().invoke(main, ["export", "--bundle", str(tiny_bundle), "--format", "json",
                                      "--out", str(tmp_path / "x.json")])
        assert r.exit_code == 0, r.output
    finally:
        os.umask(mask)
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "csv").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644


def test_regex_warnings_do_not_reach_the_user(real_bundle_path: Path, tmp_path: Path) -> None:
    """A valid pattern that Python's re warns about ("possible nested set") answers without stray stderr lines."""
    proc = subprocess.run([sys.executable, "-m", "medpix_tui", "query", "--bundle", str(real_bundle_path),
                           "--field", "Type=[[M]R", "--limit", "1", "--fields-out", "Type"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0 and proc.stdout == '{"Type": "MR"}\n' and proc.stderr == "", proc.stderr


@pytest.mark.parametrize(("args", "message", "see"), [
    (["query", "--jso"], "No such option '--jso' (did you mean one of: '--json', '--sort'?)", "medpix-tui query"),
    (["qurey"], "No such command 'qurey' (did you mean 'query'?)", "medpix-tui"),
    (["simlar"], "(did you mean 'similar' or 'similar-cases'?)", "medpix-tui"),
    (["frob"], "No such command 'frob'", "medpix-tui"),
    (["bundle", "verfy"], "No such command 'verfy' (did you mean 'verify'?)", "medpix-tui bundle"),
    (["show"], "Missing argument 'ITEM_ID'", "medpix-tui show"),
    (["query", "--limit", "x"], "'x' is not a valid integer", "medpix-tui query"),
    (["eval", "--split", "nope"], "'nope' is not one of 'train', 'dev', 'test'", "medpix-tui eval"),
    (["--bogus"], "No such option '--bogus'", "medpix-tui"),
])
def test_usage_errors_are_one_line(args: list[str], message: str, see: str) -> None:
    """click's usage errors came as four lines (usage, hint, blank, message); every other error is one."""
    result = CliRunner().invoke(main, args, prog_name="medpix-tui")
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [result.output.strip()], result.output
    assert result.output.startswith("error: ") and message in result.output, result.output
    assert result.output.strip().endswith(f"; see '{see} --help'"), result.output


def test_a_group_without_its_command_still_shows_its_help() -> None:
    result = CliRunner().invoke(main, ["bundle"], prog_name="medpix-tui")
    assert "Commands:" in result.output and "verify" in result.output, result.output
