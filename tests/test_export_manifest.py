"""The rag, kg and hf exports from the CLI, and reproducible exports: manifest, --from-manifest, verify.

All on the real release (the session bundle). The known leak MPX1139_synpic18560 (train) /
MPX2540_synpic18534 (test) is a pair the quality report finds on the release (the same
slice in two cases).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from medpix_tui.cli import main
from medpix_tui.errors import InputError
from medpix_tui.export import EXPORT_MANIFEST, Selection, export, format_names, run_export
from tests.support import tree_digest

LEAK_TRAIN, LEAK_TEST = "MPX1139_synpic18560", "MPX2540_synpic18534"


def _export(bundle: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["export", "--bundle", str(bundle), *args])
    assert result.exit_code == 0, result.output
    return result.output


def _one_line_error(bundle: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["export", "--bundle", str(bundle), *args])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and message in result.output, result.output
    assert "Traceback" not in result.output


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_rag_kg_hf_from_the_cli_follow_split_and_query(real_bundle, real_bundle_path: Path, tmp_path: Path) -> None:
    store = real_bundle.store
    test_cases = {u for u, s in store.splits().items() if s == "test"}
    _export(real_bundle_path, "--format", "rag", "--split", "test", "--out", str(tmp_path / "rag"))
    records = _jsonl(tmp_path / "rag" / "rag.jsonl")
    assert {r["id"] for r in records} == test_cases and {r["metadata"]["split"] for r in records} == {"test"}
    assert json.loads((tmp_path / "rag" / "manifest.json").read_text())["counts"]["documents"] == len(test_cases)

    _export(real_bundle_path, "--format", "kg", "--split", "test", "--field", "Type=^MR$",
            "--out", str(tmp_path / "kg"))
    mr_test = store.find("Image_Descriptions", {"$and": [{"Type": "MR"}, store.split_filter("test")]})
    with open(tmp_path / "kg" / "nodes_image.csv", encoding="utf-8") as f:
        assert {r["id:ID"] for r in csv.DictReader(f)} == {f"image:{d['image']}" for d in mr_test}
    with open(tmp_path / "kg" / "nodes_case.csv", encoding="utf-8") as f:
        assert {r["id:ID"] for r in csv.DictReader(f)} == {f"case:{d['U_id']}" for d in mr_test}, \
            "the cases of the selected images"

    _export(real_bundle_path, "--format", "hf", "--split", "dev", "--out", str(tmp_path / "hf"))
    assert sorted(p.name for p in (tmp_path / "hf" / "data").iterdir()) == ["dev.parquet"]
    assert pq.read_table(tmp_path / "hf" / "data" / "dev.parquet").num_rows == 197


@pytest.mark.parametrize("fmt", format_names())
def test_every_format_reproduces_byte_for_byte(real_bundle_path: Path, tmp_path: Path, fmt: str) -> None:
    one_file = fmt == "json"
    first, again = (tmp_path / "a.json", tmp_path / "b.json") if one_file else (tmp_path / "a", tmp_path / "b")
    _export(real_bundle_path, "--format", fmt, "--split", "dev", "--field", "Location Category=Head|Thorax",
            "--sort", "-image", "--out", str(first))
    manifest = first.with_name("a.json.manifest.json") if one_file else first / EXPORT_MANIFEST
    recorded = json.loads(manifest.read_text())
    assert recorded["format"] == fmt and recorded["query"]["split"] == "dev" and recorded["files"]
    assert recorded["bundle"]["manifest_sha256"] == (real_bundle_path / "manifest.json.sha256").read_text().split()[0]
    _export(real_bundle_path, "--from-manifest", str(manifest), "--out", str(again))
    if one_file:
        assert first.read_bytes() == again.read_bytes()
        copy = json.loads(again.with_name("b.json.manifest.json").read_text())
        assert copy["files"] == {"b.json": recorded["files"]["a.json"]}
    else:
        assert tree_digest(first) == tree_digest(again), "the same bytes, manifest included"
    verified = CliRunner().invoke(main, ["export", "verify", str(again)])
    assert verified.exit_code == 0, verified.output


def test_verify_names_each_changed_missing_and_added_file(real_bundle_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "csv"
    _export(real_bundle_path, "--format", "csv", "--split", "test", "--out", str(out))
    runner = CliRunner()
    assert runner.invoke(main, ["export", "verify", str(out)]).exit_code == 0
    with open(out / "images.csv", "a", encoding="utf-8") as f:
        f.write("x\n")
    (out / "cases.csv").unlink()
    (out / "extra.txt").write_text("mine")
    result = runner.invoke(main, ["export", "verify", str(out)])
    assert result.exit_code == 1
    assert result.output.splitlines() == ["missing: cases.csv", "changed: images.csv", "added: extra.txt"]
    (out / "images.csv").unlink()
    (out / "images.csv").symlink_to(out / "extra.txt")  # said "internal error (OSError: ... symbolic links)"
    result = runner.invoke(main, ["export", "verify", str(out)])
    assert result.exit_code == 1 and "unreadable: images.csv (not a regular file)" in result.output.splitlines()
    single = tmp_path / "one.json"
    _export(real_bundle_path, "--format", "json", "--split", "test", "--out", str(single))
    assert runner.invoke(main, ["export", "verify", str(single)]).exit_code == 0
    single.write_text("[]")
    changed = runner.invoke(main, ["export", "verify", str(single) + ".manifest.json"])
    assert changed.exit_code == 1 and changed.output.splitlines() == ["changed: one.json"]
    for bad in (tmp_path / "nothing", tmp_path / "plain"):
        bad.mkdir()
        result = runner.invoke(main, ["export", "verify", str(bad)])
        assert result.exit_code == 2 and "no export manifest" in result.output and result.output.count("\n") == 1
    (tmp_path / "plain" / "manifest.json").write_text('{"not": "ours"}')
    result = runner.invoke(main, ["export", "verify", str(tmp_path / "plain")])
    assert result.exit_code == 2 and "not a medpix-tui export manifest" in result.output


def test_from_manifest_of_another_bundle_is_refused(real_bundle, real_bundle_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "csv"
    _export(real_bundle_path, "--format", "csv", "--split", "dev", "--out", str(out))
    manifest = json.loads((out / "manifest.json").read_text())
    other = "0" * 64  # what a manifest made from another bundle (another build, another release) records
    manifest["bundle"]["manifest_sha256"] = manifest["bundle"]["content_sha256"] = other
    moved = tmp_path / "other.manifest.json"
    moved.write_text(json.dumps(manifest))
    _one_line_error(real_bundle_path, ["--from-manifest", str(moved), "--out", str(tmp_path / "again")], other)
    _one_line_error(real_bundle_path, ["--from-manifest", str(moved), "--out", str(tmp_path / "again")],
                    real_bundle.content_digest)
    del manifest["bundle"]["content_sha256"]  # a manifest of an earlier version: the whole manifest's digest
    moved.write_text(json.dumps(manifest))
    _one_line_error(real_bundle_path, ["--from-manifest", str(moved), "--out", str(tmp_path / "again")],
                    real_bundle.digest)
    assert not (tmp_path / "again").exists()


def test_from_manifest_accepts_a_rebuild_of_the_same_source(tmp_path: Path) -> None:
    # a rebuild differs in its creation time (and the store's fresh ObjectIds), so the bundle's
    # manifest digest differs: the export was refused as "another bundle"
    from medpix_tui.bundle import build_bundle, open_bundle
    from tests.support import write_source

    src = write_source(tmp_path / "src", splits={"train": ["T1"], "dev": [], "test": ["T2"]})
    first = build_bundle(src, tmp_path / "b1", with_model=False)
    out = tmp_path / "csv"
    made = CliRunner().invoke(main, ["export", "--bundle", str(first), "--format", "csv", "--out", str(out)])
    assert made.exit_code == 0, made.output
    again = build_bundle(src, tmp_path / "b2", with_model=False)
    a, b = open_bundle(first), open_bundle(again)
    assert a.digest != b.digest and a.content_digest == b.content_digest
    result = CliRunner().invoke(main, ["export", "--bundle", str(again), "--from-manifest", str(out),
                                       "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    same = {k: v for k, v in tree_digest(out).items() if k != EXPORT_MANIFEST}
    assert {k: v for k, v in tree_digest(tmp_path / "again").items() if k != EXPORT_MANIFEST} == same
    kept = tmp_path / "saved.json"  # a manifest kept under a name of its own
    kept.write_bytes((out / EXPORT_MANIFEST).read_bytes())
    result = CliRunner().invoke(main, ["export", "--bundle", str(again), "--from-manifest", str(kept),
                                       "--out", str(tmp_path / "third")])
    assert result.exit_code == 0, result.output
    assert {k: v for k, v in tree_digest(tmp_path / "third").items() if k != EXPORT_MANIFEST} == same


@pytest.mark.parametrize("args,message", [
    (["--format", "csv", "--label", "location", "--out", "{tmp}/x"], "--label applies to --format imagefolder"),
    (["--format", "rag", "-c", "Clinical_Reports", "--keyword", "glioma", "--out", "{tmp}/x"],
     "--keyword ranks images"),
    (["--format", "kg"], "export needs --out"),
    (["--keyword", "glioma", "--sort", "image", "--out", "{tmp}/x"], "--sort does not go with --keyword"),
    (["--from-manifest", "{tmp}/none.json", "--format", "kg", "--out", "{tmp}/x"], "drop --format"),
    (["--from-manifest", "{tmp}/none.json", "--out", "{tmp}/x"], "no export manifest"),
])
def test_bad_combinations_are_one_line(real_bundle_path: Path, tmp_path: Path, args: list[str], message: str) -> None:
    _one_line_error(real_bundle_path, [a.replace("{tmp}", str(tmp_path)) for a in args], message)
    assert not (tmp_path / "x").exists()


def test_formats_that_need_the_bundle_refuse_a_bare_store(real_bundle, tmp_path: Path) -> None:
    for fmt in ("hf", "imagefolder"):
        with pytest.raises(InputError, match="needs a bundle"):
            run_export(real_bundle.store, tmp_path / fmt, fmt)
    with pytest.raises(InputError, match="--exclude-leaks needs a bundle"):
        run_export(real_bundle.store, tmp_path / "csv", "csv", exclude_leaks=True)
    assert not list(tmp_path.iterdir())


def test_exclude_leaks_drops_the_train_partner_and_lists_it(real_bundle, real_bundle_path: Path,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "train"
    _export(real_bundle_path, "--format", "jsonl", "--split", "train", "--exclude-leaks", "--out", str(out))
    manifest = json.loads((out / "manifest.json").read_text())
    dropped = {leak["image"]: leak["partners"] for leak in manifest["excluded_leaks"]}
    assert {"image": LEAK_TEST, "split": "test"} in dropped[LEAK_TRAIN]
    names = {d["image"] for d in _jsonl(out / "descriptions_train.jsonl")}
    assert LEAK_TRAIN not in names and not names & set(dropped)
    assert len(names) == manifest["counts"]["images"] == 1653 - len(dropped)
    assert real_bundle.store.split_of(LEAK_TRAIN.split("_")[0]) == "train"
    test_only = tmp_path / "test"  # leaks drop from train only: the test partner stays
    _export(real_bundle_path, "--format", "csv", "--split", "test", "--exclude-leaks", "--out", str(test_only))
    rows = list(csv.DictReader(io.StringIO((test_only / "images.csv").read_text(encoding="utf-8"))))
    assert LEAK_TEST in {r["image"] for r in rows} and len(rows) == 200
    assert json.loads((test_only / "manifest.json").read_text())["excluded_leaks"] == []


def test_the_tui_folder_export_writes_a_manifest_of_its_images(real_bundle, tmp_path: Path) -> None:
    """The search screen's 'copy images to a folder' calls export() with its results and the bundle."""
    store = real_bundle.store
    names = [LEAK_TEST, "MPX1009_synpic46283"]
    selection = Selection.from_query(store, "Image_Descriptions", {"image": {"$in": names}})
    files = export(store, tmp_path / "tree", "imagefolder", selection=selection, bundle=real_bundle)
    assert len(files) == 2
    manifest = json.loads((tmp_path / "tree" / "manifest.json").read_text())
    assert manifest["query"]["filter"] == {"image": {"$in": [d["image"] for d in selection.images]}}
    assert manifest["options"] == {"label": "modality"} and len(manifest["files"]) == 2
    result = CliRunner().invoke(main, ["export", "--bundle", str(real_bundle.path), "--from-manifest",
                                       str(tmp_path / "tree"), "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    assert tree_digest(tmp_path / "tree") == tree_digest(tmp_path / "again")


@pytest.mark.asyncio
async def test_the_search_screen_exports_its_results_in_a_table_format(real_bundle, tmp_path: Path) -> None:
    """Ctrl+S on the search screen offers the folder formats of the export table; RAG writes its manifest."""
    from textual.widgets import Input
    from tui_support import SIZE, make_app, settle, type_text, wait_for

    from medpix_tui.tui.screens.dialogs import SaveDialog

    app = make_app(real_bundle, save_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await type_text(pilot, "glioma")
        await wait_for(pilot, lambda: app.result is not None and app.result.request.keywords.strip() == "glioma"
                       and bool(app.result.names))
        await settle(pilot)
        names = list(app.result.names)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, SaveDialog))
        dialog = app.screen
        labels = [o.label for o in dialog.options]
        assert {"Results as RAG corpus (folder)", "Results as knowledge graph (folder)",
                "Results as Hugging Face folder (folder)", "Results as CSV (folder)"} <= set(labels)
        dialog.query_one("#save-what").focus()
        await pilot.press(*["down"] * labels.index("Results as RAG corpus (folder)"), "enter")
        assert dialog.query_one("#save-path", Input).value == "medpix-images-rag"
        dialog.query_one("#save-path", Input).focus()
        await pilot.press("enter")
        out = tmp_path / "medpix-images-rag"
        await wait_for(pilot, lambda: (out / "manifest.json").is_file(), timeout=120)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "rag"
    assert set(manifest["query"]["filter"]["image"]["$in"]) == set(names)
    cases = {n.split("_")[0] for n in names}
    assert {r["id"] for r in _jsonl(out / "rag.jsonl")} == cases
    assert CliRunner().invoke(main, ["export", "verify", str(out)]).exit_code == 0


def test_search_results_are_saved_by_their_query_or_else_by_their_ids(real_bundle, tmp_path: Path) -> None:
    """The search screen's one-file saves: the search as the export query where one expresses it, else the ids.

    A model's answer (``within``, best first and not in id order) and a query on Clinical_Reports
    shown as images have no query; their ids reproduce them. Keywords narrowing a case field of
    Image_Reports are a query (the keyword search filters that collection).
    """
    from medpix_tui.export import ExportQuery, save_search_results, search_export_query
    from medpix_tui.session import SearchRequest, run_search
    from tests.support import check_one_file_save

    store = real_bundle.store
    expressed = run_search(store, SearchRequest("glioma", facets={"split": frozenset({"train"})}))
    query = search_export_query(store, expressed)
    assert (query.keyword, query.split, query.filter, query.ids) == ("glioma", "train", None, None)
    assert [d["image"] for d in query.documents(store)] == expressed.names
    reports = run_search(store, SearchRequest("brain", "Image_Reports", pairs=(("Case.Title", "glioma"),)))
    query = search_export_query(store, reports)
    assert reports.images and (query.keyword, query.fields, query.ids) == ("brain", ("Case.Title=glioma",), None)
    assert [d["image"] for d in query.documents(store)] == reports.names

    answer = (LEAK_TEST, "MPX1009_synpic46283", LEAK_TRAIN)  # as the model ranks them
    cases = SearchRequest(collection="Clinical_Reports", pairs=(("Case.Title", "fracture"),),
                          facets={"modality": frozenset({"MR"})})
    (tmp_path / "again").mkdir()
    for i, request in enumerate((SearchRequest(within=answer, within_label="similar to x"), cases)):
        result = run_search(store, request)
        assert result.images
        query = search_export_query(store, result)
        key = "U_id" if request.collection == "Clinical_Reports" else "image"
        assert query.ids == tuple(dict.fromkeys(d[key] for d in result.images))
        if request.within:
            assert query.ids == answer
        for fmt in ("json", "jsonl", "parquet"):
            out = tmp_path / f"r{i}.{fmt}"
            save_search_results(store, result, out, fmt, bundle=real_bundle)
            manifest = check_one_file_save(real_bundle, out, tmp_path / "again" / out.name)
            assert manifest["query"]["ids"] == list(query.ids)
            assert manifest["source"]["collection"] == request.collection
        saved = json.loads((tmp_path / f"r{i}.json").read_text())
        assert [d[key] for d in saved] == list(query.ids)
    # a manifest written before ``ids`` existed still reads as a query
    assert ExportQuery.from_json({k: v for k, v in ExportQuery().to_json().items() if k != "ids"}) == ExportQuery()


def test_an_sql_result_manifest_reruns_its_statement_or_says_why_not(real_bundle, tmp_path: Path) -> None:
    """--from-manifest runs the statement again on a fresh connection; one it cannot run is one line."""
    from medpix_tui.export import save_sql_result
    from medpix_tui.sql import connect, run_sql
    from tests.support import check_one_file_save

    statement = "SELECT modality, count(*) AS n, min(age) AS youngest FROM images GROUP BY 1 ORDER BY 1"
    columns, rows = run_sql(connect(real_bundle.parquet_dir), statement)
    (tmp_path / "again").mkdir()
    for fmt in ("json", "jsonl", "parquet", "csv"):
        save_sql_result(statement, columns, rows, tmp_path / f"r.{fmt}", fmt, bundle=real_bundle)
        check_one_file_save(real_bundle, tmp_path / f"r.{fmt}", tmp_path / "again" / f"r.{fmt}")
    # a statement a fresh connection cannot run (a table an older, writable session made)
    save_sql_result("SELECT * FROM mine ORDER BY 1", ["image"], [("a",)], tmp_path / "mine.json", "json",
                    bundle=real_bundle)
    _one_line_error(real_bundle.path, ["--from-manifest", str(tmp_path / "mine.json"), "--out",
                                       str(tmp_path / "again" / "mine.json")], "mine")
    assert not (tmp_path / "again" / "mine.json").exists()


@pytest.mark.asyncio
async def test_a_typed_name_of_another_format_is_refused_not_written(real_bundle, tmp_path: Path) -> None:
    """'t1.parquet' typed with JSON chosen saved JSON under a Parquet name (pyarrow: magic bytes not found)."""
    from textual.widgets import Input
    from tui_support import SIZE, make_app, settle, type_text, wait_for

    from medpix_tui.tui.screens.dialogs import SaveDialog

    app = make_app(real_bundle, save_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await type_text(pilot, "glioma")
        await wait_for(pilot, lambda: app.result is not None and bool(app.result.names))
        await settle(pilot)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, SaveDialog))
        dialog = app.screen
        assert dialog.options[dialog._choice].default_name.endswith(".json")
        box = dialog.query_one("#save-path", Input)
        box.value = "t1.parquet"
        box.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: any("The name ends .parquet" in n.message for n in app._notifications))
        assert app.screen is dialog and not (tmp_path / "t1.parquet").exists()
