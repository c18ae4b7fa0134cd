"""`medpix-tui serve`: the app in a real headless Chromium, locked down, writing nothing on the server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from medpix_tui.bundle import verify_bundle
from medpix_tui.errors import InputError
from medpix_tui.export import verify_export
from medpix_tui.web.server import ServeConfig, is_loopback, parse_duration
from tests.serve_support import (
    browser,
    children,
    finished_downloads,
    need_browser,
    press_ctrl,
    received_since,
    running,
    screen_text,
    served,
    stubborn_served,
    tree,
    type_keys,
    wait_for,
)

STATUS = re.compile(r"(\d+) images? · (\d+) cases?")
#: A last resort for a hung server; a loaded 2-core host answers far sooner.
PATIENCE = 300


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# -- configuration -------------------------------------------------------------------

def test_durations_and_hosts() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "30m", "2h", "1.5m")] == [90, 90, 1800, 7200, 90]
    for bad in ("", "soon", "-5m", "0", "5 d"):
        with pytest.raises(InputError):
            parse_duration(bad)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.7") and not is_loopback("lab-server")


def test_a_host_beyond_loopback_gets_a_token(tmp_path: Path) -> None:
    local = ServeConfig.make(tmp_path, host="127.0.0.1", port=8000, max_sessions=8, token=None, idle="30m")
    assert local.token is None and local.url == "http://127.0.0.1:8000/"
    lab = ServeConfig.make(tmp_path, host="0.0.0.0", port=8080, max_sessions=8, token=None, idle="30m")
    assert lab.token and len(lab.token) >= 24 and lab.url == f"http://127.0.0.1:8080/?token={lab.token}"
    other = ServeConfig.make(tmp_path, host="0.0.0.0", port=8080, max_sessions=8, token=None, idle="30m")
    assert other.token != lab.token
    with pytest.raises(InputError, match="at least 8"):
        ServeConfig.make(tmp_path, host="0.0.0.0", port=8080, max_sessions=8, token="short", idle="30m")
    # a chosen token is quoted for the URL; colleagues get this machine's name, not 127.0.0.1
    chosen = ServeConfig.make(tmp_path, host="0.0.0.0", port=8080, max_sessions=8, token="lab#pass word&1", idle="1m")
    assert chosen.url == "http://127.0.0.1:8080/?token=lab%23pass%20word%261"
    assert chosen.lab_url == f"http://{socket.gethostname()}:8080/?token=lab%23pass%20word%261"
    assert local.lab_url is None


def test_ipv6_any_prints_an_ipv6_url(tmp_path: Path) -> None:
    # --host :: printed a 127.0.0.1 URL while it listened on IPv6 only; it takes IPv4 too now
    # (test_ipv6_any_takes_ipv4_too), and [::1] stays the URL for this machine
    config = ServeConfig.make(tmp_path, host="::", port=8000, max_sessions=8, token="a-long-token", idle="30m")
    assert config.url == "http://[::1]:8000/?token=a-long-token"
    assert ServeConfig.make(tmp_path, host="::1", port=8000, max_sessions=8, token=None, idle="1m").url == \
        "http://[::1]:8000/"


def test_bad_arguments_are_one_line(real_bundle_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for args in (["--port", str(port)], ["--idle", "soon"], ["--token", "short", "--host", "0.0.0.0"],
                     ["--port", "0"]):  # port 0 would print a URL nobody can open
            run = subprocess.run([sys.executable, "-m", "medpix_tui", "--bundle", str(real_bundle_path), "serve",
                                  *args], capture_output=True, text=True, timeout=PATIENCE)
            assert run.returncode == 2, (args, run.stderr)
            assert len(run.stderr.strip().splitlines()) == 1 and run.stderr.startswith("error: "), run.stderr
            assert "Traceback" not in run.stderr


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_ipv6_any_takes_ipv4_too() -> None:
    """--host :: printed "from other machines: http://HOST:P/" and listened on IPv6 only, so that URL
    (HOST an IPv4 address) and 127.0.0.1 were refused."""
    if not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    with stubborn_served(host="::") as server:
        token = re.search(r"token=(\S+)", server.url).group(1)  # type: ignore[union-attr]
        assert server.url == f"http://[::1]:{server.port}/?token={token}"
        for host in ("127.0.0.1", "[::1]"):
            assert _get(f"http://{host}:{server.port}/?token={token}")[0] == 200, host
        lab = re.search(r"from other machines: (http://\S+)", server.log.read_text())
        assert lab, server.log.read_text()
        try:
            socket.getaddrinfo(socket.gethostname(), server.port, type=socket.SOCK_STREAM)
        except OSError:
            return  # this machine's name does not resolve here: nothing more to open
        assert _get(lab.group(1))[0] == 200


# -- in a real browser -------------------------------------------------------------

def test_search_open_a_case_and_save_in_a_browser(real_bundle_path: Path, tmp_path: Path) -> None:
    """The first screen, a query, a case and a save that arrives as a download, nothing on the server."""
    need_browser()
    from PIL import Image, ImageStat

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with served(real_bundle_path) as server, browser(downloads) as page:
        before = {"cwd": tree(server.cwd), "home": tree(server.home), "tmp": tree(server.tmp)}
        page.get(server.url)
        wait_for(lambda: "2050 images" in screen_text(page), PATIENCE, "the first screen")
        shot = tmp_path / "first.png"
        page.save_screenshot(str(shot))
        spread = ImageStat.Stat(Image.open(shot).convert("L")).stddev[0]
        assert spread > 10, f"the served first screen looks blank (pixel spread {spread:.1f})"

        mark = len(screen_text(page))
        type_keys(page, "glioma")
        counts = wait_for(lambda: [m for m in STATUS.findall(received_since(page, mark)) if m[0] != "2050"],
                          PATIENCE, "the result of the query")
        hits = int(counts[-1][0])
        assert 0 < hits < 2050

        press_ctrl(page, "s")
        wait_for(lambda: "downloads it" in received_since(page, mark), PATIENCE, "the save dialog")
        type_keys(page, "\n")
        saved = wait_for(lambda: finished_downloads(downloads), PATIENCE, "the download in the browser")
        # a one-file save comes zipped with its export manifest, which export verify accepts once unzipped
        assert saved[0].name == "medpix-images.json.zip"
        unzipped = _unzip(saved[0], tmp_path / "unzipped")
        documents = json.loads((unzipped / "medpix-images.json").read_text(encoding="utf-8"))
        assert len(documents) == hits
        assert verify_export(unzipped / "medpix-images.json") == []

        mark = len(screen_text(page))
        press_ctrl(page, "o")
        wait_for(lambda: "Findings" in received_since(page, mark), PATIENCE, "the case screen")
        # the image, drawn in half-blocks (a browser's terminal answers no graphics query)
        wait_for(lambda: received_since(page, mark).count("\u2584") + received_since(page, mark).count("\u2580") > 100,
                 PATIENCE, "the case's image in half-blocks")
        type_keys(page, "s")
        wait_for(lambda: "downloads it" in received_since(page, mark), PATIENCE, "the case's save dialog")
        type_keys(page, "\n")
        both = wait_for(lambda: len(finished_downloads(downloads)) == 2 and finished_downloads(downloads),
                        PATIENCE, "the second download")
        image_zip = next(p for p in both if p != saved[0])
        name = image_zip.name.removesuffix(".zip")
        unzipped = _unzip(image_zip, tmp_path / "unzipped-case")
        assert json.loads((unzipped / name).read_text(encoding="utf-8"))["image"] == name.removesuffix(".json")
        assert verify_export(unzipped / name) == []

        after = {"cwd": tree(server.cwd), "home": tree(server.home), "tmp": tree(server.tmp)}
        assert after == before, "a served session wrote on the server"
    assert verify_bundle(real_bundle_path).ok


def _unzip(archive: Path, folder: Path) -> Path:
    """A downloaded zip's files in ``folder``: the saved file and its ``.manifest.json``, nothing else."""
    import zipfile

    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
        assert len(names) == 2 and sum(n.endswith(".manifest.json") for n in names) == 1, names
        z.extractall(folder)
    return folder


