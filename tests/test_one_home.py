"""One home per concept: the export table, split names, the bundle-is-read-only rule, CSV cells, atomic writes.

Evidence: the real release (148 CSV cells of the images and cases exports start like a formula:
106 ``ACR Codes`` such as ``-1.-1``, 24 topic ACR codes, 9 captions, 8 findings, 1 history).
"""

from __future__ import annotations

import ast
import csv
import io
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import click
import pytest
from click.testing import CliRunner

from medpix_tui import atomic
from medpix_tui import export as export_module
from medpix_tui.atomic import mark_read_only, replace_dir, write_atomic
from medpix_tui.bundle import Bundle
from medpix_tui.cli import main
from medpix_tui.errors import InputError
from medpix_tui.export import (
    FORMATS,
    FORMULA_STARTS,
    ExportFormat,
    Selection,
    document_formats,
    export,
    format_names,
    write_documents,
)
from medpix_tui.source import SPLITS

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "medpix_tui"


def _command(name: str) -> click.Command:
    from medpix_tui.cli.app import main as group

    command = group.get_command(click.Context(group), name)
    assert command is not None
    return command


def _choices(command: str, option: str) -> list[str]:
    param = next(p for p in _command(command).params if p.name == option)
    assert isinstance(param.type, click.Choice)
    return list(param.type.choices)


def _string_literals(path: Path) -> list[str]:
    return [n.value for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)]


# -- the export table ----------------------------------------------------------------------

def test_the_export_table_drives_the_cli_choices_and_help() -> None:
    assert _choices("export", "fmt") == format_names() == [
        "json", "jsonl", "parquet", "csv", "imagefolder", "rag", "kg", "hf"]
    helped = CliRunner().invoke(main, ["export", "--help"]).output
    for fmt in FORMATS.values():
        assert fmt.summary in " ".join(helped.split()), fmt.name


def test_format_names_are_typed_once() -> None:
    """The CLI and the terminal UI list no export formats of their own: their choices come from the table.

    (Picking one row by name, as the image save picks ``imagefolder``, is a use, not a second list.)
    """
    names = {"parquet", "jsonl", "imagefolder", "csv", "json"}
    users = [PACKAGE / "cli" / "data.py", PACKAGE / "tui" / "saving.py",
             *sorted((PACKAGE / "tui" / "screens").glob("*.py"))]
    for path in users:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.List, ast.Tuple, ast.Set, ast.Dict)):
                listed = {n.value for n in ast.walk(node) if isinstance(n, ast.Constant)} & names
                # the sql command's own output formats (table, csv, json) are another table
                assert len(listed - {"csv", "json"}) < 2, (path.name, listed)


def test_a_new_format_is_one_row(real_bundle, tmp_path: Path, monkeypatch) -> None:
    def dataset(job: export_module.ExportJob, out: Path) -> list[Path]:
        (out / "n.txt").write_text(str(len(job.selection.images)))
        return [out / "n.txt"]

    def documents(data, path: Path) -> None:
        path.write_text(f"{len(data)} documents")

    toy = ExportFormat("toy", "Toy", "a count", dataset, documents=documents, suffix=".toy")
    monkeypatch.setitem(FORMATS, "toy", toy)
    sel = Selection.from_query(real_bundle.store, "Image_Descriptions", {"U_id": "MPX1009"})
    assert export(real_bundle.store, tmp_path / "t", "toy", selection=sel) == [tmp_path / "t" / "n.txt"]
    assert (tmp_path / "t" / "n.txt").read_text() == str(len(sel.images))
    write_documents([{}, {}], tmp_path / "d.toy", fmt="toy")
    assert (tmp_path / "d.toy").read_text() == "2 documents"
    from medpix_tui.tui.saving import document_options

    options = document_options("Results", "stem", lambda fmt, path, force: fmt)
    assert [(o.label, o.default_name) for o in options] == [
        ("Results as JSON", "stem.json"), ("Results as JSONL", "stem.jsonl"), ("Results as Parquet", "stem.parquet"),
        ("Results as Toy", "stem.toy")]
    assert [o.write(tmp_path, False) for o in options] == [f.name for f in document_formats()]
    with pytest.raises(InputError, match="unknown format 'csv'"):
        write_documents([], tmp_path / "x.csv", fmt="csv")


