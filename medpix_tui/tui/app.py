"""The Textual application: one bundle, three modes (search, SQL, statistics), global keys.

Screens reach shared state through the app: the bundle, a lock that serialises store access
from thread workers, the current search result (for case stepping, saves and statistics)
and the image widget class (the best graphics protocol, or half-blocks for snapshots).
"""

from __future__ import annotations

import gc
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, cast

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.dom import DOMNode
from textual.screen import Screen
from textual.widget import Widget

from ..bundle import Bundle, open_bundle
from ..session import SearchResult
from ..store import Store
from .first_page import FirstPage, load_first_page

ImageRenderer = Literal["auto", "halfcell"]
#: Below this many columns side panels (the search facets, the SQL sidebar) start hidden, leaving the width.
NARROW = 100


def _search_screen() -> Screen[Any]:
    from .screens.search import SearchScreen

    return SearchScreen()


def _sql_screen() -> Screen[Any]:
    from .screens.sql import SqlScreen  # DuckDB loads only when the SQL screen opens

    return SqlScreen()


def _stats_screen() -> Screen[Any]:
    from .screens.stats import StatsScreen  # plotext loads only when statistics open

    return StatsScreen()


def _quality_screen() -> Screen[Any]:
    from .screens.quality import QualityScreen

    return QualityScreen()


def _quiz_screen() -> Screen[Any]:
    from .screens.quiz import QuizScreen

    return QuizScreen()


@dataclass(frozen=True)
class Mode:
    """One mode of the app: its screen (imported when first opened) and the key that switches to it."""

    name: str
    key: str
    title: str
    tooltip: str
    screen: Callable[[], Screen[Any]]
    #: Whether the key is listed in the footer (all are in the help and the command palette).
    in_footer: bool = True
    #: Whether the key wins over the focused widget's own (the SQL editor's TextArea binds F6 and F7).
    priority: bool = True

    @property
    def binding(self) -> Binding:
        return Binding(self.key, f"switch_mode('{self.name}')", self.title, show=self.in_footer, tooltip=self.tooltip,
                       priority=self.priority)


#: The modes, in the order of their keys (F2 to F6).
APP_MODES = (
    Mode("search", "f2", "Search", "Search and read cases", _search_screen),
    Mode("sql", "f3", "SQL", "DuckDB over the bundle's Parquet", _sql_screen),
    Mode("stats", "f4", "Stats", "Distributions of the bundle or the results", _stats_screen),
    Mode("quality", "f5", "Quality", "Quality report: leakage across splits, duplicates, label conflicts, vocabulary",
         _quality_screen, in_footer=False, priority=False),  # F5 also runs the SQL screen's query
    Mode("quiz", "f6", "Quiz", "Quiz: guess the diagnosis of cases from their images and history", _quiz_screen,
         in_footer=False),
)


class MedpixApp(App[None]):
    """Search, read and analyse MedPix 2.0 from a terminal."""

    CSS_PATH = Path(__file__).parent / "app.tcss"  # absolute, so subclasses elsewhere still find it
    TITLE = "MedPix 2.0"
    MODES = {mode.name: mode.screen for mode in APP_MODES}
    DEFAULT_MODE = "search"
    BINDINGS = [
        Binding("f1", "help", "Help", tooltip="Keys and how to use this screen", priority=True),
        Binding("question_mark", "help", "Help", show=False),
        *(mode.binding for mode in APP_MODES),
        Binding("f7", "similar_cases", "Similar cases", show=False, priority=True,
                tooltip="Cases like the open one, or like a history you type (sentence embeddings)"),
        Binding("ctrl+t", "toggle_dark", "Light/dark", show=False, tooltip="Switch between the dark and light theme"),
        Binding("ctrl+q", "quit", "Quit", priority=True, tooltip="Quit medpix-tui (q too, when no box has the keys)"),
        Binding("q", "quit_key", "Quit", show=False, tooltip="Quit (typed into a box, q is just a letter)"),
    ]

    def __init__(self, bundle: Bundle | str | Path, *, image_renderer: ImageRenderer = "auto",
                 history_path: Path | None = None, save_dir: Path | None = None,
                 first_page_dir: Path | None = None, crash_dir: Path | None = None,
                 state_dir: Path | None = None, preload_model: bool = True) -> None:
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
        #: Where the last search on this bundle is remembered between starts (:mod:`.remember`); None: not.
        self.state_dir = state_dir
        #: Load the bundle's model in a worker once the first results are drawn (tests turn it off).
        self.preload_model = preload_model
        #: Where a crash's traceback is written (the terminal gets one line naming the file).
        self.crash_dir = crash_dir
        #: The crash log of the last unhandled exception, once written.
        self.crash_log: Path | None = None
        self.image_renderer = image_renderer
        self.history_path = history_path
        self.save_dir = Path(save_dir) if save_dir else Path.cwd()
        #: One thread worker at a time reads the store (mongita is not thread-safe).
        self.store_lock = threading.Lock()
        #: The search screen's current result: what next/previous, saves and statistics use.
        self.result: SearchResult | None = None
        #: The sentence model of similar cases, loaded on first use (:mod:`.screens.similar`).
        self.sentence_encoder: Any = None
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

    def _handle_exception(self, error: Exception) -> None:
        """Exit with status 1 after an unhandled exception; the traceback goes to a log file.

        The terminal is restored by Textual as usual; instead of a screenful of traceback the
        user reads one line naming the file that holds it.
        """
        if self.crash_dir is None:  # tests and embedders: Textual's own report
            super()._handle_exception(error)
            return
        self._return_code = 1
        if self._exception is None:
            self._exception = error
            self._exception_event.set()
        text = "".join(traceback.format_exception(error))
        try:
            self.crash_dir.mkdir(parents=True, exist_ok=True)
            log = self.crash_dir / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{threading.get_native_id()}.log"
            log.write_text(text, encoding="utf-8")
            self.crash_log = log
            line = f"medpix-tui stopped on an internal error ({type(error).__name__}); the traceback is in {log}"
        except OSError as exc:
            line = f"medpix-tui stopped on an internal error ({type(error).__name__}: {error}); no log: {exc}"
        self._exit_renderables.append(line)
        self._close_messages_no_wait()

    def action_help(self) -> None:
        """Show the keys of the current screen and a short guide."""
        from .screens.help import HelpScreen

        if isinstance(self.screen, HelpScreen):  # F1 wins over every screen's keys, so it closes help too
            self.screen.action_close()
        else:
            self.push_screen(HelpScreen(self.screen))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Hide the key of the mode on screen (f2 on Search): the other keys then fit in 80 columns.

        Similar cases are off while a quiz card hides its answer (the list would name it)."""
        if action == "similar_cases" and getattr(self.screen, "hides_answer", False):
            return False
        return not (action == "switch_mode" and parameters[:1] == (self.current_mode,))

    async def action_switch_mode(self, mode: str) -> None:
        """Close the dialogs on screen (help, save, confirm: as Escape would) and switch.

        The mode keys win over a dialog's; a dialog left on the old mode's stack was still
        open, behind, when the user came back to that mode."""
        from textual.screen import ModalScreen

        while isinstance(self.screen, ModalScreen) and len(self.screen_stack) > 1:
            await self.screen.dismiss(None)
        await super().action_switch_mode(mode)

    def action_similar_cases(self) -> None:
        """Cases like the open case, or like a typed history."""
        from .screens.similar import similar_cases_action

        if not getattr(self.screen, "hides_answer", False):
            similar_cases_action(self)

    async def action_quit(self) -> None:
        """Remember the search (per bundle) and quit."""
        self.remember()
        await super().action_quit()

    def remember(self) -> None:
        """Keep the search screen's query and position for the next start."""
        from .screens.search import SearchScreen

        for stack in self._screen_stacks.values():
            for screen in stack:
                if isinstance(screen, SearchScreen):
                    screen.remember()

    async def action_quit_key(self) -> None:
        """``q`` quits like ctrl+q, but not from a dialog (where it may be meant for the dialog)."""
        from textual.screen import ModalScreen

        if not isinstance(self.screen, ModalScreen):
            await self.action_quit()

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


