"""The terminal UI in a browser: textual-serve, locked down.

textual-serve runs one app process per browser tab and relays its terminal over a websocket;
its page and JavaScript terminal ship in its wheel, so nothing is fetched from outside (our
page drops its one outside link, a font stylesheet). What it leaves open, this closes:

- an access token (checked on the page, the websocket and downloads) whenever the server
  listens beyond loopback, since a served app runs with the server's rights;
- at most ``max_sessions`` app processes; past that the page says the server is full;
- sessions without input for ``idle_s`` seconds end;
- websocket URLs are built from the request's own host, so a server bound to 0.0.0.0 works;
- a page of another site may not open the websocket (its Origin must be this server), and a
  server without a token answers only requests addressed to a loopback name (DNS rebinding);
- a terminal size from the browser is clamped to :data:`MAX_COLUMNS` x :data:`MAX_ROWS` (a
  10^12-column resize grew the app to 14 GB), and an app that does not quit when its session
  ends is killed after :data:`QUIT_GRACE_S`;
- a session whose app process ends (it quit, crashed or was killed) ends at once, the page told
  why, and its slot is freed (the tab froze, holding its slot, while the browser stayed);
- ``--host ::`` listens on IPv4 too (asyncio alone makes it IPv6-only), so every printed URL works.

Saves are the app's business: a served app delivers every save to the browser as a download
(:mod:`medpix_tui.tui.saving`) and writes nothing on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import shlex
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp_jinja2
import jinja2
from aiohttp import WSCloseCode, WSMsgType, web
from textual_serve.app_service import AppService
from textual_serve.server import Server

from ..errors import InputError
from ..render import counted
from . import SERVED_ENV

TEMPLATES = Path(__file__).parent / "templates"
TOKEN_COOKIE = "medpix_serve_token"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smh]?)")
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: The largest terminal a browser may ask for (a 4K screen at 6 px a cell is 640 columns).
MAX_COLUMNS, MAX_ROWS = 1000, 400
#: How long an app may take to quit when its session ends before it is killed.
QUIT_GRACE_S = 5.0
#: The same when the server stops (SIGTERM, ctrl+c): every session at once, then the server exits.
SHUTDOWN_GRACE_S = 1.0
#: How long a browser may take to answer the close of its websocket (aiohttp waits 10 s).
CLOSE_TIMEOUT_S = 1.0
#: One line per session start and end, on stderr (the start line with the URL is on stdout).
LOG = logging.getLogger("medpix_tui.serve")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has Linux kill the app process when the server dies, even by ``kill -9``
    (an orphaned app kept its bundle and memory); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import signal

    # the C library already loaded in this process: ctypes.util.find_library ran ldconfig, a process
    # of its own, at every session's start
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def arrange() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the server died before the line above: no signal will come
            os._exit(1)

    return arrange


def terminal_size(width: Any, height: Any) -> tuple[int, int]:
    """A browser's terminal size, as numbers within 1 x 1 to :data:`MAX_COLUMNS` x :data:`MAX_ROWS`."""
    return min(max(_int(width, 80), 1), MAX_COLUMNS), min(max(_int(height, 24), 1), MAX_ROWS)


class BoundedAppService(AppService):
    """textual-serve's app process, with a bounded terminal size, a stop that cannot hang, and a
    process that dies with the server."""

    async def _open_app_process(self, width: int = 80, height: int = 24) -> asyncio.subprocess.Process:
        """textual-serve's start of the app process, plus :func:`_die_with_parent`."""
        self._process = process = await asyncio.create_subprocess_shell(
            self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=self._build_environment(width=width, height=height),
            preexec_fn=_die_with_parent())
        assert process.stdin is not None
        self._stdin = process.stdin
        return process

    async def start(self, width: int, height: int) -> None:
        await super().start(*terminal_size(width, height))

    async def set_terminal_size(self, width: int, height: int) -> None:
        await super().set_terminal_size(*terminal_size(width, height))

    async def ended(self) -> int | None:
        """Wait until the app's output ends (it exited, however it did); its exit status where known."""
        task, process = self._task, self._process
        if task is not None:
            await asyncio.wait({task})
        if process is None:
            return None
        with contextlib.suppress(asyncio.TimeoutError):  # the exit status comes a moment after the output ends
            await asyncio.wait_for(process.wait(), QUIT_GRACE_S)
        return process.returncode

    async def stop(self, grace: float = QUIT_GRACE_S) -> None:
        """Ask the app to quit; kill it if it has not after ``grace`` seconds (textual-serve waits forever)."""
        task = self._task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(super().stop()), grace)
        except (asyncio.TimeoutError, ConnectionError):
            if self._process is not None and self._process.returncode is None:
                self._process.kill()
            await asyncio.wait({task}, timeout=QUIT_GRACE_S)
            self._task = None


