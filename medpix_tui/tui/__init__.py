"""The terminal UI (Textual) over a MedPix bundle."""

from __future__ import annotations

from .app import MedpixApp

__all__ = ["MedpixApp"]
