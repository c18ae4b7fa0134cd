"""The ``medpix-tui`` command line: a thin click layer over the library.

Each group of commands lives in its own module and registers itself here; heavy imports
(torch, textual) happen inside commands so ``--help`` stays fast.
"""

from __future__ import annotations

from .app import main

__all__ = ["main"]
