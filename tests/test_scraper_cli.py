"""``python -m tools.scraper``: options, exit statuses, the summary, and the end-to-end path to a bundle."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from scraper_support import FixtureSite, make_case

from tools.scraper.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def site() -> Iterator[FixtureSite]:
    with FixtureSite() as s:
        for n in range(1, 6):
            s.add_case(make_case(n))
        yield s


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI installs its own handler on the 'tools.scraper' logger; put things back for other tests."""
    logger = logging.getLogger("tools.scraper")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def _scrape(site: FixtureSite, *args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(main, ["--openi-base", site.url, "--medpix-base", site.url, "--renderer", "none",
                                  "--rate", "0", "--backoff", "0.01", "--timeout", "2", *args])
    return result.exit_code, result.stdout, result.stderr


def test_harvest_prints_a_summary(site: FixtureSite, tmp_path: Path) -> None:
    code, out, err = _scrape(site, "--id", "MPX9001,MPX9002", "--id", "MPX9003", "--out", str(tmp_path / "s"))
    assert code == 0, err
    assert out.splitlines() == [
        f"written: 3 case(s), 6 image(s) to {tmp_path / 's'}",
        "requests: 18 issued, 12 fetched, 0 from cache, 0 retried",
        "skipped: 0", "sources: 0 REST, 3 rendered page, 0 partial (case text from the Open-i abstract only)",
        "failed: 0",
        f"review: flagged images are listed in {tmp_path / 's' / 'curation_review.csv'}"]
    assert (tmp_path / "s.cache").is_dir()
    code, out, _ = _scrape(site, "--id", "MPX9001", "--out", str(tmp_path / "s"), "--force")
    assert code == 0 and "requests: 0 issued, 0 fetched, 6 from cache" in out


def test_usage_errors(site: FixtureSite, tmp_path: Path) -> None:
    code, _, err = _scrape(site, "--out", str(tmp_path / "s"))
    assert code == 2 and "give exactly one of --id, --query or --overview" in err
    code, _, err = _scrape(site, "--id", "MPX9001", "--query", "x", "--out", str(tmp_path / "s"))
    assert code == 2
    (tmp_path / "s").mkdir()
    code, _, err = _scrape(site, "--id", "MPX9001", "--out", str(tmp_path / "s"))
    assert code == 2 and err.strip().endswith("(pass --force to replace it)") and site.count() == 0
    bad = tmp_path / "review.csv"
    bad.write_text("image,verdict\n")
    code, _, err = _scrape(site, "--id", "MPX9001", "--out", str(tmp_path / "t"), "--overrides", str(bad))
    assert code == 2 and "needs the columns 'image' and 'decision'" in err


def test_failures_are_logged_one_line_each_and_exit_1_when_nothing_is_left(site: FixtureSite, tmp_path: Path) -> None:
    del site.pages[site.cases["MPX9001"].page_id]
    code, out, err = _scrape(site, "--id", "MPX9001", "--out", str(tmp_path / "s"))
    assert code == 1 and not (tmp_path / "s").exists()
    assert "failed: 1" in out and "written: nothing" in out
    errors = [line for line in err.splitlines() if line.startswith("ERROR ")]
    assert len(errors) == 1 and "failed MPX9001: case lacks field Topic.Title" in errors[0]
    assert "case?id=00000001-fixture-case: HTTP 404" in errors[0]
    assert err.strip().splitlines()[-1].startswith("error: nothing harvested")


def test_contact_goes_into_the_user_agent(site: FixtureSite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    from tools.scraper import cli

    real = cli.Fetcher

    def spy(*args: object, **kw: object) -> object:
        seen.append(str(kw["user_agent"]))
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(cli, "Fetcher", spy)
    code, _, _ = _scrape(site, "--id", "MPX9001", "--out", str(tmp_path / "s"), "--contact", "lab@example.org")
    assert code == 0 and seen[0].startswith("medpix-tui-scraper/") and seen[0].endswith("; lab@example.org)")


def test_module_entry_point_help() -> None:
    result = subprocess.run([sys.executable, "-m", "tools.scraper", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "--overview" in result.stdout and "--rate" in result.stdout


def test_end_to_end_scrape_build_query(site: FixtureSite, tmp_path: Path) -> None:
    """Scrape fixture cases, build a bundle from the result, query it; then add a lab case and rebuild."""
    bundle = pytest.importorskip("medpix_tui.bundle")
    from medpix_tui.cli import main as medpix

    source = tmp_path / "harvest"
    code, _, err = _scrape(site, "--id", ",".join(f"MPX900{n}" for n in range(1, 6)), "--out", str(source))
    assert code == 0, err
    runner = CliRunner()
    built = runner.invoke(medpix, ["bundle", "build", "--source", str(source), "--out", str(tmp_path / "b"),
                                   "--no-model"])
    assert built.exit_code == 0, built.output
    opened = bundle.open_bundle(tmp_path / "b")
    try:
        assert opened.manifest["counts"]["images_ct"] == 5 and opened.manifest["counts"]["images_mr"] == 5
        docs = opened.store.find("Image_Descriptions", {"U_id": "MPX9003"})
        assert sorted(d["image"] for d in docs) == [i.name for i in site.cases["MPX9003"].images]
        reports = opened.store.find("Clinical_Reports", {"U_id": "MPX9002"})
        assert reports and reports[0]["Case"]["Title"] == "Fixture condition 2"
    finally:
        opened.close()
    query = runner.invoke(medpix, ["query", "--bundle", str(tmp_path / "b"), "--collection", "Image_Descriptions",
                                   "--field", "Description.Caption=case 4:", "--json"])
    assert query.exit_code == 0, query.output
    assert sorted(d["image"] for d in json.loads(query.stdout)) == [i.name for i in site.cases["MPX9004"].images]

    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "LAB0001_a.png").write_bytes((source / "images" / "MPX9001_synpic00100.png").read_bytes())
    image = json.loads((source / "Descriptions.json").read_text())[0]
    case = {"U_id": "LAB0001", "TAC": ["LAB0001_a"], "MRI": [], "Case": {"Title": "Lab case"},
            "Topic": {"Title": "Lab topic"}}
    image = dict(image, U_id="LAB0001", image="LAB0001_a")
    (lab / "case.json").write_text(json.dumps({"case": case, "images": [image]}))
    added = runner.invoke(medpix, ["add-case", str(lab / "case.json"), "--images", str(lab), "--source", str(source)])
    assert added.exit_code == 0, added.output
    rebuilt = runner.invoke(medpix, ["bundle", "build", "--source", str(source), "--out", str(tmp_path / "b"),
                                     "--no-model", "--force"])
    assert rebuilt.exit_code == 0, rebuilt.output
    query = runner.invoke(medpix, ["query", "--bundle", str(tmp_path / "b"), "--collection", "Clinical_Reports",
                                   "--field", "U_id=^LAB", "--json"])
    assert query.exit_code == 0 and [d["Case"]["Title"] for d in json.loads(query.stdout)] == ["Lab case"]


@pytest.mark.parametrize(("args", "message"), [
    (["--id", "glioma"], "Invalid value for '--id': 'glioma' is not a MedPix case id"),
    (["--id", " , "], "Invalid value for '--id': names no case id"),
    (["--id", "MPX9001", "--openi-base", "openi.example"], "'openi.example' is not an http(s) server address"),
    (["--id", "MPX9001", "--medpix-base", "ftp://medpix.example"], "is not an http(s) server address"),
    (["--id", "MPX9001", "--rate", "fast"], "'fast' is not a valid float"),
    (["--bogus"], "No such option '--bogus'"),
])
def test_bad_options_are_one_line_before_any_request(site: FixtureSite, tmp_path: Path, args: list[str],
                                                     message: str) -> None:
    """click's usage errors were four lines; a bad --id or server was retried --retries times first."""
    result = CliRunner().invoke(main, ["--out", str(tmp_path / "s"), "--renderer", "none", "--retries", "3",
                                       "--openi-base", site.url, "--medpix-base", site.url, *args])
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.strip().endswith("--help'") and site.count() == 0 and not (tmp_path / "s").exists()


def test_an_existing_output_is_refused_before_the_summary(site: FixtureSite, tmp_path: Path) -> None:
    """The summary of a run that never ran came before the "output exists" line."""
    (tmp_path / "s").mkdir()
    code, out, err = _scrape(site, "--id", "MPX9001", "--out", str(tmp_path / "s"))
    assert code == 2 and out == "" and err == f"error: output exists: {tmp_path / 's'} (pass --force to replace it)\n"
    assert site.count() == 0 and not (tmp_path / "s.cache").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--out", ""], "error: --out is empty: an empty path names no file or folder to write; see "),
    (["--out", "-"], "error: --out -: writing to standard output is not supported here; "),
    (["--out", "s", "--cache", ""], "error: --cache is empty: "),
    (["--out", "s", "--cache", "-"], "error: --cache -: writing to standard output is not supported here; "),
])
def test_an_empty_or_dash_output_is_refused_before_any_request(site: FixtureSite, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch, args: list[str],
                                                               message: str) -> None:
    """--out - started the harvest (and would have made a folder '-'); --out '' said 'output exists: .'."""
    monkeypatch.chdir(tmp_path)
    code, out, err = _scrape(site, "--id", "MPX9001", *args)
    assert code == 2 and out == "" and err.startswith(message) and err.count("\n") == 1, err
    assert site.count() == 0 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option", ["--out", "--cache"])
def test_a_folder_under_a_file_is_refused_before_any_request(site: FixtureSite, tmp_path: Path,
                                                             option: str) -> None:
    """--out /etc/passwd/x was a 30-line FileExistsError traceback (status 1) after the harvest's requests."""
    (tmp_path / "file").write_text("not a folder\n")
    under = tmp_path / "file" / "x"
    args = ["--out", str(under)] if option == "--out" else ["--out", str(tmp_path / "s"), "--cache", str(under)]
    code, out, err = _scrape(site, "--id", "MPX9001", *args)
    assert code == 2 and out == "", err
    assert err.startswith(f"error: cannot create {under}: not a folder: {tmp_path / 'file'} is a file"), err
    assert err.count("\n") == 1 and site.count() == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_the_module_refuses_a_folder_under_a_file_in_one_line(tmp_path: Path) -> None:
    """The reported command itself, through ``python -m tools.scraper`` (no server is reached: it is refused first)."""
    (tmp_path / "file").write_text("")
    out, nowhere = tmp_path / "file" / "x", "http://127.0.0.1:9"
    run = subprocess.run([sys.executable, "-m", "tools.scraper", "--id", "MPX1009", "--out", str(out),
                          "--openi-base", nowhere, "--medpix-base", nowhere, "--retries", "0"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 2 and run.stdout == "" and "Traceback" not in run.stderr, run.stderr
    assert run.stderr == f"error: cannot create {out}: not a folder: {tmp_path / 'file'} is a file\n"