class GuardedScreen(Screen[None]):
    """A screen that knows when it is leaving: answers arriving after that are dropped.

    Escape can reach a screen before its mount finished, and a worker's answer can arrive
    after the screen was dismissed; drawing into a screen in either state is what crashed
    the app when browsing fast. ``dismiss`` waits for the mount, and :func:`alive` says
    whether an answer still has somewhere to go.
    """

    def __init__(self) -> None:
        super().__init__()
        self.leaving = False
        self._ready = False
        self._dismiss_when_ready = False

    def on_mount(self) -> None:
        self._ready = True
        if self._dismiss_when_ready:
            self.call_after_refresh(self._leave)

    def _leave(self) -> None:
        self.dismiss()  # not awaited: a screen cannot await its own dismissal

    def dismiss(self, result: Any = None) -> Any:
        if self.leaving:
            return None
        if not self._ready:  # mid-mount: leave once mounted
            self._dismiss_when_ready = True
            return None
        if self.app.screen is not self:  # only the top screen leaves (a pop would take another)
            return None
        self.leaving = True
        self.workers.cancel_node(self)
        return super().dismiss(result)

    def on_unmount(self) -> None:
        self.leaving = True
        self.workers.cancel_node(self)

    #: Actions that may run before the screen is mounted (they wait for it) or while it leaves.
    LEAVE_ACTIONS = frozenset({"back", "close"})

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """No key acts on a screen that is not mounted yet or already leaving, but the key that leaves."""
        if action in self.LEAVE_ACTIONS:
            return True
        return self._ready and not self.leaving


def takes_text(screen: Screen[Any]) -> bool:
    """Whether the focused widget takes what is typed (a box or an editor): a key that moves the
    focus to a box is then the box's own (ctrl+f deletes a word in an Input, ctrl+e ends a line)."""
    from textual.widgets import Input, TextArea

    return isinstance(screen.focused, (Input, TextArea))


def focus_now(widget: Widget) -> None:
    """Focus ``widget`` before the next key is handed out: ``Widget.focus`` waits for the message
    queue, so "ctrl+f glioma" typed at speed gave its letters to the results table (c copied, q quit).
    Call it from a priority binding's action, which runs before the next key is dispatched."""
    widget.screen.set_focus(widget)


def alive(node: DOMNode) -> bool:
    """Whether ``node`` is still on a screen that has not been dismissed (so drawing into it is safe)."""
    if not (node.is_attached and node.is_running):
        return False
    try:
        screen = node if isinstance(node, Screen) else node.screen
    except Exception:  # noqa: BLE001 - no screen any more
        return False
    return not getattr(screen, "leaving", False) and screen.is_attached


def copy_id(node: DOMNode, text: str) -> None:
    """Put an id on the terminal's clipboard (OSC 52, which reaches the local clipboard over SSH) and say so."""
    node.app.copy_to_clipboard(text)
    node.app.notify(f"Copied {text}", title="Clipboard", timeout=3)


def medpix(node: DOMNode) -> MedpixApp:
    """``node.app``, typed as the MedpixApp it is (Textual types it as a plain App)."""
    return cast(MedpixApp, node.app)