# -- split names ----------------------------------------------------------------------------

def test_split_names_are_defined_once() -> None:
    spelled = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            values = [getattr(e, "value", None) for e in getattr(node, "elts", ())]
            if isinstance(node, (ast.Tuple, ast.List)) and values == list(SPLITS):
                spelled.append(path.relative_to(PACKAGE).as_posix())
    assert spelled == ["source.py"], spelled
    assert _choices("query", "split") == _choices("export", "split") == list(SPLITS)


# -- bundles are read-only; files, not FIFOs ----------------------------------------------------

def test_no_save_writes_inside_a_bundle(real_bundle, tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    root.mkdir()
    Bundle(root, {})  # opening a bundle marks it read-only for this process
    sel = Selection.from_query(real_bundle.store, "Image_Descriptions", {"U_id": "MPX1009"})
    for target in (root / "out", root / "images" / "deep", root, tmp_path):
        with pytest.raises(InputError, match="overlaps the bundle"):
            export(real_bundle.store, target, "csv", selection=sel, force=True)
    with pytest.raises(InputError, match="overlaps the bundle"):
        write_documents({"a": 1}, root / "doc.json")
    # the terminal UI's case screen saves through the same library call
    from medpix_tui.tui.screens.case import _save_options

    image = sel.images[0]
    app = SimpleNamespace(store=real_bundle.store, bundle=real_bundle)  # what the options read of the app
    for option in _save_options(app, image, real_bundle.store.get_case("MPX1009")):
        with pytest.raises(InputError, match="overlaps the bundle"):
            option.write(root / option.default_name, False)
    assert sorted(p.name for p in root.iterdir()) == [], "nothing was written"
    export(real_bundle.store, tmp_path / "beside", "csv", selection=sel)  # beside the bundle is fine


def test_the_cli_refuses_an_export_into_its_bundle(real_bundle_path: Path) -> None:
    result = CliRunner().invoke(main, ["export", "--bundle", str(real_bundle_path), "--format", "json",
                                       "--out", str(real_bundle_path / "x.json")])
    assert result.exit_code == 2 and "overlaps the bundle" in result.output and result.output.count("\n") == 1


def test_a_fifo_is_refused_not_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for call in (lambda: write_documents([{"a": 1}], fifo, force=True), lambda: atomic.check_destination(fifo, True)):
        with pytest.raises(InputError, match="device, FIFO or socket"):
            call()
    assert fifo.is_fifo()


# -- CSV cells ------------------------------------------------------------------------------------

def test_csv_cells_that_start_like_formulas_are_neutralised(real_bundle, tmp_path: Path) -> None:
    export(real_bundle.store, tmp_path / "csv", "csv")
    neutralised = 0
    for name in ("images.csv", "cases.csv"):
        for row in csv.reader(io.StringIO((tmp_path / "csv" / name).read_text(encoding="utf-8"))):
            for cell in row:
                assert not cell.startswith(FORMULA_STARTS), (name, cell[:40])
                neutralised += cell[:1] == "'" and cell[1:2] in FORMULA_STARTS
    assert neutralised == 148
    assert export_module.csv_cell("-1.-1") == "'-1.-1" and export_module.csv_cell(-1) == -1
    assert export_module.csv_cell("\tx") == "'\tx" and export_module.csv_cell("a=b") == "a=b"


def test_csv_for_programs_keeps_every_cell_as_it_is(real_bundle, real_bundle_path: Path, tmp_path: Path) -> None:
    # pandas read "'-1.-1" for the release's ACR placeholder in 106 rows: no spreadsheet, no escaping
    result = CliRunner().invoke(main, ["export", "--bundle", str(real_bundle_path), "--format", "csv",
                                       "--csv-formulas", "keep", "--out", str(tmp_path / "csv")])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO((tmp_path / "csv" / "images.csv").read_text(encoding="utf-8"))))
    by_image = {d["image"]: d for d in real_bundle.store.find("Image_Descriptions")}
    assert sum(r["acr_codes"] == "-1.-1" for r in rows) > 90
    assert all(r["caption"] == (by_image[r["image"]]["Description"].get("Caption") or "") for r in rows)
    manifest = json.loads((tmp_path / "csv" / "manifest.json").read_text())
    assert manifest["options"] == {"csv_formulas": "keep"}
    again = CliRunner().invoke(main, ["export", "--bundle", str(real_bundle_path), "--from-manifest",
                                      str(tmp_path / "csv"), "--out", str(tmp_path / "again")])
    assert again.exit_code == 0 and (tmp_path / "again" / "images.csv").read_bytes() == \
        (tmp_path / "csv" / "images.csv").read_bytes()
    wrong = CliRunner().invoke(main, ["export", "--bundle", str(real_bundle_path), "--format", "json",
                                      "--csv-formulas", "keep", "--out", str(tmp_path / "x.json")])
    assert wrong.exit_code == 2 and wrong.output == "error: --csv-formulas applies to --format csv, not --format json\n"


