"""Installing anywhere: the wheel ships the checkpoint, every default path has one home and says
its rule (in a checkout and installed), ``bundle build --model/--no-model`` and ``doctor``.

"Installed" is the situation of issue 16's report: a regular wheel install, where this package's
parent is site-packages (no ``pyproject.toml`` beside it); the tests reach it by turning the
checkout test off (:func:`installed`), or, for the wheel, by importing from the unpacked wheel.
"""

from __future__ import annotations

import ast
import base64
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from medpix_tui import locations
from medpix_tui.bundle import build_bundle, open_bundle, resolve_bundle
from medpix_tui.cli import main
from medpix_tui.errors import BundleError
from tests.support import read_until_closed, write_source
from tests.test_model_cli import pictures_source

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "bundle" / "model"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Run as a wheel install outside any checkout, with the user folders under ``tmp_path``."""
    monkeypatch.setattr(locations, "checkout_root", lambda: None)
    for name in ("MEDPIX_BUNDLE", "MEDPIX_SOURCE", "MEDPIX_CACHE"):
        monkeypatch.delenv(name, raising=False)
    for var in ("XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    return tmp_path


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


# -- the wheel -----------------------------------------------------------------------

def test_listed_packages_are_the_packages_on_disk() -> None:
    """pyproject lists the packages (find cannot add the mapped checkpoint): none may be missed, a
    folder of data only (serve's templates) included, or setuptools warns that it ships it unlisted."""
    package = ROOT / "medpix_tui"
    on_disk = sorted(str(p.relative_to(ROOT)).replace("/", ".")
                     for p in [package, *package.rglob("*")] if p.is_dir() and p.name != "__pycache__")
    listed = PYPROJECT["tool"]["setuptools"]["packages"]
    assert sorted(listed) == sorted([*on_disk, locations.MODEL_PACKAGE])
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {locations.MODEL_PACKAGE: "bundle/model"}


def _record(wheel: Path) -> dict[str, tuple[str, int]]:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
        rows = csv.reader(io.StringIO(zf.read(name).decode()))
        return {path: (digest, int(size)) for path, digest, size in rows if digest}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel ``pip wheel`` makes of a copy of the checkout (a copy: the build writes build/ and egg-info)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "medpix_tui", src / "medpix_tui", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(MODEL, src / "bundle" / "model")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), str(src)],
                          check=False, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (built,) = (tmp / "dist").glob("medpix_tui-*.whl")
    return built


def test_the_wheel_records_every_checkpoint_file(wheel: Path) -> None:
    record = _record(wheel)
    shipped = sorted(p for p in MODEL.iterdir() if p.is_file())
    assert any(p.suffix == ".safetensors" for p in shipped)
    for path in shipped:
        digest = base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()
        assert record[f"{locations.MODEL_PACKAGE}/{path.name}"] == (f"sha256={digest}", path.stat().st_size)
    assert not [p for p in record if p.startswith(("tests/", "tools/", "bench/", "bundle/"))]


