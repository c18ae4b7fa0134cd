"""``serve``: the terminal UI in a browser, for people without a terminal."""

from __future__ import annotations

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback requires the access token.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True,
              help="Port to listen on (0, the system's choice, is refused: the printed URL could not name it).")
@click.option("--max-sessions", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Browser tabs served at once (each runs its own app); past that the page says the server is full.")
@click.option("--token", default=None,
              help="Access token to require (default: generated and printed when --host is not loopback).")
@click.option("--idle", default="30m", show_default=True,
              help="End sessions without input for this long (90s, 30m, 2h).")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, max_sessions: int, token: str | None, idle: str) -> None:
    """Serve the full app to browsers on the lab's network, offline.

    Each browser tab gets its own app (search, cases with images, SQL, statistics). Nothing
    is written on the server: every save is delivered to the browser as a download, and the
    bundle is opened read-only. The URL to open is printed at start.

    \b
    Examples:
      medpix-tui serve                                # http://127.0.0.1:8000/, this machine only
      medpix-tui serve --host 0.0.0.0 --port 8080     # the lab's network: prints a URL with a token
      medpix-tui --bundle medpix-2.0.tar serve --max-sessions 4 --idle 15m
    """
    from ..web.server import ServeConfig, check_port_free
    from ..web.server import serve as run_server
    from .options import resolve

    config = ServeConfig.make(resolve(ctx.obj.get("bundle")).root,
                              host=host, port=port, max_sessions=max_sessions, token=token, idle=idle)
    check_port_free(host, port)
    run_server(config)


COMMANDS = [serve]
