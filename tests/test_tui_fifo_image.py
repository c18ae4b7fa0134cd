"""A FIFO planted under an image's name in a bundle folder: the image view says it cannot read it, never blocks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from tui_support import SIZE, make_app, settle, wait_for

from medpix_tui.bundle import open_bundle
from medpix_tui.tui.screens.case import CaseScreen
from medpix_tui.tui.widgets.image_view import ImageView

pytestmark = pytest.mark.asyncio


async def test_a_fifo_image_is_a_placeholder_not_a_hang(real_bundle_path: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(real_bundle_path.resolve(), tmp_path / "bundle"))
    bundle = open_bundle(copy)
    first = sorted(bundle.manifest["files"])
    name = next(rel for rel in first if rel.startswith("images/")).removeprefix("images/").removesuffix(".png")
    (copy / "images" / f"{name}.png").unlink()
    os.mkfifo(copy / "images" / f"{name}.png")
    app = make_app(bundle)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.push_screen(CaseScreen([name], 0))
        await wait_for(pilot, lambda: isinstance(app.screen, CaseScreen) and bool(app.screen.query(ImageView)))
        view = app.screen.query_one(ImageView)
        await wait_for(pilot, lambda: view.has_class("-failed"), timeout=60)
        assert "Cannot read" in str(view.query_one("#placeholder").render())