def test_unpacked_wheel_finds_its_checkpoint_through_package_data(wheel: Path, tmp_path: Path) -> None:
    """From the unpacked wheel (no checkout around it, no site-packages), the checkpoint is the package's data."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    script = ("import json; from medpix_tui import locations as l; "
              "print(json.dumps([l.checkout_root() is None, str(l.model_dir().path), l.model_dir().rule, "
              "l.default_source().path is None, l.default_source().rule]))")
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-S", "-c", script], check=False, capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    no_checkout, model, rule, no_source, source_rule = json.loads(proc.stdout)
    assert no_checkout and no_source
    assert model == str(site / locations.MODEL_PACKAGE) and "installed with the package" in rule
    assert "--source DIR or $MEDPIX_SOURCE" in source_rule


# -- locations -----------------------------------------------------------------------

def test_in_a_checkout_the_defaults_are_the_checkouts(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MEDPIX_BUNDLE", "MEDPIX_SOURCE"):
        monkeypatch.delenv(name, raising=False)
    assert locations.checkout_root() == ROOT
    assert locations.default_bundle().path == ROOT / "bundle" / "medpix-2.0"
    assert locations.default_source().path == ROOT.parent / "shared" / "medpix-2.0"
    assert locations.model_dir() == locations.Location(MODEL, "the checkout's bundle/model")
    monkeypatch.setenv("MEDPIX_SOURCE", "/data/medpix")
    assert locations.default_source() == locations.Location(Path("/data/medpix"), "$MEDPIX_SOURCE")
    assert locations.default_source("x").rule == "--source"


def test_installed_defaults_are_user_folders_and_the_source_must_be_named(installed: Path) -> None:
    bundle = locations.default_bundle()
    assert bundle.path == installed / "xdg_data_home" / "medpix-tui" / "medpix-2.0"
    assert "installed outside a checkout" in bundle.rule
    assert locations.default_source().path is None
    assert locations.cache_dir().path == installed / "xdg_cache_home" / "medpix-tui"
    assert locations.first_page_dir().path == installed / "xdg_cache_home" / "medpix-tui" / "first-page"
    assert locations.history_file().path == installed / "xdg_state_home" / "medpix-tui" / "sql_history.json"


def test_installed_without_a_bundle_the_error_names_the_rules_not_a_path_in_the_environment(installed: Path) -> None:
    with pytest.raises(BundleError) as err:
        resolve_bundle()
    message = str(err.value)
    assert str(installed / "xdg_data_home" / "medpix-tui" / "medpix-2.0") in message
    assert ("installed outside a checkout, the source to build from must be named"
            " (--source DIR or $MEDPIX_SOURCE)") in message
    assert "shared" not in message and sys.prefix not in message
    code, out, errout = run("query", "--json")
    assert code == 2 and out == "" and errout == f"error: {message}\n"


def test_help_says_which_rule_applies_here(installed: Path) -> None:
    code, out, _ = run("--help")
    assert code == 0
    flat = "".join(out.split())  # help wraps long paths at their hyphens
    assert "elsemedpix-2.0intheuserdatafolder" in flat
    assert "Here:" + str(installed / "xdg_data_home" / "medpix-tui" / "medpix-2.0") + "(thedefaultwheninstalled" in flat
    code, out, _ = run("bundle", "build", "--help")
    flat = "".join(out.split())
    assert "Here:installedoutsideacheckout,thesourcetobuildfrommustbenamed" in flat


def test_installed_build_with_the_packaged_checkpoint(installed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed, a build takes the package's checkpoint; without one it stops before writing anything."""
    monkeypatch.setattr(locations, "packaged_model_dir", lambda: None)
    source = write_source(installed / "src")
    code, out, err = run("bundle", "build", "--source", str(source))
    assert code == 2 and out == "" and not (installed / "xdg_data_home").exists()
    assert err.startswith("error: no checkpoint: ") and err.rstrip().endswith("pass --model DIR, or --no-model")
    code, out, err = run("bundle", "build")
    assert code == 2 and err == ("error: no source release: installed outside a checkout, the source to build from "
                                 "must be named (--source DIR or $MEDPIX_SOURCE)\n")


def test_installed_build_of_the_default_bundle_then_opened_by_default(installed: Path) -> None:
    """``bundle build --source DIR`` (no --out) makes the default bundle, in a user data folder not there yet."""
    source = write_source(installed / "src")
    code, out, err = run("bundle", "build", "--no-model", env={"MEDPIX_SOURCE": str(source)})
    assert code == 0, err
    target = installed / "xdg_data_home" / "medpix-tui" / "medpix-2.0"
    assert out.splitlines()[-1].startswith(f"built {target} (the default when installed outside a checkout")
    assert resolve_bundle().path == target and resolve_bundle().root == target.resolve()  # a link to its version


def test_a_first_use_build_says_so_even_without_progress_bars(installed: Path) -> None:
    # stderr redirected: the bars are off, and the command takes seconds for a reason it names
    source = write_source(installed / "src")
    target = installed / "xdg_data_home" / "medpix-tui" / "medpix-2.0"
    code, out, err = run("query", "--limit", "1", "--json", env={"MEDPIX_SOURCE": str(source)})
    assert code == 0 and json.loads(out)
    assert err.splitlines() == [f"building the default bundle at {target} from {source} (first use)",
                                f"built the default bundle at {target}"]
    code, _, err = run("query", "--limit", "1", "--json", env={"MEDPIX_SOURCE": str(source)})
    assert code == 0 and err == ""  # built once


def test_a_read_only_user_data_folder_says_what_to_do(installed: Path) -> None:
    source = write_source(installed / "src")
    (installed / "xdg_data_home").write_text("")  # a file where the folder would go: nothing can be made there
    code, _, err = run("query", "--limit", "1", env={"MEDPIX_SOURCE": str(source)})
    assert code == 2 and err.count("\n") == 2 and err.splitlines()[1].startswith("error: ")
    assert err.rstrip().endswith("build one elsewhere ('medpix-tui bundle build --out DIR') and pass --bundle DIR "
                                 "or set $MEDPIX_BUNDLE")