def app_end_reason(returncode: int | None) -> str:
    """Why a session ended when its app did, in words for the page (a close reason: at most 123 bytes)."""
    if returncode is None:
        return "the app ended"
    if returncode == 0:
        return "the app quit"
    if returncode < 0:
        import signal

        with contextlib.suppress(ValueError):
            return f"the app was killed ({signal.Signals(-returncode).name})"
        return f"the app was killed (signal {-returncode})"
    return f"the app failed (exit status {returncode})"


def same_origin(request: web.Request) -> bool:
    """Whether a browser request comes from this server's own page (no Origin: not from a page)."""
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc.lower() == request.host.lower()


def loopback_host(request: web.Request) -> bool:
    """Whether the request names this machine (a rebinding page names its own domain)."""
    name = urlsplit(f"//{request.host}").hostname or ""
    return is_loopback(name)


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``30m`` or ``2h``."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match or float(match.group(1)) <= 0:
        raise InputError(f"not a duration: {text!r} (examples: 90s, 30m, 2h)")
    return float(match.group(1)) * _UNIT[match.group(2)]


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (what needs no token)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeConfig:
    """What ``medpix-tui serve`` was asked for, checked."""

    bundle: Path
    host: str = "127.0.0.1"
    port: int = 8000
    max_sessions: int = 8
    token: str | None = None
    idle_s: float = 1800.0

    @classmethod
    def make(cls, bundle: Path, *, host: str, port: int, max_sessions: int, token: str | None,
             idle: str) -> ServeConfig:
        """A config with a token generated where the host needs one and none was given."""
        if token is not None and len(token) < 8:
            raise InputError("--token must be at least 8 characters")
        if token is None and not is_loopback(host):
            token = secrets.token_urlsafe(24)
        return cls(bundle, host, port, max_sessions, token, parse_duration(idle))

    @property
    def url(self) -> str:
        """What a person on this machine opens (with the token where one is needed); ``--host ::``
        gets ``[::1]``, where :func:`listening_socket` takes IPv4 too."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return self.url_for(host)

    def url_for(self, host: str) -> str:
        """The URL through ``host`` (a name or an address), the token quoted for a URL."""
        host = f"[{host}]" if ":" in host else host
        query = f"/?token={quote(self.token, safe='')}" if self.token else "/"
        return f"http://{host}:{self.port}{query}"

    @property
    def lab_url(self) -> str | None:
        """What colleagues open when the server listens on every address: this machine's name."""
        return self.url_for(socket.gethostname()) if self.host in ("0.0.0.0", "::") else None


def check_port_free(host: str, port: int) -> None:
    """Fail with one line before anything starts when the address is taken."""
    listening_socket(host, port).close()


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound (a taken address is one line). ``::`` takes IPv4 too: given a
    host, asyncio sets IPV6_V6ONLY, and the printed 127.0.0.1 and host-name URLs were refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and ipaddress.ip_address(host.split("%")[0]).is_unspecified:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
    except (OSError, ValueError) as exc:
        sock.close()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise InputError(f"cannot listen on {where}: {reason}") from None
    return sock