def test_a_wrong_or_missing_token_is_refused(real_bundle_path: Path, tmp_path: Path) -> None:
    with served(real_bundle_path, "--host", "0.0.0.0") as server:
        token = re.search(r"token=(\S+)", server.url).group(1)  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{server.port}"
        assert _get(f"{base}/")[0] == 403
        assert _get(f"{base}/?token=wrong-{token}")[0] == 403
        assert _get(f"{base}/ws")[0] == 403
        assert _get(f"{base}/download/anything")[0] == 403
        status, body = _get(f"{base}/?token={token}")
        assert status == 200 and "/ws" in body
        assert _get(f"{base}/static/js/textual.js")[0] == 200  # the page's own script is public
        if Path("/usr/bin/chromium").exists():
            need_browser()
            with browser(tmp_path) as page:
                page.get(f"{base}/")
                assert "access token" in page.find_element("id", "message").text


def test_a_session_past_max_sessions_is_refused(real_bundle_path: Path, tmp_path: Path) -> None:
    """Eight sessions run (each its own app); the ninth page says the server is full."""
    import aiohttp

    with served(real_bundle_path, "--max-sessions", "8") as server:
        base = f"http://127.0.0.1:{server.port}"

        async def eight_then_ninth() -> tuple[int, str, int]:
            async with aiohttp.ClientSession() as client:
                sockets = [await client.ws_connect(f"{base}/ws?width=80&height=24") for _ in range(8)]
                try:
                    async with client.get(f"{base}/") as page:
                        status, body = page.status, await page.text()
                    try:
                        await client.ws_connect(f"{base}/ws")
                        refused = 0
                    except aiohttp.WSServerHandshakeError as exc:
                        refused = exc.status
                finally:
                    for ws in sockets:
                        await ws.close()
            return status, body, refused

        status, body, refused = asyncio.run(eight_then_ninth())
        assert status == 503 and "server is full" in body
        assert refused == 503
        wait_for(lambda: _get(f"{base}/")[0] == 200, PATIENCE, "the sessions to end")


