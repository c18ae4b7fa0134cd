"""Exports round-trip the release, and the CLI invocations other tools rely on work as written."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import click
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from medpix_tui.cli import main
from medpix_tui.export import Selection, export
from medpix_tui.source import load_source
from tests.support import tree_digest


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_round_trip_source_store_jsonl(real_bundle, source_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "jsonl"
    export(real_bundle.store, out, "jsonl")
    release = load_source(source_dir, check_images=False)
    for split in ("train", "dev", "test"):
        got = sorted(_jsonl(out / f"descriptions_{split}.jsonl"), key=lambda d: d["image"])
        want = sorted((d for d in release.images if release.splits[d["U_id"]] == split), key=lambda d: d["image"])
        assert got == want and len(got) == {"train": 1653, "dev": 197, "test": 200}[split]
        shipped = sorted(_jsonl(source_dir / "splitted_dataset" / f"descriptions_{split}.jsonl"),
                         key=lambda d: d["image"])
        assert got == shipped, "same documents as the authors' own split files"
        cases = sorted(_jsonl(out / f"data_{split}.jsonl"), key=lambda d: d["U_id"])
        assert cases == sorted((c for c in release.cases if release.splits[c["U_id"]] == split),
                               key=lambda d: d["U_id"])


def test_parquet_export_has_columns_and_structs(real_bundle, tmp_path: Path) -> None:
    out = tmp_path / "pq"
    export(real_bundle.store, out, "parquet")
    images = pq.read_table(out / "images.parquet")
    assert images.num_rows == 2050
    assert ({"image", "u_id", "modality", "caption", "age", "location_category", "split", "Description"}
            <= set(images.column_names))
    assert str(images.schema.field("Description").type).startswith("struct")
    assert pq.read_table(out / "cases.parquet").num_rows == 671
    assert pq.read_table(out / "image_reports.parquet").num_rows == 2050
    row = images.slice(0, 1).to_pylist()[0]
    assert row["Description"]["Caption"] == row["caption"]


def test_query_results_to_imagefolder_and_csv(real_bundle, tmp_path: Path) -> None:
    sel = Selection.from_query(real_bundle.store, "Image_Descriptions", {"Location Category": "Thorax"})
    files = export(real_bundle.store, tmp_path / "tree", "imagefolder", selection=sel, label="modality",
                   image_path=real_bundle.image_path)
    assert len(files) == 334
    assert ({p.parent.name for p in files} == {"CT", "MR"}
            and {p.parent.parent.name for p in files} == {"train", "dev", "test"})
    export(real_bundle.store, tmp_path / "csv", "csv", selection=sel)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "csv" / "images.csv").read_text())))
    assert len(rows) == 334 and all(r["location_category"] == "Thorax" for r in rows)


def test_export_never_overwrites_without_force(real_bundle_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    runner = CliRunner()
    result = runner.invoke(main, ["export", "--bundle", str(real_bundle_path), "--format", "csv", "--out", str(out)])
    assert result.exit_code == 2 and "already exists (use --force" in result.output
    assert tree_digest(out) == {"keep.txt": tree_digest(out)["keep.txt"]}
    missing = runner.invoke(main, ["export", "--bundle", str(real_bundle_path), "--format", "csv",
                                   "--out", str(tmp_path / "no" / "x")])
    assert missing.exit_code == 2 and "folder does not exist" in missing.output
    foreign = runner.invoke(main, ["export", "--bundle", str(real_bundle_path), "--format", "csv", "--out", str(out),
                                   "--force"])
    assert foreign.exit_code == 2 and "not a folder this tool wrote" in foreign.output
    assert (out / "keep.txt").read_text() == "mine", "--force never replaces a folder it did not write"
    ours = tmp_path / "ours"
    for field in ("Type=^CT$", "Type=^MR$"):  # the second run replaces the first one's export
        forced = runner.invoke(main, ["export", "--bundle", str(real_bundle_path), "--format", "csv",
                                      "--out", str(ours), "--force", "--field", field])
        assert forced.exit_code == 0, forced.output
    assert sorted(p.name for p in ours.iterdir()) == [".medpix-export", "cases.csv", "images.csv", "manifest.json"]
    assert {r["modality"] for r in csv.DictReader(io.StringIO((ours / "images.csv").read_text()))} == {"MR"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary leftovers"


def test_each_command_is_found_in_the_module_named_for_it() -> None:
    import importlib

    from medpix_tui.cli.app import COMMAND_MODULES

    for module in set(COMMAND_MODULES.values()):
        names = {c.name for c in importlib.import_module(f"medpix_tui.cli.{module}").COMMANDS}
        assert names == {n for n, m in COMMAND_MODULES.items() if m == module}, module
    listed = CliRunner().invoke(main, ["--help"]).output
    assert all(f"  {name} " in listed for name in COMMAND_MODULES), listed


def test_a_command_imports_only_its_own_module() -> None:
    import subprocess
    import sys

    code = ("import sys; from click.testing import CliRunner; from medpix_tui.cli import main; "
            "r = CliRunner().invoke(main, ['show', '--help']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in sys.modules if m.startswith('medpix_tui.cli.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # cli.options: the option classes every command module shares (the --help that names the rule in force)
    assert loaded.strip() == "['medpix_tui.cli.app', 'medpix_tui.cli.data', 'medpix_tui.cli.options']", loaded


def test_exact_invocations(real_bundle_path: Path) -> None:
    runner = CliRunner()
    b = str(real_bundle_path)
    r = runner.invoke(main, ["query", "--bundle", b, "--collection", "Image_Descriptions",
                             "--field", "Description.Caption=glioma", "--field", "Type=MR", "--json"])
    docs = json.loads(r.output)
    assert r.exit_code == 0 and docs and all(d["Type"] == "MR" and "glioma" in d["Description"]["Caption"].lower()
                                             for d in docs)
    r = runner.invoke(main, ["query", "--bundle", b, "--collection", "Clinical_Reports",
                             "--filter", '{"MRI": {"$size": 0}}', "--json"])
    assert r.exit_code == 0 and all(d["MRI"] == [] for d in json.loads(r.output))
    r = runner.invoke(main, ["sql", "--bundle", b, "SELECT modality, count(*) AS n FROM images GROUP BY 1 ORDER BY 1",
                             "--format", "csv"])
    assert r.exit_code == 0 and r.output.splitlines() == ["modality,n", "CT,1062", "MR,988"]
    r = runner.invoke(main, ["bundle", "verify", b])
    assert r.exit_code == 0


@pytest.mark.parametrize("args,message", [
    (["query", "--filter", '{"$where": "1"}'], "operator $where is not allowed"),
    (["query", "--filter", "{not json"], "filter is not valid JSON"),
    (["query", "--field", "Description.Caption=("], "invalid regex"),
    (["query", "--field", "nofield"], "--field needs PATH=REGEX"),
    (["query", "--limit", "999999999"], "limit too large"),
    (["query", "--keyword", "!!!"], "keyword search needs at least one word"),
    (["sql", "SELEC nonsense"], "SQL error"),
    (["show", "MPX_NOPE"], "no case or image with id 'MPX_NOPE'"),
    (["query", "--keyword", ""], "keyword search needs at least one word"),
    (["export", "--format", "csv", "--keyword", "", "--out", "/tmp/never-written"], "needs at least one word"),
    (["export", "--format", "json", "--out", ""], "--out is empty"),
    (["export", "--format", "imagefolder", "--out", "/proc/forbidden"], "cannot write in /proc"),
])
def test_bad_cli_input_is_one_line(real_bundle_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, [*args[:1], "--bundle", str(real_bundle_path), *args[1:]])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and message in result.output and "Traceback" not in result.output


def test_an_export_that_matches_nothing_writes_nothing(real_bundle_path: Path, tmp_path: Path) -> None:
    for fmt in ("hf", "csv", "jsonl"):
        out = tmp_path / fmt
        result = CliRunner().invoke(main, ["export", "--bundle", str(real_bundle_path), "--format", fmt,
                                           "--field", "Description.Caption=zzzzqqq", "--out", str(out)])
        assert result.exit_code == 2 and result.output == "error: no documents match the query: nothing to export\n"
    assert list(tmp_path.iterdir()) == []


def test_every_command_s_help_teaches_by_example() -> None:
    from medpix_tui.cli.app import COMMAND_MODULES

    def walk(path: list[str]) -> list[list[str]]:
        command = main
        ctx = click.Context(main)
        for name in path:
            command = command.get_command(ctx, name)  # type: ignore[attr-defined]
        found = [path]
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                found += walk([*path, name])
        return found

    missing = []
    for name in COMMAND_MODULES:
        for path in walk([name]):
            result = CliRunner().invoke(main, [*path, "--help"])
            if result.exit_code != 0 or "Example" not in result.output:
                missing.append(" ".join(path))
    assert missing == []


def test_a_one_file_export_never_leaves_a_manifest_without_its_file(real_bundle_path: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # found in the TUI: saving to an existing folder, "replace it?" yes -> an error, and dir.manifest.json stayed
    folder = tmp_path / "dir"
    folder.mkdir()
    args = ["export", "--bundle", str(real_bundle_path), "--format", "json", "--limit", "2", "--force"]
    result = CliRunner().invoke(main, [*args, "--out", str(folder)])
    assert result.exit_code == 2 and "is a folder: name a file to write" in result.output
    import os

    real_replace = os.replace
    out = tmp_path / "images.json"

    def failing(src: object, dst: object) -> None:
        if Path(str(dst)) == out:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", failing)
    result = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert result.exit_code != 0 and "No space left on device" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]


def test_an_id_in_the_wrong_case_is_suggested(real_bundle_path: Path) -> None:
    for given, meant in (("mpx1009", "MPX1009"), ("mpx1009_SYNPIC46283", "MPX1009_synpic46283")):
        result = CliRunner().invoke(main, ["show", "--bundle", str(real_bundle_path), given])
        assert result.exit_code == 2
        assert result.output == f"error: no case or image with id {given!r}; did you mean {meant!r}?\n"


def test_show_case_and_image(real_bundle_path: Path) -> None:
    runner = CliRunner()
    case = runner.invoke(main, ["show", "--bundle", str(real_bundle_path), "MPX1009"])
    assert (case.exit_code == 0 and "History" in case.output and "MPX1009_synpic46283" in case.output
            and "Topic" in case.output)
    image = runner.invoke(main, ["show", "--bundle", str(real_bundle_path), "MPX1009_synpic46283", "--json"])
    assert json.loads(image.output)["image"]["U_id"] == "MPX1009"


def test_keywords_narrow_a_case_field_query_on_image_reports(real_bundle_path: Path, tmp_path: Path) -> None:
    # The field names a case field, which only Image_Reports documents hold: the keyword search must
    # filter that collection, not the image descriptions (where the filter matched nothing).
    b = str(real_bundle_path)
    runner = CliRunner()
    args = ["--bundle", b, "--collection", "Image_Reports", "--keyword", "fracture", "--field", "Case.Title=fracture"]
    r = runner.invoke(main, ["query", *args, "--limit", "0", "--json"])
    docs = json.loads(r.output)
    assert r.exit_code == 0 and docs, r.output
    assert all("fracture" in d["Case"]["Title"].lower() for d in docs)
    out = tmp_path / "hits"  # the release's layout: descriptions_<split>.jsonl
    r = runner.invoke(main, ["export", *args, "--format", "jsonl", "--out", str(out)])
    assert r.exit_code == 0, r.output
    exported = {d["image"] for f in out.glob("descriptions_*.jsonl") for d in _jsonl(f)}
    assert exported == {d["image"] for d in docs}


# -- a tiny bundle of made-up cases (no model): fast, and safe to tamper with a copy of --------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medpix_tui.bundle import build_bundle
    from tests.support import tiny_case, tiny_image, write_source

    root = tmp_path_factory.mktemp("tiny-export")
    images = [tiny_image("T1", "T1_a", "CT"), tiny_image("T1", "T1_b", "MR"), tiny_image("T2", "T2_a", "CT")]
    images[0]["Description"]["Age"], images[2]["Description"]["Age"] = "9", "10"
    src = write_source(root / "src", [tiny_case("T1", ["T1_a"], ["T1_b"]), tiny_case("T2", ["T2_a"], [])], images,
                       splits={"train": ["T1"], "dev": [], "test": ["T2"]})
    return build_bundle(src, root / "tiny", with_model=False)


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize("fmt", ["imagefolder", "hf"])
def test_an_image_changed_in_the_bundle_is_never_exported(tiny: Path, tmp_path: Path, fmt: str) -> None:
    """A PNG changed after the build was copied, and listed in the export manifest under its old digest."""
    import shutil

    bundle = Path(shutil.copytree(tiny.resolve(), tmp_path / "b", symlinks=True))
    png = bundle / "images" / "T1_b.png"
    data = bytearray(png.read_bytes())
    data[-20] ^= 1  # same size: only its digest tells
    png.write_bytes(bytes(data))
    out = tmp_path / "out"
    code, output = _run("export", "--bundle", str(bundle), "--format", fmt, "--out", str(out))
    assert code == 2 and output.count("\n") == 1, output
    assert "T1_b.png does not match its digest" in output and "medpix-tui bundle verify" in output
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["b"], "no partial output"


def test_force_replaces_only_an_earlier_export(tiny: Path, tmp_path: Path) -> None:
    """--force replaced anything: another export's manifest, somebody's file, a folder with a planted mark."""
    folder, one = tmp_path / "csv", tmp_path / "one.json"
    assert _run("export", "--bundle", str(tiny), "--format", "csv", "--out", str(folder))[0] == 0
    assert _run("export", "--bundle", str(tiny), "--format", "json", "--out", str(one))[0] == 0
    notes, planted, plain = tmp_path / "notes.txt", tmp_path / "planted", tmp_path / "plain.json"
    notes.write_text("mine")
    plain.write_text('{"my": "settings"}')
    planted.mkdir()
    (planted / ".medpix-export").touch()
    (planted / "thesis.tex").write_text("mine")
    worked = tmp_path / "worked"  # an earlier export somebody kept working in
    assert _run("export", "--bundle", str(tiny), "--format", "csv", "--out", str(worked))[0] == 0
    (worked / "mywork").mkdir()
    (worked / "mywork" / "a.txt").write_text("mine")
    before = tree_digest(tmp_path)
    for fmt, target, why in (("json", folder / "manifest.json", "it is an export manifest"),
                             ("json", tmp_path / "one.json.manifest.json", "it is an export manifest"),
                             ("json", notes, "it is no earlier export of this tool"),
                             ("json", plain, "it is no earlier export of this tool"),
                             ("csv", planted, "it holds .medpix-export but no export manifest.json"),
                             ("csv", worked, "it holds 1 file(s) its export manifest does not list (mywork/a.txt)")):
        code, output = _run("export", "--bundle", str(tiny), "--format", fmt, "--out", str(target), "--force")
        assert code == 2 and output.count("\n") == 1 and f"refusing to replace {target}: {why}" in output, output
    assert tree_digest(tmp_path) == before and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # what --force is for: an earlier export (a dataset export of another format too)
    for fmt, target in (("csv", folder), ("parquet", folder), ("json", one)):
        code, output = _run("export", "--bundle", str(tiny), "--format", fmt, "--out", str(target), "--force")
        assert code == 0, output


@pytest.mark.parametrize("args,message", [
    (["export", "--format", "json", "--out", "-"], "--out -: writing to standard output is not supported"),
    (["export", "--format", "json", "--out", " "], "--out is empty: an empty path"),
    (["report", "quality", "--html", ""], "--html is empty: an empty path"),
    (["bundle", "pack", "{bundle}", "-"], "ARCHIVE -: writing to standard output is not supported"),
    (["export", "--format", "csv", "--out", "{tmp}/file.txt/out"], "not a folder: {tmp}/file.txt is a file"),
    (["query", "--fields-out", "nope"], "--fields-out: no Image_Descriptions document has the field 'nope'"),
    (["query", "--fields-out", ","], "--fields-out names no field"),
])
def test_paths_and_fields_are_refused_in_one_line(tiny: Path, tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "file.txt").write_text("x")
    args = [a.format(bundle=tiny, tmp=tmp_path) for a in args]
    bundle = [] if args[0] == "bundle" else ["--bundle", str(tiny)]
    at = 2 if args[0] == "report" else 1
    code, output = _run(*args[:at], *bundle, *args[at:])
    assert code == 2 and output.count("\n") == 1 and message.format(tmp=tmp_path) in output, output
    assert "Traceback" not in output and sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_ages_compare_as_numbers(tiny: Path, tmp_path: Path) -> None:
    """Ages are text in the release: {"$gt": 9} matched nothing, {"$gt": "9"} left out "10"."""
    def ages(flt: str) -> list[str]:
        code, output = _run("query", "--bundle", str(tiny), "--filter", flt, "--fields-out", "Description.Age")
        assert code == 0, output
        return sorted(json.loads(line)["Description"]["Age"] for line in output.splitlines())

    assert ages('{"Description.Age": {"$gt": 9}}') == ["10", "40"]
    assert ages('{"Description.Age": {"$gt": "9", "$lt": 40}}') == ["10"]
    assert ages('{"Description.Age": {"$lte": 10}, "Type": "CT"}') == ["10", "9"]
    assert ages('{"$or": [{"Description.Age": 40}, {"Description.Age": {"$ne": 9, "$lt": 20}}]}') == ["10", "40"]
    assert ages('{"Description.Age": "9"}') == ["9"]  # text still matches as text
    assert ages('{"Description.Age": {"$not": {"$gt": 9}}}') == ["9"]  # $not, $in, $nin compare numbers too
    assert ages('{"Description.Age": {"$in": [9, "40"]}}') == ["40", "9"]
    assert ages('{"Description.Age": {"$nin": [9.0, 40]}}') == ["10"]
    assert ages('{"Description.Age": "009"}') == ["9"]
    assert ages('{"$nor": [{"Description.Age": {"$not": {"$lt": 20}}}]}') == ["10", "9"]
    code, output = _run("query", "--bundle", str(tiny), "--filter", '{"Description.Age": {"$gt": "abc"}}')
    assert code == 2 and output.strip() == "error: Description.Age $gt compares numbers: 'abc' is not one"
    out = tmp_path / "young.json"
    assert _run("export", "--bundle", str(tiny), "--format", "json", "--filter",
                '{"Description.Age": {"$lt": 10}}', "--out", str(out))[0] == 0
    assert [d["image"] for d in json.loads(out.read_text())] == ["T1_a"]


def test_sql_csv_writes_nested_values_as_json(tiny: Path) -> None:
    code, output = _run("sql", "--bundle", str(tiny), "--format", "csv", "SELECT {'a': 1, 'b': 'x'} s, [1, 2] l")
    assert code == 0, output
    assert list(csv.reader(io.StringIO(output))) == [["s", "l"], ['{"a": 1, "b": "x"}', "[1, 2]"]]


def test_sql_json_writes_a_blob_as_duckdb_writes_it(tiny: Path) -> None:
    # a BLOB was printed as Python's b'...'; DuckDB's own text of it is \xNN for what is not printable
    code, output = _run("sql", "--bundle", str(tiny), "--format", "json", "SELECT unhex('5C41FF00') b")
    assert code == 0, output
    assert json.loads(output) == [{"b": "\\x5CA\\xFF\\x00"}]


def test_an_sql_result_parquet_cannot_hold_is_one_line(tiny: Path, tmp_path: Path) -> None:
    # a HUGEINT past 64 bits: "Save failed: OverflowError: Python int too large to convert to C long"
    from medpix_tui.errors import InputError
    from medpix_tui.export import save_sql_result

    out = tmp_path / "big.parquet"
    with pytest.raises(InputError, match=r"does not fit Parquet's column types .* cast the column"):
        save_sql_result("SELECT 12345678901234567890::HUGEINT h", ["h"], [(12345678901234567890,)], out, "parquet")
    assert not out.exists() and list(tmp_path.iterdir()) == []


_TYPED = ("SELECT MAP {'a': 1, 'b': 2} AS m, 1.25::DECIMAL(4,2) AS d, INTERVAL '3 days 4 hours' AS i, "
          "'NaN'::DOUBLE AS n, 'c1b1f3c1-0f27-4892-86e2-cfe8368706ea'::UUID AS u, 5::UTINYINT AS t, "
          "123456789012345678901234567890::HUGEINT AS h")


def test_an_sql_result_saved_keeps_duckdbs_types(tiny: Path, tmp_path: Path) -> None:
    """Parquet turned a MAP into a struct and DECIMAL(4,2) into decimal128(3,2) (pyarrow guessed from
    Python values); CSV wrote NaN empty, as NULL; JSON wrote an INTERVAL as Python's "3 days, 4:00:00"."""
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    from medpix_tui.export import save_sql_result
    from medpix_tui.sql import connect

    con = connect(tiny / "parquet")
    try:
        result = con.result(_TYPED)
    finally:
        con.close()
    for fmt in ("parquet", "csv", "json"):
        save_sql_result(_TYPED, result.columns, result.rows, tmp_path / f"r.{fmt}", fmt, types=result.types)
    schema = pq.read_schema(tmp_path / "r.parquet")
    assert schema.field("m").type == pa.map_(pa.string(), pa.int32())
    assert schema.field("d").type == pa.decimal128(4, 2) and schema.field("t").type == pa.uint8()
    assert schema.field("i").type == pa.duration("us") and schema.field("u").type == pa.string()
    assert schema.field("h").type == pa.decimal128(38, 0)
    back = duckdb.sql(f"SELECT * FROM '{tmp_path / 'r.parquet'}'").fetchall()  # DuckDB reads back what it gave
    assert back[0][0] == {"a": 1, "b": 2} and str(back[0][1]) == "1.25" and back[0][6] == result.rows[0][6]
    rows = list(csv.reader((tmp_path / "r.csv").open(encoding="utf-8")))
    assert rows[1][result.columns.index("n")] == "nan"
    data = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert data[0]["i"] == "P3DT4H" and data[0]["n"] is None and data[0]["d"] == "1.25"


