"""``add-case`` under hostile conditions: two runs at once, a closed terminal, a killed run's leftovers,
a read-only disk, a source written by another program, NaN, and the progress shown on a terminal."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import test_add_case
from click.testing import CliRunner
from scraper_support import png_bytes
from serve_support import wait_for
from support import read_until_closed
from test_add_case import _case_doc, _image_doc, _snapshot

from medpix_tui import add_case as add_case_module
from medpix_tui.add_case import JOURNAL_FILE, LOCK_FILE, add_case
from medpix_tui.errors import InputError, ValidationError
from medpix_tui.source import load_source

ROOT = Path(__file__).resolve().parents[1]
#: The fixtures of the plain tests: a small source folder, and a new case LAB0001 of three images.
source, new_case = test_add_case.source, test_add_case.new_case
#: Seconds a condition may take to come true before the test fails (a loaded CI machine is slow).
PATIENCE = 60.0

#: Runs the CLI, but stops at the rename of Case_topic.json (the worst moment: images and
#: Descriptions.json in place) until the FIFO named by argv[2] is written to, saying so in argv[1].
PAUSED = r"""
import os, pathlib, signal, sys
import medpix_tui.add_case as ac
marker, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
if os.environ.get("IGNORE_SIGHUP"):
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup starts it
real = ac._place
def paused(tmp, path, then):
    if path.name == "Case_topic.json":
        marker.write_text(str(os.getpid()))
        go.read_text()  # a FIFO: blocks until the test writes to it
    real(tmp, path, then)
ac._place = paused
from medpix_tui.cli import main
main(sys.argv[3:], prog_name="medpix-tui")
"""


def _args(case_json: Path, images: Path, source: Path) -> list[str]:
    return ["add-case", str(case_json), "--images", str(images), "--source", str(source)]


@contextmanager
def _paused_add(tmp_path: Path, args: list[str], **env: str) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """An add-case process stopped just before its last rename; yields it and the file that resumes it."""
    marker, go = tmp_path / "paused", tmp_path / "go"
    if not go.exists():  # a second pause in one test uses the same FIFO
        os.mkfifo(go)
    proc = subprocess.Popen([sys.executable, "-c", PAUSED, str(marker), str(go), *args], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    try:
        wait_for(lambda: marker.exists() or proc.poll() is not None, PATIENCE, "the add to reach its last rename")
        assert proc.poll() is None, proc.communicate()
        yield proc, go
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=PATIENCE)


def _resume(go: Path, proc: subprocess.Popen[str]) -> None:
    """Let the paused add go on: write to its FIFO once it reads it (a blocking open would hang the
    test if the add had died; then this fails instead)."""
    def reader() -> int | None:
        try:
            return os.open(go, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: nobody reads it yet
                raise
            assert proc.poll() is None, "the paused add ended before it was resumed"
            return None

    fd = wait_for(reader, PATIENCE, "the paused add to read its FIFO")
    os.write(fd, b"go")
    os.close(fd)


def _second_case(tmp_path: Path) -> tuple[Path, Path]:
    """LAB0002, one CT image, in its own folder."""
    images = tmp_path / "lab2"
    images.mkdir()
    (images / "LAB0002_img1.png").write_bytes(png_bytes(40))
    path = tmp_path / "case2.json"
    path.write_text(json.dumps({"case": _case_doc("LAB0002", ["LAB0002_img1"], []),
                                "images": [_image_doc("LAB0002", "LAB0002_img1", "CT")]}))
    return path, images


def _hidden(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(".*"))


def test_two_adds_at_once_both_land(source: Path, new_case: tuple[Path, Path, dict], tmp_path: Path) -> None:
    """The second waits for the first (saying so) instead of writing JSON read before the first's case."""
    path, images, _ = new_case
    path2, images2 = _second_case(tmp_path)
    with _paused_add(tmp_path, _args(path, images, source)) as (first, go):
        errors = tmp_path / "second.err"
        with open(errors, "w") as err:
            second = subprocess.Popen([sys.executable, "-m", "medpix_tui", *_args(path2, images2, source)],
                                      stdout=subprocess.PIPE, stderr=err, text=True,
                                      env={**os.environ, "PYTHONPATH": str(ROOT)})
        wait_for(lambda: "waiting for another add-case" in errors.read_text() or second.poll() is not None,
                 PATIENCE, "the second add to wait")
        assert f"waiting for another add-case (pid {first.pid}) on {source} to finish" in errors.read_text()
        _resume(go, first)
        assert first.wait(timeout=PATIENCE) == 0
        out, _ = second.communicate(timeout=PATIENCE)
        assert second.returncode == 0, errors.read_text()
    assert out.startswith("added case LAB0002")
    assert [c["U_id"] for c in load_source(source).cases] == ["MPX8001", "LAB0001", "LAB0002"]
    assert _hidden(source) == []


