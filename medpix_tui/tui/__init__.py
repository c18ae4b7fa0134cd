"""The terminal UI (Textual) over a MedPix bundle.

``MedpixApp`` is imported on first use, so importing a submodule that needs no Textual
(:mod:`.first_page`) does not load Textual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import MedpixApp

__all__ = ["MedpixApp"]


def __getattr__(name: str) -> Any:
    if name == "MedpixApp":
        from .app import MedpixApp

        return MedpixApp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