@pytest.mark.parametrize("value", ["nan", "inf", "1e309"])
def test_sql_refuses_a_timeout_that_never_ends(tiny: Path, value: str) -> None:
    """--timeout nan passed click's range (NaN compares false) and the statement then never stopped."""
    code, output = _run("sql", "--bundle", str(tiny), "--timeout", value, "SELECT 1")
    assert code == 2 and f"'{value}' is not a finite number" in output and output.count("\n") == 1, output


def test_sql_csv_leaves_numbers_alone_and_can_keep_formulas(tiny: Path) -> None:
    """A DECIMAL -0.5 was written '-0.5 (defused as a formula), so pandas read text; sql had no
    --csv-formulas keep, as export has."""
    statement = "SELECT 1.5 - 2.0 AS delta, -2 AS i, -1.5::DOUBLE AS d, '-1.-1' AS acr"
    code, output = _run("sql", "--bundle", str(tiny), "--format", "csv", statement)
    assert code == 0 and list(csv.reader(io.StringIO(output)))[1] == ["-0.5", "-2", "-1.5", "'-1.-1"], output
    code, output = _run("sql", "--bundle", str(tiny), "--format", "csv", "--csv-formulas", "keep", statement)
    assert code == 0 and list(csv.reader(io.StringIO(output)))[1] == ["-0.5", "-2", "-1.5", "-1.-1"], output


