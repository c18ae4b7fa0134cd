"""``medpix-tui`` with no command: open the terminal UI on a bundle."""

from __future__ import annotations

from pathlib import Path

import click

#: The UI is the group's default action, not a subcommand.
COMMANDS: list[click.Command] = []


def history_path() -> Path:
    """Where the SQL screen keeps past queries between sessions."""
    import platformdirs

    return Path(platformdirs.user_data_dir("medpix-tui")) / "sql_history.json"


def run_tui(bundle_path: str | None) -> None:
    """Resolve (building on first use) the bundle with a progress bar, then run the app."""
    from ..bundle import resolve_bundle
    from ..progress import rich_progress

    bundle = resolve_bundle(bundle_path, progress=rich_progress())
    # textual-image asks the terminal about graphics support at import; it must happen
    # before Textual takes over the terminal (textual-image's README).
    import textual_image.renderable  # noqa: F401

    from ..tui.app import MedpixApp

    MedpixApp(bundle, history_path=history_path()).run()