def test_an_add_that_waits_too_long_is_refused_in_one_line(source: Path, new_case: tuple[Path, Path, dict]) -> None:
    path, images, _ = new_case
    lock = source / LOCK_FILE
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{os.getpid()}\n".encode())
        before = _snapshot(source)
        heard: list[str] = []
        with pytest.raises(InputError, match=rf"^another add-case \(pid {os.getpid()}\) is still running on .* "
                                             "after 0.3 s; run this one again when it has finished$"):
            add_case(path, images, source, lock_wait=0.3, notify=heard.append)
        assert heard == [f"waiting for another add-case (pid {os.getpid()}) on {source} to finish..."]
        assert _snapshot(source) == before
    finally:
        os.close(fd)


def test_a_source_written_by_another_program_meanwhile_is_kept(source: Path, new_case: tuple[Path, Path, dict],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A program that takes no lock rewrote Case_topic.json during the copy: its version stays, the add is refused."""
    path, images, _ = new_case
    theirs = json.dumps(json.loads((source / "Case_topic.json").read_text()))  # the same cases, written otherwise
    real_copy = add_case_module._copy_new

    def copy_while_another_writes(src: Path, dst: Path) -> None:
        (source / "Case_topic.json").write_text(theirs)
        real_copy(src, dst)

    monkeypatch.setattr(add_case_module, "_copy_new", copy_while_another_writes)
    before = {**_snapshot(source), "Case_topic.json": theirs.encode()}
    with pytest.raises(InputError, match="Case_topic.json changed while the case was being added .*nothing was "
                                         "changed: run add-case again"):
        add_case(path, images, source)
    assert _snapshot(source) == before


def test_a_closed_terminal_rolls_back_and_nohup_is_kept(source: Path, new_case: tuple[Path, Path, dict],
                                                        tmp_path: Path) -> None:
    """SIGHUP at the worst moment undoes the add as Ctrl-C does; under nohup (SIGHUP ignored) the add goes on."""
    path, images, _ = new_case
    before = _snapshot(source)
    with _paused_add(tmp_path, _args(path, images, source)) as (proc, _):
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=PATIENCE)
    assert proc.returncode == 129, err
    assert err.strip() == "hung up; nothing was changed"
    assert _snapshot(source) == before

    (tmp_path / "paused").unlink()
    with _paused_add(tmp_path, _args(path, images, source), IGNORE_SIGHUP="1") as (proc, go):
        proc.send_signal(signal.SIGHUP)
        _resume(go, proc)
        out, err = proc.communicate(timeout=PATIENCE)
    assert proc.returncode == 0, err
    assert out.startswith("added case LAB0001")
    assert load_source(source).cases[-1]["U_id"] == "LAB0001" and _hidden(source) == []


def test_what_a_killed_add_left_is_undone_by_the_next(source: Path, new_case: tuple[Path, Path, dict],
                                                      tmp_path: Path) -> None:
    """SIGKILL after the images and Descriptions.json are in place: the retry undoes that, then adds."""
    path, images, payload = new_case
    with _paused_add(tmp_path, _args(path, images, source)) as (proc, _):
        proc.kill()
        proc.wait(timeout=PATIENCE)
    assert (source / JOURNAL_FILE).exists() and (source / "images" / "LAB0001_img1.png").exists()
    with pytest.raises(ValidationError):
        load_source(source)  # half a case: images without their case
    result = CliRunner().invoke(_main(), _args(path, images, source))
    assert result.exit_code == 0, result.output
    assert f"note: undid an interrupted add-case of LAB0001 (pid {proc.pid}) in {source}" in result.output
    data = load_source(source)
    assert [c["U_id"] for c in data.cases] == ["MPX8001", "LAB0001"] and data.images[-3:] == payload["images"]
    assert _hidden(source) == []


def _main() -> Any:
    from medpix_tui.cli import main

    return main


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


def test_temporaries_of_a_dead_add_go_and_a_live_ones_stay(source: Path, new_case: tuple[Path, Path, dict]) -> None:
    path, images, _ = new_case
    dead, live = _dead_pid(), os.getppid()
    stale = [source / "images" / f".LAB0001_img1.png.adding-{dead}", source / f".Case_topic.json.adding-{dead}"]
    alive = source / "images" / f".LAB0009_img1.png.adding-{live}"
    for leftover in [*stale, alive]:
        leftover.write_bytes(b"part of a copy")
    heard: list[str] = []
    add_case(path, images, source, notify=heard.append)
    assert heard == [f"note: removed 2 temporary file(s) an interrupted add-case left in {source}"]
    assert _hidden(source) == [alive]


def test_an_image_no_document_lists_says_how_to_recover(source: Path, new_case: tuple[Path, Path, dict]) -> None:
    """An older add, killed, left images/ files without a journal: which are whose cannot be known, so say."""
    path, images, _ = new_case
    (source / "images" / "LAB0001_img2.png").write_bytes(png_bytes(11))
    with pytest.raises(InputError) as err:
        add_case(path, images, source)
    assert (f"images/LAB0001_img2.png already exists in the source but no image document lists it (left by an "
            f"interrupted add-case?): if it is not yours, remove {source / 'images' / 'LAB0001_img2.png'} and run "
            "add-case again") in str(err.value)


def _read_only(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """Writes fail as on a read-only mount: there even an unlink of a missing file fails with EROFS."""
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EROFS, "Read-only file system")

    real_unlink, real_open = Path.unlink, os.open

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if ".adding-" in self.name:
            refuse()
        real_unlink(self, missing_ok=missing_ok)

    def open_(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(file).endswith(LOCK_FILE if where == "lock" else f".adding-{os.getpid()}"):
            refuse()
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", unlink)
    monkeypatch.setattr(os, "open", open_)


@pytest.mark.parametrize("where", ["lock", "copy"])
def test_a_read_only_source_is_one_line_and_changes_nothing(source: Path, new_case: tuple[Path, Path, dict],
                                                            monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    path, images, _ = new_case
    before = _snapshot(source)
    _read_only(monkeypatch, where)
    result = CliRunner().invoke(_main(), _args(path, images, source))
    assert result.exit_code == 2, result.output
    assert result.output == f"error: cannot write to {source}: Read-only file system; nothing was changed\n"
    monkeypatch.undo()
    assert _snapshot(source) == before


def test_a_source_that_holds_nan_is_named_not_copied_on(source: Path, new_case: tuple[Path, Path, dict]) -> None:
    """An older add-case wrote NaN into the source: the next add refuses to write it again."""
    path, images, _ = new_case
    docs = json.loads((source / "Descriptions.json").read_text())
    docs[1]["Score"] = float("nan")
    (source / "Descriptions.json").write_text(json.dumps(docs))
    before = _snapshot(source)
    with pytest.raises(ValidationError, match=r"Descriptions.json:#1 \(MPX8001_synpic2\):Score: NaN is not valid JSON"):
        add_case(path, images, source)
    assert _snapshot(source) == before


def test_progress_names_both_steps(source: Path, new_case: tuple[Path, Path, dict]) -> None:
    path, images, _ = new_case
    steps: dict[str, list[int]] = {}

    @contextmanager
    def record(description: str, total: int) -> Iterator[Callable[[int], None]]:
        steps[description] = [total, 0]
        yield lambda n=1: steps[description].__setitem__(1, steps[description][1] + n)

    add_case(path, images, source, progress=record)
    assert steps == {"Checking images": [3, 3], "Copying images": [3, 3]}


def test_progress_shows_on_a_terminal_only(source: Path, new_case: tuple[Path, Path, dict], tmp_path: Path) -> None:
    import pty

    path, images, _ = new_case
    path2, images2 = _second_case(tmp_path)
    env = {**{k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")},
           "PYTHONPATH": str(ROOT), "TERM": "xterm-256color", "COLUMNS": "100"}
    leader, follower = pty.openpty()
    chunks = []
    try:
        proc = subprocess.Popen([sys.executable, "-m", "medpix_tui", *_args(path, images, source)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower, env=env)
        os.close(follower)
        chunks.append(read_until_closed(leader))
        out, _ = proc.communicate(timeout=PATIENCE)
    finally:
        os.close(leader)
    assert proc.returncode == 0 and out.decode().startswith("added case LAB0001")
    shown = b"".join(chunks).decode(errors="replace")
    assert "Checking images" in shown and "Copying images" in shown and "3/3" in shown
    piped = subprocess.run([sys.executable, "-m", "medpix_tui", *_args(path2, images2, source)],
                           capture_output=True, text=True, env=env, timeout=PATIENCE, check=False)
    assert piped.returncode == 0 and piped.stderr == ""


def test_a_file_system_without_locks_still_adds(source: Path, new_case: tuple[Path, Path, dict],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Some network mounts answer ENOLCK: the add goes on, guarded by the check that the JSON did not change."""
    path, images, _ = new_case

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    add_case(path, images, source)
    assert load_source(source).cases[-1]["U_id"] == "LAB0001" and _hidden(source) == []


def test_a_journal_that_names_no_plain_ids_is_refused(source: Path, new_case: tuple[Path, Path, dict]) -> None:
    """A journal is read to delete files: one naming ``../`` paths deletes nothing."""
    path, images, _ = new_case
    (source / JOURNAL_FILE).write_text(json.dumps({"pid": _dead_pid(), "case": "LAB0001", "images": ["../../x"]}))
    before = _snapshot(source)
    with pytest.raises(InputError, match=r"\.medpix-add\.journal: cannot read the record of an interrupted add-case "
                                         r"\(not a record\); remove it"):
        add_case(path, images, source)
    assert _snapshot(source) == before