def test_sql_table_cuts_a_huge_cell_and_says_so(tiny: Path) -> None:
    """A 4 MB cell took rich minutes to measure for the table; json and csv took a second."""
    from medpix_tui.cli.data import TABLE_CELL_CHARS

    code, output = _run("sql", "--bundle", str(tiny), "SELECT string_agg(repeat('ab', 5000), '') AS long "
                        f"FROM range({TABLE_CELL_CHARS // 10})")
    assert code == 0 and "…" in output and "ab" * (TABLE_CELL_CHARS // 2 + 1) not in output.replace("\n", "")
    assert f"note: values longer than {TABLE_CELL_CHARS} characters are cut" in output


def test_query_refuses_sort_with_keyword_as_export_does(tiny: Path) -> None:
    """query sorted nothing and said nothing; export refused the same options."""
    code, output = _run("query", "--bundle", str(tiny), "--keyword", "glioma", "--sort", "Description.Age")
    assert code == 2
    assert output.strip() == "error: --sort does not go with --keyword: keyword results come in rank order"


def test_a_full_output_disk_is_the_outputs_fault_not_the_bundles(tiny: Path, tmp_path: Path) -> None:
    """A full disk under an imagefolder export said "damaged bundle: ...png is unreadable (No space
    left on device)", and bundle verify then said the bundle was fine."""
    import errno

    from medpix_tui.bundle import open_bundle

    bundle = open_bundle(tiny)

    def full(block: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as caught:
        bundle.read_image("T1_b", full)
    assert caught.value.errno == errno.ENOSPC and "damaged" not in str(caught.value)


def test_sql_prints_a_plan_whole_notes_dropped_statements_and_leaves_intervals_alone(tiny: Path) -> None:
    """EXPLAIN's plan was a table cell cut at 1000 characters; 'select 1; select 2' showed only the
    second with no word; an INTERVAL '-1 day' was written '-P1D in CSV (defused as a formula)."""
    code, output = _run("sql", "--bundle", str(tiny), "EXPLAIN SELECT modality, count(*) FROM images GROUP BY 1")
    assert code == 0 and "Seq Scan" in output and "…" not in output and "explain_value" not in output, output
    code, output = _run("sql", "--bundle", str(tiny), "--format", "csv", "SELECT 1 AS x; SELECT 2 AS y")
    assert code == 0 and "note: ran 2 statements; the result is the last one's" in output and "y\n2" in output
    code, output = _run("sql", "--bundle", str(tiny), "--format", "csv", "SELECT INTERVAL '-1 day' AS s")
    assert code == 0 and list(csv.reader(io.StringIO(output)))[1] == ["-P1D"], output
