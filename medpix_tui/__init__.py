"""medpix-tui: the MedPix 2.0 dataset offline, as a library, a CLI and a terminal UI.

The library API lives in modules with one job each: :mod:`~medpix_tui.source` (read and
validate a release), :mod:`~medpix_tui.store` (the collections), :mod:`~medpix_tui.query`
(safe filters), :mod:`~medpix_tui.bundle` (build, verify, pack, open),
:mod:`~medpix_tui.export` and :mod:`~medpix_tui.sql`.
"""

__version__ = "0.1.0"