# -- bundle build --model / --no-model ----------------------------------------------------

def test_build_without_a_model_says_so_in_its_last_line(tmp_path: Path) -> None:
    source = write_source(tmp_path / "src")
    code, out, _ = run("bundle", "build", "--source", str(source), "--out", str(tmp_path / "b"), "--no-model")
    assert code == 0
    assert out.splitlines()[-1].endswith("; model: none (--no-model: the model commands refuse this bundle)")
    code, out, _ = run("bundle", "info", str(tmp_path / "b"))
    assert "    model: none (the model commands refuse this bundle)" in out.splitlines()


def test_model_and_no_model_are_checked(tmp_path: Path) -> None:
    source = write_source(tmp_path / "src")
    base = ["bundle", "build", "--source", str(source), "--out", str(tmp_path / "b")]
    code, out, err = run(*base, "--model", str(MODEL), "--no-model")
    assert (code, out, err) == (2, "", "error: --model and --no-model exclude each other\n")
    code, out, err = run(*base, "--model", str(tmp_path))
    assert code == 2 and err == (f"error: not a model checkpoint: {tmp_path}"
                                 " (--model; it has no open_clip_config.json)\n")
    assert not (tmp_path / "b").exists()


def test_build_with_a_named_model_ships_it(tmp_path: Path) -> None:
    """``--model DIR`` (a copy of the shipped checkpoint under another name) is the one the bundle ships and names."""
    ckpt = shutil.copytree(MODEL, tmp_path / "candidate")
    meta = json.loads((ckpt / "medpix_model.json").read_text())
    (ckpt / "medpix_model.json").write_text(json.dumps({**meta, "name": "candidate-under-test"}))
    source = pictures_source(tmp_path / "src")
    code, out, err = run("bundle", "build", "--source", str(source), "--out", str(tmp_path / "b"), "--model", str(ckpt))
    assert code == 0, err
    assert out.splitlines()[-1].endswith("; model: candidate-under-test")
    manifest = open_bundle(tmp_path / "b").manifest
    assert manifest["model"]["name"] == "candidate-under-test" and manifest["model"]["count"] == 8


def test_library_build_without_a_checkpoint_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locations, "model_dir", lambda option=None: locations.Location(None, "no checkpoint: test"))
    with pytest.raises(BundleError, match="^no checkpoint: test$"):
        build_bundle(write_source(tmp_path / "src"), tmp_path / "b")
    assert not (tmp_path / "b").exists()


# -- doctor --------------------------------------------------------------------------