def test_an_idle_session_ends(real_bundle_path: Path) -> None:
    import aiohttp

    with served(real_bundle_path, "--idle", "2s") as server:

        async def until_closed() -> bool:
            async with aiohttp.ClientSession() as client:
                ws = await client.ws_connect(f"http://127.0.0.1:{server.port}/ws?width=80&height=24")
                async for _ in ws:  # the app's screen arrives; then, with no input, the server closes
                    pass
                return ws.closed

        assert asyncio.run(asyncio.wait_for(until_closed(), PATIENCE))


def test_terminal_sizes_from_a_browser_are_bounded() -> None:
    from medpix_tui.web.server import MAX_COLUMNS, MAX_ROWS, terminal_size

    assert terminal_size(10**12, 10**12) == (MAX_COLUMNS, MAX_ROWS)
    assert terminal_size("120", "40") == (120, 40)
    assert terminal_size(-5, 0) == (1, 1)
    assert terminal_size("wide", None) == (80, 24)


def test_hostile_messages_end_one_session_not_the_server(real_bundle_path: Path) -> None:
    """A 10^12-column resize grew the app to 14 GB and its session never ended; other sites' pages
    and rebinding names are refused; a message that is not JSON is ignored."""
    import aiohttp

    with served(real_bundle_path, "--max-sessions", "1") as server:
        base = f"http://127.0.0.1:{server.port}"

        async def attack() -> tuple[int, int]:
            async with aiohttp.ClientSession() as client:
                statuses = []
                for headers in ({"Origin": "http://evil.example"}, {"Host": f"evil.example:{server.port}"}):
                    try:
                        await client.ws_connect(f"{base}/ws", headers=headers)
                        statuses.append(101)
                    except aiohttp.WSServerHandshakeError as exc:
                        statuses.append(exc.status)
                ws = await client.ws_connect(f"{base}/ws?width=80&height=24",
                                             headers={"Origin": base})  # the server's own page may
                await ws.send_str("not json")
                await ws.send_json(["resize", {"width": 10**12, "height": 10**12}])
                await ws.send_json(["ping", "still here"])
                async for message in ws:
                    if message.type == aiohttp.WSMsgType.TEXT and message.json() == ["pong", "still here"]:
                        break
                await ws.close()
            return statuses[0], statuses[1]

        assert asyncio.run(asyncio.wait_for(attack(), PATIENCE)) == (403, 403)
        # the one session slot comes back: the app quit (or was killed) when its session ended
        wait_for(lambda: _get(f"{base}/")[0] == 200, PATIENCE, "the session to end")
        status, _ = _get(f"{base}/ws")
        assert status == 400  # a plain request to the websocket address: one answer, no traceback
        assert "Traceback" not in server.log.read_text()


# -- ending sessions: an app that never quits (sleep) ------------------------------------

async def _open_sessions(port: int, count: int) -> tuple[Any, list[Any]]:
    import aiohttp

    client = aiohttp.ClientSession()
    sockets = [await client.ws_connect(f"http://127.0.0.1:{port}/ws?width=80&height=24") for _ in range(count)]
    return client, sockets


def test_sigterm_ends_open_sessions_and_the_server_promptly() -> None:
    """SIGTERM by pid took 15-17 s with sessions open (each waited on its websocket, then on its app);
    each session's start and end is one line on stderr (serve logged nothing)."""
    with stubborn_served() as server:

        async def scenario() -> float:
            client, _ = await _open_sessions(server.port, 2)
            try:
                apps = wait_for(lambda: len(children(server.process.pid)) == 2 and children(server.process.pid),
                                PATIENCE, "two app processes")
                started = time.monotonic()
                server.process.send_signal(signal.SIGTERM)
                await asyncio.to_thread(server.process.wait, PATIENCE)
                took = time.monotonic() - started
                assert not [pid for pid in apps if running(pid)], "the apps were ended with their sessions"
                return took
            finally:
                await client.close()

        took = asyncio.run(scenario())
        assert took < 5, f"SIGTERM took {took:.1f} s"
        log = server.log.read_text()
        assert re.findall(r"session (\d) started", log) == ["1", "2"], log
        assert sorted(re.findall(r"session (\d) ended after", log)) == ["1", "2"], log


