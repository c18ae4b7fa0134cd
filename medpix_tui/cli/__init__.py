"""The ``medpix-tui`` command line: a thin click layer over the library.

Each group of commands lives in its own module, imported only when one of its commands runs
(:data:`.app.COMMAND_MODULES`); heavy imports (torch, textual) happen inside commands, so a
command starts with no more than it needs.
"""

from __future__ import annotations

from .app import main

__all__ = ["main"]