def test_doctor_json_names_every_location_with_its_rule(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDPIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MEDPIX_BUNDLE", raising=False)
    source = write_source(tmp_path / "src")
    build_bundle(source, tmp_path / "b", with_model=False)
    code, out, _ = run("--bundle", str(tmp_path / "b"), "doctor", "--json", env={"MEDPIX_SOURCE": str(source)})
    assert code == 0
    report = json.loads(out)
    assert report["checkout"] == str(ROOT)
    assert report["bundle"] == {"path": str(tmp_path / "b"), "rule": "--bundle", "state": "built",
                                "created": report["bundle"]["created"], "cases": 2, "images": 3, "model": None}
    assert report["source"] == {"path": str(source), "rule": "$MEDPIX_SOURCE", "present": True}
    assert report["model"]["path"] == str(MODEL) and report["model"]["name"]
    assert report["cache"] == {"path": str(tmp_path / "cache"), "rule": "$MEDPIX_CACHE"}
    assert report["first_pages"]["path"] == str(tmp_path / "cache" / "first-page")
    assert set(report) >= {"state", "history", "versions", "terminal"}
    assert report["versions"]["textual"] and report["versions"]["python"].startswith(sys.version.split()[0])
    # CliRunner's stdout is no terminal: the answer is the environment's guess, and says so
    assert report["terminal"]["graphics"] in ("kitty", "sixel", "half-blocks")
    assert report["terminal"]["how"].startswith("stdout is not a terminal")


def test_doctor_tells_a_bundle_from_what_is_none(tmp_path: Path) -> None:
    """It called any file an archive and any folder "not built yet" (a build there would then refuse)."""
    from medpix_tui.doctor import bundle_state

    (tmp_path / "notes.txt").write_text("not a tar")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "mine.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    with tarfile.open(tmp_path / "b.tar", "w") as tar:
        tar.add(tmp_path / "notes.txt", arcname="notes.txt")
    assert bundle_state(tmp_path / "notes.txt")["state"].startswith("not a bundle: a file that is no archive")
    assert bundle_state(tmp_path / "folder")["state"] == "not a bundle: a folder without manifest.json"
    assert bundle_state(tmp_path / "b.tar")["state"].startswith("archive")
    for missing in (tmp_path / "empty", tmp_path / "nothing"):
        assert bundle_state(missing)["state"].startswith("not built yet")
        # --bundle names no default: nothing builds it, so "built on first use" was untrue
        assert bundle_state(missing, builds=False)["state"].startswith("not found: --bundle names no bundle")


def test_doctor_says_a_missing_bundle_option_is_not_built_on_first_use(tmp_path: Path) -> None:
    from medpix_tui.doctor import diagnose

    assert diagnose(bundle=tmp_path / "nothing")["bundle"]["state"].startswith("not found: --bundle")


def test_doctor_text_installed(installed: Path) -> None:
    code, out, _ = run("doctor", env={"TMUX": "/tmp/tmux-0/default,1,0", "TERM": "screen-256color"})
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "   checkout: none: installed (defaults: user folders; the source must be named)"
    assert any(line.startswith("     source: -  [installed outside a checkout") for line in lines)
    assert lines[-1].startswith("   terminal: images as half-blocks (stdout is not a terminal")
    assert "TMUX=" in lines[-1]


@pytest.mark.parametrize(("env", "graphics"), [({"TERM": "xterm-kitty"}, "kitty"), ({"KITTY_WINDOW_ID": "1"}, "kitty"),
                                               ({"TERM_PROGRAM": "WezTerm"}, "sixel"),
                                               ({"TERM": "xterm-256color"}, "half-blocks"),
                                               ({"TERM": "xterm-kitty", "TMUX": "x"}, "half-blocks")])
def test_terminal_guess_from_the_environment(env: dict[str, str], graphics: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from medpix_tui.doctor import TERMINAL_ENV, terminal

    for name in TERMINAL_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert terminal()["graphics"] == graphics


def test_doctor_is_a_lazy_command() -> None:
    from medpix_tui.cli.app import COMMAND_MODULES

    assert COMMAND_MODULES["doctor"] == "doctor"


# -- dependencies ----------------------------------------------------------------------

def test_the_library_never_imports_the_scraper_dependencies() -> None:
    """requests, bs4 and selenium are the [scraper] extra's: only tools/ may import them."""
    scraper = {"requests", "bs4", "selenium"}
    for path in (ROOT / "medpix_tui").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            assert not {n.split(".")[0] for n in names} & scraper, f"{path} imports {names}"
    base = {r.split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in PYPROJECT["project"]["dependencies"]}
    assert not base & {"requests", "beautifulsoup4", "selenium"}
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"scraper", "train", "test", "dev"} <= set(extras)


def test_doctor_in_a_terminal_asks_it_through_textual_image(tmp_path: Path) -> None:
    """On a terminal (a pty here, which answers neither query, as tmux does not), textual-image's own
    detection answers: half-blocks."""
    import pty

    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm-256color"}
    chunks = []
    try:
        proc = subprocess.Popen([sys.executable, "-m", "medpix_tui", "doctor"], stdin=follower, stdout=follower,
                                stderr=subprocess.PIPE, env=env, cwd=tmp_path)
        os.close(follower)
        chunks.append(read_until_closed(leader))
        proc.wait(timeout=120)
        stderr = proc.stderr.read() if proc.stderr else b""
    finally:
        os.close(leader)
    assert proc.returncode == 0, stderr
    lines = b"".join(chunks).decode(errors="replace").replace("\r", "").splitlines()
    (line,) = [line for line in lines if line.startswith("   terminal: ")]
    assert line.startswith("   terminal: images as half-blocks (textual-image asked the terminal; TERM=xterm-256color")


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    """The README's two opening commands are the whole set-up; CI runs the second one as it is written."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert len(block) == 2 and block[0].endswith("-e . && .venv/bin/medpix-tui")
    assert "'.[test,scraper,dev]'" in block[1]
    assert block[1] in (ROOT / ".ci" / "run").read_text().splitlines()