def test_apps_die_with_a_killed_server() -> None:
    """kill -9 of serve left its app processes running, orphaned."""
    with stubborn_served() as server:

        async def scenario() -> list[int]:
            client, _ = await _open_sessions(server.port, 1)
            try:
                apps: list[int] = wait_for(lambda: children(server.process.pid), PATIENCE, "the app process")
                server.process.kill()
                await asyncio.to_thread(server.process.wait, PATIENCE)
                return apps
            finally:
                await client.close()

        apps = asyncio.run(scenario())
        wait_for(lambda: not any(running(pid) for pid in apps), 30, "the orphaned app to die")


def test_a_closed_session_frees_its_slot_at_once() -> None:
    """At --max-sessions 1 a reload said "server full" while the old app took its seconds to quit."""
    with stubborn_served(max_sessions=1) as server:

        async def scenario() -> tuple[int, bool]:
            client, sockets = await _open_sessions(server.port, 1)
            try:
                [app] = wait_for(lambda: children(server.process.pid), PATIENCE, "the app process")
                await sockets[0].close()
                await asyncio.to_thread(wait_for, lambda: "session 1 ended" in server.log.read_text(), PATIENCE,
                                        "the end line")
                async with client.get(f"http://127.0.0.1:{server.port}/") as page:
                    # the app ignores the quit message, so it lives QUIT_GRACE_S more: the slot came first
                    return page.status, running(app)
            finally:
                await client.close()

        assert asyncio.run(scenario()) == (200, True), server.log.read_text()


#: How long a session may take to end once its app is killed: a last resort (it takes milliseconds).
APP_END_PATIENCE = 60


def test_a_killed_app_ends_its_session_at_once() -> None:
    """kill -9 of a session's app left its websocket open, the tab frozen and, at --max-sessions 1,
    the server "full" for as long as the tab stayed; the end line came only when the tab left."""
    import aiohttp

    with stubborn_served(max_sessions=1) as server:

        async def scenario() -> tuple[Any, int | None]:
            client, sockets = await _open_sessions(server.port, 1)
            try:
                [app] = wait_for(lambda: children(server.process.pid), PATIENCE, "the app process")
                os.kill(app, signal.SIGKILL)
                message = await asyncio.wait_for(sockets[0].receive(), APP_END_PATIENCE)
                return message, sockets[0].close_code
            finally:
                await client.close()

        message, code = asyncio.run(scenario())
        assert message.type == aiohttp.WSMsgType.CLOSE, message
        assert message.extra == "the app was killed (SIGKILL)" and code == aiohttp.WSCloseCode.INTERNAL_ERROR
        wait_for(lambda: _get(f"http://127.0.0.1:{server.port}/")[0] == 200, APP_END_PATIENCE, "the freed slot")
        assert re.search(r"session 1 ended after \d+ s: the app was killed \(SIGKILL\) \(0 of 1 open\)",
                         server.log.read_text()), server.log.read_text()


def test_the_page_says_its_app_ended(tmp_path: Path) -> None:
    """The page's closed dialog gives the server's reason (textual-serve's page said only "Session ended")."""
    need_browser()
    with stubborn_served() as server, browser(tmp_path) as page:
        page.get(server.url)
        [app] = wait_for(lambda: children(server.process.pid), PATIENCE, "the app process")
        os.kill(app, signal.SIGKILL)
        shown = "return getComputedStyle(document.querySelector('.closed-dialog')).display !== 'none' " \
                "&& document.querySelector('.closed-reason').textContent"
        assert wait_for(lambda: page.execute_script(shown), APP_END_PATIENCE, "the closed dialog") == \
            "Session ended: the app was killed (SIGKILL)."


def test_a_session_start_runs_no_process_but_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each session's start ran ``ldconfig -p`` (ctypes.util.find_library, to find the C library for
    prctl): a child of the server beside the app, which a kill of "the app process" could hit."""
    import subprocess as subprocess_module

    from medpix_tui.web import server

    def no_process(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a process was started: {args}")

    monkeypatch.setattr(subprocess_module, "Popen", no_process)
    arrange = server._die_with_parent()
    assert arrange is None or callable(arrange)
