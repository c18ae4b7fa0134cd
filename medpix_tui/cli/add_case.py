"""``medpix-tui add-case``: grow a source folder with a lab's own case."""

from __future__ import annotations

import contextlib
import errno
import signal
import sys
from pathlib import Path

import click

from ..add_case import add_case
from ..progress import rich_progress
from .app import Terminated


@click.command("add-case")
@click.argument("case_json", metavar="CASE.json", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--images", "images_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder holding <image>.png for every image document.")
@click.option("--source", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Source folder to add to (Case_topic.json, Descriptions.json, images/).")
def add_case_cmd(case_json: Path, images_dir: Path, source: Path) -> None:
    """Add a new case, its image documents and its PNG files to a source folder.

    The case is checked as `bundle build` checks a source (schema, ids, joins, images
    that decode) and its ids must not exist yet. On any problem one error is printed and
    the folder is left unchanged, also on Ctrl-C or a closed terminal. One add-case runs on
    a folder at a time: another waits for it (30 s at most), and undoes what a killed one
    left. Run `medpix-tui bundle build` afterwards to include it.

    \b
    CASE.json holds one object, with documents shaped as in the release:
      {"case":   {"U_id": "LAB0001", "TAC": ["LAB0001_img1"], "MRI": [],
                  "Case":  {"Title": "...", "History": "...", "Findings": "..."},
                  "Topic": {"Title": "...", "Disease Discussion": "...", "ACR Code": "..."}},
       "images": [{"Type": "CT", "U_id": "LAB0001", "image": "LAB0001_img1",
                   "Description": {"ACR Codes": "...", "Age": "54", "Caption": "...",
                                   "Figure Part": null, "Modality": "CT w/contrast (IV)",
                                   "Plane": "Axial", "Sex": "female"},
                   "Location": "Gastrointestinal", "Location Category": "Abdomen"}]}
    The case object alone, with an "images" key holding the image documents, is accepted
    too. --images holds LAB0001_img1.png. "Location Category" is one of the five classes
    the model and eval know: Head, Thorax, Abdomen, Spine and Muscles, Reproductive and
    Urinary System.

    \b
    Example:
      medpix-tui add-case lab0001.json --images lab0001/ --source ~/medpix-lab
      medpix-tui bundle build --source ~/medpix-lab --force
    """
    try:
        # ends_process: once the case is in place a stop signal is ignored, not a failed exit with a traceback
        summary = add_case(case_json, images_dir, source, progress=rich_progress(), notify=_note, ends_process=True)
    except Terminated as exc:  # rolled back; the terminal may be gone, so the note may reach nobody
        with contextlib.suppress(OSError):
            click.echo(f"{'hung up' if exc.signum == signal.SIGHUP else 'terminated'}; nothing was changed",
                       err=True)
        sys.exit(128 + exc.signum)
    try:
        click.echo(f"added case {summary.uid} with {len(summary.images)} image(s) ({summary.ct} CT, "
                   f"{summary.mr} MR) to {summary.source}")
    except OSError as exc:  # a terminal closed after the add (its SIGHUP ignored): the case is added all the same
        if exc.errno != errno.EIO:
            raise


def _note(message: str) -> None:
    click.echo(message, err=True)


COMMANDS = [add_case_cmd]
