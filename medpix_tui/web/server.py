"""The terminal UI in a browser: textual-serve, locked down.

textual-serve runs one app process per browser tab and relays its terminal over a websocket;
its page and JavaScript terminal ship in its wheel, so nothing is fetched from outside (our
page drops its one outside link, a font stylesheet). What it leaves open, this closes:

- an access token (checked on the page, the websocket and downloads) whenever the server
  listens beyond loopback, since a served app runs with the server's rights;
- at most ``max_sessions`` app processes; past that the page says the server is full;
- sessions without input for ``idle_s`` seconds end;
- websocket URLs are built from the request's own host, so a server bound to 0.0.0.0 works.

Saves are the app's business: a served app delivers every save to the browser as a download
(:mod:`medpix_tui.tui.saving`) and writes nothing on the server.
"""

from __future__ import annotations

import asyncio
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

import aiohttp_jinja2
import jinja2
from aiohttp import WSMsgType, web
from textual_serve.app_service import AppService
from textual_serve.server import Server

from ..errors import InputError
from . import SERVED_ENV

TEMPLATES = Path(__file__).parent / "templates"
TOKEN_COOKIE = "medpix_serve_token"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smh]?)")
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
        """What a person opens (with the token where one is needed)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        host = f"[{host}]" if ":" in host else host
        query = f"/?token={self.token}" if self.token else "/"
        return f"http://{host}:{self.port}{query}"


def check_port_free(host: str, port: int) -> None:
    """Fail with one line before anything starts when the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


class MedpixServer(Server):
    """textual-serve's server with a token, a session cap and an idle timeout."""

    def __init__(self, config: ServeConfig, *, command: str | None = None) -> None:
        command = command or (f"{shlex.quote(sys.executable)} -m medpix_tui "
                              f"--bundle {shlex.quote(str(config.bundle))}")
        super().__init__(command, host=config.host, port=config.port, title="MedPix 2.0",
                         templates_path=TEMPLATES)
        self.config = config
        self.sessions = 0

    def initialize_logging(self) -> None:
        """Warnings only: the start line is printed by :meth:`on_startup`, not a banner per request."""
        logging.basicConfig(level=logging.WARNING, format="%(message)s")

    async def on_startup(self, app: web.Application) -> None:
        print(f"medpix-tui serve: open {self.config.url}  (up to {self.config.max_sessions} sessions; "
              "ctrl+c stops)", flush=True)

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
        return app

    def _authorised(self, request: web.Request) -> bool:
        if self.config.token is None:
            return True
        given = request.query.get("token") or request.cookies.get(TOKEN_COOKIE) or ""
        return hmac.compare_digest(given.encode(), self.config.token.encode())

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The token on everything but the public static files (the page's script and fonts)."""
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
            return self._message(request, f"The server is full ({self.config.max_sessions} sessions). "
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
        if self._full():
            raise web.HTTPServiceUnavailable(text="the server is full")
        self.sessions += 1
        try:
            return await super().handle_websocket(request)
        finally:
            self.sessions -= 1

    async def _process_messages(self, websocket: web.WebSocketResponse, app_service: AppService) -> None:
        """textual-serve's relay of browser messages, ending the session after ``idle_s`` without input."""
        last_input = time.monotonic()

        async def end_when_idle() -> None:
            while not websocket.closed:
                left = self.config.idle_s - (time.monotonic() - last_input)
                if left <= 0:
                    await websocket.close(message=b"idle")
                    return
                await asyncio.sleep(min(left, 5.0))

        watchdog = asyncio.create_task(end_when_idle())
        try:
            async for message in websocket:
                if message.type != WSMsgType.TEXT:
                    continue
                envelope = message.json()
                if not isinstance(envelope, list) or not envelope:
                    continue
                kind, data = envelope[0], envelope[1] if len(envelope) > 1 else None
                if kind == "stdin" and isinstance(data, str):
                    last_input = time.monotonic()
                    await app_service.send_bytes(data.encode("utf-8"))
                elif kind == "resize" and isinstance(data, dict):
                    await app_service.set_terminal_size(_int(data.get("width"), 80), _int(data.get("height"), 24))
                elif kind == "ping":
                    await websocket.send_json(["pong", data])
                elif kind == "blur":
                    await app_service.blur()
                elif kind == "focus":
                    await app_service.focus()
        finally:
            watchdog.cancel()


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def serve(config: ServeConfig) -> None:
    """Serve until interrupted. The bundle must already be resolved (built or unpacked)."""
    check_port_free(config.host, config.port)
    os.environ[SERVED_ENV] = "1"
    MedpixServer(config).serve()
