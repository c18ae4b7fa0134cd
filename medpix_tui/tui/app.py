"""The Textual application: one bundle, three modes (search, SQL, statistics), global keys.

Screens reach shared state through the app: the bundle, a lock that serialises store access
from thread workers, the current search result (for case stepping, saves and statistics)
and the image widget class (the best graphics protocol, or half-blocks for snapshots).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any, Literal, cast

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.dom import DOMNode
from textual.screen import Screen
from textual.widget import Widget

from ..bundle import Bundle, open_bundle
from ..store import Store
from .first_page import FirstPage, load_first_page
from .searching import SearchResult

ImageRenderer = Literal["auto", "halfcell"]


def _search_screen() -> Screen[Any]:
    from .screens.search import SearchScreen

    return SearchScreen()


def _sql_screen() -> Screen[Any]:
    from .screens.sql import SqlScreen  # DuckDB loads only when the SQL screen opens

    return SqlScreen()


def _stats_screen() -> Screen[Any]:
    from .screens.stats import StatsScreen  # plotext loads only when statistics open

    return StatsScreen()


class MedpixApp(App[None]):
    """Search, read and analyse MedPix 2.0 from a terminal."""

    CSS_PATH = Path(__file__).parent / "app.tcss"  # absolute, so subclasses elsewhere still find it
    TITLE = "MedPix 2.0"
    MODES = {"search": _search_screen, "sql": _sql_screen, "stats": _stats_screen}
    DEFAULT_MODE = "search"
    BINDINGS = [
        Binding("f1", "help", "Help", tooltip="Keys and how to use this screen"),
        Binding("question_mark", "help", "Help", show=False),
        Binding("f2", "switch_mode('search')", "Search", tooltip="Search and read cases"),
        Binding("f3", "switch_mode('sql')", "SQL", tooltip="DuckDB over the bundle's Parquet"),
        Binding("f4", "switch_mode('stats')", "Stats", tooltip="Distributions of the bundle or the results"),
        Binding("ctrl+t", "toggle_dark", "Light/dark", show=False, tooltip="Switch between the dark and light theme"),
    ]

    def __init__(self, bundle: Bundle | str | Path, *, image_renderer: ImageRenderer = "auto",
                 history_path: Path | None = None, save_dir: Path | None = None,
                 first_page_dir: Path | None = None) -> None:
        super().__init__()
        self.bundle = bundle if isinstance(bundle, Bundle) else open_bundle(bundle)
        #: Where first pages are kept between starts (:mod:`.first_page`); None: neither read nor kept.
        self.first_page_dir = first_page_dir
        #: The first page kept by the last start, read here, before the event loop runs.
        self.first_page: FirstPage | None = None
        #: Why a kept first page was ignored (a crafted or damaged file in the cache), for a notice.
        self.first_page_problem: str | None = None
        if first_page_dir:
            self.first_page, self.first_page_problem = load_first_page(first_page_dir, self.bundle)
        self.image_renderer = image_renderer
        self.history_path = history_path
        self.save_dir = Path(save_dir) if save_dir else Path.cwd()
        #: One thread worker at a time reads the store (mongita is not thread-safe).
        self.store_lock = threading.Lock()
        #: The search screen's current result: what next/previous, saves and statistics use.
        self.result: SearchResult | None = None
        counts = self.bundle.manifest.get("counts", {})
        self.sub_title = f"{counts.get('Image_Descriptions', '?')} images · {counts.get('Clinical_Reports', '?')} cases"

    def on_mount(self) -> None:
        if self.first_page_problem:
            self.notify(f"Ignored the kept first page ({self.first_page_problem})", severity="warning", timeout=6)

    @property
    def store(self) -> Store:
        return self.bundle.store

    @property
    def image_class(self) -> type[Widget]:
        """The textual-image widget: auto-detected graphics, or half-blocks when forced."""
        from textual_image.widget import HalfcellImage, Image

        return HalfcellImage if self.image_renderer == "halfcell" else Image

    @property
    def has_model(self) -> bool:
        return bool(self.bundle.manifest.get("model"))

    def settle_memory(self) -> None:
        """Exempt what startup loaded (the store's documents, the first widgets) from garbage collection.

        They live as long as the app; without this every full collection walks them again.
        """
        gc.collect()
        gc.freeze()

    def action_help(self) -> None:
        """Show the keys of the current screen and a short guide."""
        from .screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Hide the key of the mode on screen (f2 on Search): the other keys then fit in 80 columns."""
        return not (action == "switch_mode" and parameters[:1] == (self.current_mode,))

    def action_toggle_dark(self) -> None:
        self.theme = "textual-light" if self.current_theme.dark else "textual-dark"

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Textual's commands, then every action the screen and the app bind, so each is in the palette."""
        yield from super().get_system_commands(screen)
        seen: set[str] = set()
        for active in screen.active_bindings.values():
            binding = active.binding
            if not binding.description or binding.action in seen or not active.enabled:
                continue
            if not declared_here(active.node, binding):
                continue  # inherited keys (focus, scrolling, editing) are not this app's actions
            seen.add(binding.action)
            key = self.get_key_display(binding)
            yield SystemCommand(binding.description, f"{binding.tooltip or binding.description} (key: {key})",
                                partial(self.run_action, binding.action, active.node))


def declared_here(node: DOMNode, binding: Binding) -> bool:
    """Whether a screen or the app itself (not a base class or a widget) declares ``binding``."""
    if not isinstance(node, (Screen, App)):
        return False
    return any(isinstance(b, Binding) and b.action == binding.action for b in type(node).BINDINGS)


def medpix(node: DOMNode) -> MedpixApp:
    """``node.app``, typed as the MedpixApp it is (Textual types it as a plain App)."""
    return cast(MedpixApp, node.app)