class MedpixServer(Server):
    """textual-serve's server with a token, a session cap and an idle timeout."""

    def __init__(self, config: ServeConfig, *, command: str | None = None) -> None:
        command = command or (f"exec {shlex.quote(sys.executable)} -m medpix_tui "  # exec: the pid is the app's
                              f"--bundle {shlex.quote(str(config.bundle))}")
        super().__init__(command, host=config.host, port=config.port, title="MedPix 2.0",
                         templates_path=TEMPLATES)
        self.config = config
        self.sessions = 0
        self._started = 0
        #: The open sessions, ended all at once when the server stops.
        self._live: set[tuple[web.WebSocketResponse, BoundedAppService]] = set()

    def initialize_logging(self) -> None:
        """Warnings, and one line per session start and end (:data:`LOG`): the start line is printed
        by :meth:`on_startup`, not a banner per request; a malformed request (a plain GET of /ws, a
        9,000-character URL) is one line, not a traceback."""
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        logging.getLogger("aiohttp.server").addFilter(_one_line)
        LOG.setLevel(logging.INFO)

    def serve(self, debug: bool = False, *, sock: socket.socket | None = None) -> None:
        """textual-serve's loop on ``sock`` (by default :func:`listening_socket`), ending on SIGTERM or
        ctrl+c within about :data:`SHUTDOWN_GRACE_S` (textual-serve's took 15 s with sessions open:
        each waited on its websocket and its app)."""
        import signal

        sock = sock or listening_socket(self.host, self.port)
        self.debug = debug
        self.initialize_logging()
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_exit)
        web.run_app(self._make_app(), sock=sock, handle_signals=False, loop=loop,
                    print=lambda *args: None, shutdown_timeout=SHUTDOWN_GRACE_S + CLOSE_TIMEOUT_S)

    async def on_shutdown(self, app: web.Application) -> None:
        """End every open session at once: each app is asked to quit (killed after
        :data:`SHUTDOWN_GRACE_S`) and each browser told the server is going away."""
        async def end(websocket: web.WebSocketResponse, app_service: BoundedAppService) -> None:
            await app_service.stop(SHUTDOWN_GRACE_S)
            with contextlib.suppress(Exception):
                await websocket.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")

        await asyncio.gather(*(end(ws, service) for ws, service in list(self._live)), return_exceptions=True)

    async def on_startup(self, app: web.Application) -> None:
        print(f"medpix-tui serve: open {self.config.url}  (up to {counted(self.config.max_sessions, 'session')}; "
              "ctrl+c stops)", flush=True)
        if self.config.lab_url:
            print(f"  from other machines: {self.config.lab_url}", flush=True)

    async def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(self.templates_path), autoescape=True)
        app.add_routes([
            web.get("/", self.handle_index, name="index"),
            web.get("/ws", self.handle_websocket, name="websocket"),
            web.get("/download/{key}", self.handle_download, name="download"),
            web.static("/static", self.statics_path, name="static"),
        ])
        app.on_startup.append(self.on_startup)
        app.on_shutdown.append(self.on_shutdown)
        return app

    def _authorised(self, request: web.Request) -> bool:
        if self.config.token is None:
            return True
        given = request.query.get("token") or request.cookies.get(TOKEN_COOKIE) or ""
        return hmac.compare_digest(given.encode(), self.config.token.encode())

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The token on everything but the public static files (the page's script and fonts);
        this server's own pages only; without a token, loopback names only."""
        if self.config.token is None and not loopback_host(request):
            raise web.HTTPForbidden(text="this server answers only requests addressed to 127.0.0.1 or localhost")
        if not same_origin(request):
            raise web.HTTPForbidden(text="requests from other sites' pages are refused")
        if request.path.startswith("/static/") or self._authorised(request):
            return await handler(request)
        if request.path == "/":
            return self._message(request, "This server needs its access token: open the URL that "
                                          "'medpix-tui serve' printed.", status=403)
        raise web.HTTPForbidden(text="access token missing or wrong")

    def _message(self, request: web.Request, message: str, *, status: int) -> web.Response:
        return aiohttp_jinja2.render_template("message.html", request, {"title": "MedPix 2.0", "message": message},
                                              status=status)

    def _full(self) -> bool:
        return self.sessions >= self.config.max_sessions

    async def handle_index(self, request: web.Request) -> web.Response:
        if self._full():
            return self._message(request, f"The server is full ({counted(self.config.max_sessions, 'session')}). "
                                          "Try again when someone closes theirs.", status=503)
        scheme = "wss" if request.secure else "ws"
        context: dict[str, Any] = {
            "title": "MedPix 2.0",
            "static_url": "/static/",
            "websocket_url": f"{scheme}://{request.host}/ws",
            "font_size": min(max(_int(request.query.get("fontsize"), 16), 8), 32),
        }
        response = aiohttp_jinja2.render_template("app_index.html", request, context)
        if self.config.token and request.query.get("token"):
            response.set_cookie(TOKEN_COOKIE, self.config.token, httponly=True, samesite="Strict")
        return response

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        """textual-serve's handler, with :class:`BoundedAppService` and the session count."""
        if self._full():
            raise web.HTTPServiceUnavailable(text="the server is full")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise web.HTTPBadRequest(text="this address takes a websocket")
        self.sessions += 1
        self._started += 1
        number, began, held, why = self._started, time.monotonic(), True, ""
        closing: asyncio.Task[bool] | None = None
        LOG.info("session %d started for %s (%d of %d open)", number, request.remote or "?", self.sessions,
                 self.config.max_sessions)
        websocket = web.WebSocketResponse(heartbeat=15, timeout=CLOSE_TIMEOUT_S)  # a close waits that long
        app_service: BoundedAppService | None = None

        async def close() -> None:
            await websocket.close()

        async def end(reason: str, code: int = WSCloseCode.OK) -> None:
            """Close the websocket with ``reason``, which the page shows and the end line logs; the
            close is a task of its own, so that cancelling its caller does not cut the handshake."""
            nonlocal why, closing
            if not websocket.closed and closing is None:
                why = reason
                closing = asyncio.create_task(websocket.close(code=code, message=reason.encode()[:123]))
                with contextlib.suppress(Exception):
                    await asyncio.shield(closing)

        async def end_with_app(service: BoundedAppService) -> None:
            """End the session when its app ends: a killed app left the tab frozen, holding its slot."""
            returncode = await service.ended()
            await end(app_end_reason(returncode), WSCloseCode.OK if returncode == 0 else WSCloseCode.INTERNAL_ERROR)

        def release() -> None:
            """Free the slot as soon as the browser is gone: a reload at --max-sessions 1 said
            "server full" while the old app took its seconds to quit."""
            nonlocal held
            if held:
                held = False
                self.sessions -= 1
                LOG.info("session %d ended after %.0f s%s (%d of %d open)", number, time.monotonic() - began,
                         f": {why}" if why else "", self.sessions, self.config.max_sessions)

        try:
            await websocket.prepare(request)
            app_service = BoundedAppService(self.command, write_bytes=websocket.send_bytes,
                                            write_str=websocket.send_str, close=close,
                                            download_manager=self.download_manager, debug=self.debug)
            self._live.add((websocket, app_service))
            await app_service.start(*terminal_size(request.query.get("width"), request.query.get("height")))
            watcher = asyncio.create_task(end_with_app(app_service))
            try:
                await self._relay_messages(websocket, app_service, end)
            finally:
                watcher.cancel()
        except asyncio.CancelledError:
            await websocket.close()
        except Exception as error:  # noqa: BLE001 - one session's failure is logged; the server goes on
            LOG.warning("session %d failed: %s", number, error)
        finally:
            release()
            if closing is not None:  # the browser's answer to the close: at most CLOSE_TIMEOUT_S
                await asyncio.wait({closing})
            if app_service is not None:
                self._live.discard((websocket, app_service))
                await app_service.stop()
        return websocket

    async def _relay_messages(self, websocket: web.WebSocketResponse, app_service: AppService,
                                end: Callable[[str], Awaitable[None]]) -> None:
        """textual-serve's relay of browser messages, ending the session (``end``) after ``idle_s``
        without input."""
        last_input = time.monotonic()

        async def end_when_idle() -> None:
            while not websocket.closed:
                left = self.config.idle_s - (time.monotonic() - last_input)
                if left <= 0:
                    await end(f"no input for {duration_words(self.config.idle_s)}")
                    return
                await asyncio.sleep(min(left, 5.0))

        watchdog = asyncio.create_task(end_when_idle())
        try:
            async for message in websocket:
                if message.type != WSMsgType.TEXT:
                    continue
                try:
                    envelope = message.json()
                except ValueError:
                    continue  # not JSON: nothing textual-serve's page sends
                if not isinstance(envelope, list) or not envelope:
                    continue
                kind, data = envelope[0], envelope[1] if len(envelope) > 1 else None
                if kind == "stdin" and isinstance(data, str):
                    last_input = time.monotonic()
                    await app_service.send_bytes(data.encode("utf-8"))
                elif kind == "resize" and isinstance(data, dict):
                    await app_service.set_terminal_size(*terminal_size(data.get("width"), data.get("height")))
                elif kind == "ping":
                    await websocket.send_json(["pong", data])
                elif kind == "blur":
                    await app_service.blur()
                elif kind == "focus":
                    await app_service.focus()
        finally:
            watchdog.cancel()


def duration_words(seconds: float) -> str:
    """``1800`` as ``30 min``: how long, for a person."""
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _one_line(record: logging.LogRecord) -> bool:
    """Log a failed request as its error's one line (aiohttp attaches the traceback)."""
    if record.exc_info and record.exc_info[1] is not None:
        record.msg, record.args = " ".join(f"{record.getMessage()}: {record.exc_info[1]}".split())[:200], ()
        record.exc_info, record.exc_text = None, None
    return True


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def serve(config: ServeConfig) -> None:
    """Serve until interrupted. The bundle must already be resolved (built or unpacked)."""
    sock = listening_socket(config.host, config.port)
    os.environ[SERVED_ENV] = "1"
    MedpixServer(config).serve(sock=sock)