def test_sql_csv_output_is_neutralised(real_bundle_path: Path) -> None:
    result = CliRunner().invoke(main, ["sql", "--bundle", str(real_bundle_path), "--format", "csv",
                                       "SELECT '=1+1' AS f, -1 AS n, 'plain' AS p"])
    assert result.exit_code == 0 and result.output.splitlines() == ["f,n,p", "'=1+1,-1,plain"]


# -- atomic writes ------------------------------------------------------------------------------

def test_every_temporary_rename_goes_through_atomic() -> None:
    # os.replace/os.rename, Path.rename, Path.replace on a path-named variable (not str.replace), tempfile
    # (a TemporaryDirectory is scratch space that is removed, and a TemporaryFile has no name at all: neither
    # is ever renamed into place, so neither is a write to check)
    pattern = re.compile(r"\bos\.(replace|rename)\(|\.rename\(|\b\w*(tmp|temp|path|out|dest|dst)\w*\.replace\("
                         r"|\btempfile\.(?!TemporaryDirectory\b|TemporaryFile\b)\w+|\bmk[sd]temp\(")
    offenders = []
    for folder in (PACKAGE, ROOT / "tools"):
        for path in sorted(folder.rglob("*.py")):
            if path == PACKAGE / "atomic.py":
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line.split("#", 1)[0]):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []


def test_replace_dir_puts_the_old_folder_back_when_the_new_one_cannot_go(tmp_path: Path, monkeypatch) -> None:
    out, new = tmp_path / "out", tmp_path / "new"
    out.mkdir()
    (out / "old.txt").write_text("old")
    new.mkdir()
    (new / "new.txt").write_text("new")
    real_rename = os.rename

    def rename(src, dst):
        if Path(src) == new:
            raise OSError(28, "No space left on device")
        real_rename(src, dst)
    monkeypatch.setattr(atomic.os, "rename", rename)
    with pytest.raises(OSError):
        replace_dir(new, out)
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "out"], "no folder left aside"
    monkeypatch.undo()
    replace_dir(new, out)
    assert [p.name for p in out.iterdir()] == ["new.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_write_atomic_leaves_the_old_file_or_the_new_one(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "m.json"
    write_atomic(path, "one")
    monkeypatch.setattr(atomic, "move_into_place", lambda tmp, dst: (_ for _ in ()).throw(OSError(5, "EIO")))
    with pytest.raises(OSError):
        write_atomic(path, "two")
    assert path.read_text() == "one" and [p.name for p in tmp_path.iterdir()] == ["m.json"]
    mark_read_only(tmp_path / "elsewhere")  # marking a folder never touches it
    assert not (tmp_path / "elsewhere").exists()
