"""``add-case`` against what a black-box tester found: a signal between a rename and its record, an undo
that fails half way, lock files of other users or planted as links, temporaries planted as links, a
source grown past the read limit, and a late signal after the case was added."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import test_add_case
import test_add_case_hostile
from click.testing import CliRunner
from test_add_case import _snapshot
from test_add_case_hostile import PATIENCE, ROOT, _args, _hidden, _main

from medpix_tui.add_case import JOURNAL_FILE, LOCK_FILE, add_case
from medpix_tui.errors import InputError, ValidationError
from medpix_tui.source import MAX_JSON_BYTES, MAX_TEXT, load_source

source, new_case = test_add_case.source, test_add_case.new_case


def _signal_after_rename(monkeypatch: pytest.MonkeyPatch, name: str, signum: int) -> None:
    """``signum`` comes the moment the rename to ``name`` is done, before the add can note it."""
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        real_replace(src, dst)
        if Path(dst).name == name:
            signal.raise_signal(signum)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("name", ["LAB0001_img2.png", "Descriptions.json"])
def test_a_signal_right_after_a_rename_is_still_undone(source: Path, new_case: tuple[Path, Path, dict],
                                                       monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The file just renamed into place was not yet recorded: the undo left it (an image no document
    lists, or the new Descriptions.json) and deleted the journal, so no later add could repair it."""
    path, images, _ = new_case
    before = _snapshot(source)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _signal_after_rename(monkeypatch, name, signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        add_case(path, images, source)
    monkeypatch.undo()
    assert _snapshot(source) == before


def test_a_signal_as_case_topic_is_renamed_comes_too_late_to_undo(source: Path, new_case: tuple[Path, Path, dict],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Once Case_topic.json holds the case the add is done: undoing it then put the old Descriptions.json
    back and removed the PNGs under a Case_topic.json that still listed them."""
    path, images, payload = new_case
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _signal_after_rename(monkeypatch, "Case_topic.json", signal.SIGINT)
    try:
        summary = add_case(path, images, source)
    except KeyboardInterrupt:  # escaping, it would stop the whole test run
        pytest.fail("the signal that came after the last rename undid the add")
    monkeypatch.undo()
    assert summary.uid == "LAB0001"
    data = load_source(source)  # the full ingest check, images decoded
    assert data.cases[-1] == payload["case"] and data.images[-3:] == payload["images"]
    assert _hidden(source) == []


def test_the_command_reports_an_add_that_a_late_sigterm_met(source: Path, new_case: tuple[Path, Path, dict],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path, images, _ = new_case
    _signal_after_rename(monkeypatch, "Case_topic.json", signal.SIGTERM)
    result = CliRunner().invoke(_main(), _args(path, images, source))
    monkeypatch.undo()
    assert result.exit_code == 0, result.output
    assert result.output.startswith("added case LAB0001")
    assert load_source(source).cases[-1]["U_id"] == "LAB0001" and _hidden(source) == []


#: Runs the CLI, sending itself argv[1] (a signal name) the moment its add has returned: the case is in
#: place, the line not yet printed.
LATE = r"""
import os, signal, sys
import medpix_tui.add_case as ac
signum = getattr(signal, sys.argv[1])
real = ac._add_locked
def added(*args, **kwargs):
    summary = real(*args, **kwargs)
    os.kill(os.getpid(), signum)
    return summary
ac._add_locked = added
from medpix_tui.cli import main
main(sys.argv[2:], prog_name="medpix-tui")
"""


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_after_the_add_exits_quietly_as_done(source: Path, new_case: tuple[Path, Path, dict],
                                                      tmp_path: Path, name: str) -> None:
    """It printed "interrupted" or a traceback in an exit handler and exited 130 or -15, the case added."""
    path, images, _ = new_case
    proc = subprocess.run([sys.executable, "-c", LATE, name, *_args(path, images, source)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=PATIENCE, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    assert proc.stdout.startswith("added case LAB0001")
    assert load_source(source).cases[-1]["U_id"] == "LAB0001" and _hidden(source) == []


def test_an_undo_that_cannot_remove_an_image_keeps_the_journal(source: Path, new_case: tuple[Path, Path, dict],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The undo said nothing of an image it could not remove, and deleted the journal: the retry then
    refused the image as left by somebody."""
    path, images, payload = new_case
    real_replace, real_unlink = os.replace, Path.unlink

    def replace(src: Any, dst: Any) -> None:
        if Path(dst).name == "Case_topic.json":
            raise OSError(errno.EIO, "Input/output error")
        real_replace(src, dst)

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self.name == "LAB0001_img1.png":
            raise OSError(errno.EIO, "Input/output error")
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(InputError, match=r"Input/output error; undoing the add failed too, and the next add-case "
                                         "on this folder undoes the rest$"):
        add_case(path, images, source)
    monkeypatch.undo()
    assert (source / JOURNAL_FILE).exists()
    heard: list[str] = []
    add_case(path, images, source, notify=heard.append)
    assert heard == [f"note: undid an interrupted add-case of LAB0001 (pid {os.getpid()}) in {source}"]
    assert load_source(source).images[-3:] == payload["images"] and _hidden(source) == []


def _refuse_writing(monkeypatch: pytest.MonkeyPatch, path: Path, also_reading: bool = False) -> None:
    """Open ``path`` as a user that may not write it (or, ``also_reading``, not read it either) would."""
    real_open = os.open

    def open_(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        refused = also_reading or flags & (os.O_WRONLY | os.O_RDWR)
        if str(file) == str(path) and os.path.lexists(path) and refused and not flags & os.O_EXCL:  # EEXIST comes first
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)


def test_another_users_lock_file_is_locked_read_only(source: Path, new_case: tuple[Path, Path, dict],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """In a group's shared folder the lock file of a killed add of another user (mode 0644) refused every
    later add with "cannot write to SRC: Permission denied"."""
    path, images, _ = new_case
    (source / LOCK_FILE).write_text("4242\n")
    _refuse_writing(monkeypatch, source / LOCK_FILE)
    add_case(path, images, source)
    monkeypatch.undo()
    assert load_source(source).cases[-1]["U_id"] == "LAB0001" and _hidden(source) == []


def test_a_lock_file_nobody_else_may_read_names_its_owner(source: Path, new_case: tuple[Path, Path, dict],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path, images, _ = new_case
    (source / LOCK_FILE).write_text("4242\n")
    before = _snapshot(source)
    _refuse_writing(monkeypatch, source / LOCK_FILE, also_reading=True)
    with pytest.raises(InputError, match=rf"^cannot open the lock file {source / LOCK_FILE}: Permission denied "
                                         r"\(it belongs to user [^)]*, who alone may read it\); if no add-case is "
                                         f"running on {source}, remove it and run add-case again$"):
        add_case(path, images, source)
    monkeypatch.undo()
    assert _snapshot(source) == before


def test_a_new_lock_file_is_readable_by_all_who_may_write_the_folder(source: Path, new_case: tuple[Path, Path, dict],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """With umask 077 it was 0600: another member of the folder's group could not even lock it read-only."""
    path, images, _ = new_case
    modes = []
    real_flock = fcntl.flock

    def flock(fd: int, operation: int) -> None:
        modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock)
    mask = os.umask(0o077)
    try:
        add_case(path, images, source)
    finally:
        os.umask(mask)
    assert modes and all(mode & 0o444 == 0o444 for mode in modes), [oct(m) for m in modes]


@pytest.mark.parametrize("kind", ["link to a file", "dangling link", "fifo"])
def test_a_lock_file_that_is_no_file_is_refused(source: Path, new_case: tuple[Path, Path, dict], tmp_path: Path,
                                                kind: str) -> None:
    """The lock file was opened through a link: the file it named was overwritten with a pid (or made)."""
    path, images, _ = new_case
    victim = tmp_path / "victim.txt"
    lock = source / LOCK_FILE
    if kind == "link to a file":
        victim.write_text("precious")
        lock.symlink_to(victim)
    elif kind == "dangling link":
        lock.symlink_to(victim)
    else:
        os.mkfifo(lock)
    result = CliRunner().invoke(_main(), _args(path, images, source))
    assert result.exit_code == 2, result.output
    what = "not a regular file" if kind == "fifo" else "a symbolic link"
    assert result.output.startswith(f"error: refusing to use {lock}: it is {what}")
    assert len(result.output.splitlines()) == 1
    assert (victim.read_text() == "precious") if kind == "link to a file" else not victim.exists()
    assert [c["U_id"] for c in load_source(source).cases] == ["MPX8001"]


@pytest.mark.parametrize("planted", ["Case_topic.json", "Descriptions.json", "images/LAB0001_img2.png",
                                     JOURNAL_FILE])
def test_a_link_planted_under_a_temporarys_name_is_not_followed(source: Path, new_case: tuple[Path, Path, dict],
                                                                tmp_path: Path, planted: str) -> None:
    """The temporaries' names are known (``.NAME.adding-PID``): a link there had its target overwritten."""
    path, images, _ = new_case
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    where = source / planted
    (where.parent / f".{where.name}.adding-{os.getpid()}").symlink_to(victim)
    add_case(path, images, source)
    assert victim.read_text() == "precious"
    assert load_source(source).cases[-1]["U_id"] == "LAB0001" and _hidden(source) == []


def test_a_journal_that_is_a_link_is_refused(source: Path, new_case: tuple[Path, Path, dict], tmp_path: Path) -> None:
    """A journal says which images to delete: one pointing elsewhere is somebody's file, never read."""
    path, images, _ = new_case
    record = tmp_path / "record.json"
    record.write_text(json.dumps({"pid": test_add_case_hostile._dead_pid(), "case": "LAB0001", "images": []}))
    (source / JOURNAL_FILE).symlink_to(record)
    before = _snapshot(source)
    with pytest.raises(InputError, match=r"\.medpix-add\.journal: a symbolic link, not the record of an interrupted "
                                         "add-case; remove it"):
        add_case(path, images, source)
    assert _snapshot(source) == before and (source / JOURNAL_FILE).is_symlink()


def test_a_case_that_would_outgrow_the_read_limit_is_refused(source: Path, new_case: tuple[Path, Path, dict]) -> None:
    """Written with its non-ASCII text escaped (\\u00e9, as the release's files are), a case file of 8 MB
    made a Case_topic.json over 16 MiB, after which every add and build refused the source."""
    path, images, payload = new_case
    text = "é" * (MAX_TEXT - 1)
    payload["case"]["Case"].update(History=text, Findings=text)
    payload["case"]["Topic"].update({"Disease Discussion": text})
    path.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
    assert path.stat().st_size < MAX_JSON_BYTES
    before = _snapshot(source)
    result = CliRunner().invoke(_main(), _args(path, images, source))
    assert result.exit_code == 2, result.output[-300:]
    line = result.output.strip()
    assert len(result.output.splitlines()) == 1
    assert line.startswith(f"error: {source / 'Case_topic.json'} would grow to ")
    assert line.endswith(f"bytes with this case, over the limit of {MAX_JSON_BYTES} bytes that add-case and bundle "
                         "build read; nothing was changed")
    assert _snapshot(source) == before


def test_two_image_ids_of_the_new_case_differing_in_letter_case_are_refused(source: Path,
                                                                           new_case: tuple[Path, Path, dict]) -> None:
    path, images, payload = new_case
    payload["case"]["TAC"][1] = "lab0001_IMG1"
    payload["images"][1]["image"] = "lab0001_IMG1"
    (images / "LAB0001_img2.png").rename(images / "lab0001_IMG1.png")
    path.write_text(json.dumps(payload))
    before = _snapshot(source)
    with pytest.raises(ValidationError, match=r"images:#1 \(lab0001_IMG1\):image: differs from the image "
                                              r"LAB0001_img1 of this case only in letter case \(their PNG files "
                                              "would be one file on a case-insensitive file system"):
        add_case(path, images, source)
    assert _snapshot(source) == before
