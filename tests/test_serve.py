"""``lrwatch serve`` as a browser uses it: the page, its websocket, the monitor's first frame; a tab that
closes leaves the run training; SIGTERM ends the server."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

aiohttp = pytest.importorskip("aiohttp")  # textual-serve's own dependency; make test installs the extra

from lrwatch.live.serve import public_url  # noqa: E402
from tests.test_live import CLI, ENV, detached_demo, events, lrwatch, run_pid, wait_for  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(*args: str) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(
        [*CLI, "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )
    first = server.stdout.readline()
    return server, first


def wait_listening(port: int, timeout: float = 30.0) -> None:
    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(listening, f"lrwatch serve to listen on {port}", timeout)


def token_of(first: str) -> str:
    """The secret of the URL ``lrwatch serve`` printed first."""
    return first.split("?token=", 1)[1].split()[0]


async def first_frame(port: int, needle: bytes, token: str, timeout: float = 60.0) -> bytes:
    """Open the page and its websocket as the browser does (the page's cookie carries the token); the app's
    output until ``needle`` shows."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:  # unsafe: an IP host
        async with session.get(f"http://127.0.0.1:{port}/?token={token}") as page:
            html = await page.text()
            assert page.status == 200 and f"ws://127.0.0.1:{port}/ws" in html
        async with session.ws_connect(f"http://127.0.0.1:{port}/ws?width=100&height=30") as ws:
            seen = b""
            deadline = time.monotonic() + timeout
            while needle not in seen:
                assert time.monotonic() < deadline, f"no {needle!r} in {seen[-2000:]!r}"
                message = await ws.receive(timeout=max(deadline - time.monotonic(), 0.1))
                if message.type == aiohttp.WSMsgType.BINARY:
                    seen += message.data
                elif message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    raise AssertionError(f"the websocket closed: {seen[-2000:]!r}")
            return seen  # leaving the block closes the tab's websocket


def test_a_browser_tab_shows_the_monitor_and_closing_it_leaves_the_run_training(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    detached_demo(run_dir)
    port = free_port()
    server, first = start_serve(str(run_dir), "--port", str(port))
    try:
        assert f"http://127.0.0.1:{port}" in first
        assert f"ssh -N -L {port}:127.0.0.1:{port}" in server.stdout.readline()
        wait_listening(port)
        frame = asyncio.run(first_frame(port, b"learning rate", token_of(first)))
        assert b"loss" in frame
        steps_then = len(events(run_dir))
        time.sleep(1.0)  # the tab has closed; its attach process ends
        assert (run_dir / "live.json").exists() and os.kill(run_pid(run_dir), 0) is None
        listed = lrwatch("ls", "--json")
        assert str(run_dir.resolve()) in listed.stdout and '"state": "running"' in listed.stdout
        frame = asyncio.run(first_frame(port, b"learning rate", token_of(first)))  # a second tab: the same run
        assert len(events(run_dir)) >= steps_then
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            assert server.wait(10) is not None  # no lrwatch process may hang
        finally:
            server.kill()
            if (run_dir / "live.json").exists():
                os.kill(run_pid(run_dir), signal.SIGTERM)
                wait_for(lambda: not (run_dir / "live.json").exists(), "the run to end", 15)
    assert [e.get("reason") for e in events(run_dir) if e["event"] == "stop"] == ["SIGTERM"]  # no tab stopped it


def test_binding_elsewhere_warns_and_bad_input_changes_nothing(tmp_path: Path) -> None:
    bad = lrwatch("serve", str(tmp_path))
    assert bad.returncode == 2 and "not an lrwatch run directory (no run.json)" in bad.stderr
    assert lrwatch("serve", "--port", "70000").returncode == 2
    port = free_port()
    server, first = start_serve("--host", "0.0.0.0", "--port", str(port))
    try:
        deadline = time.monotonic() + 20
        warning = ""
        while "plain HTTP" not in warning and time.monotonic() < deadline:
            warning += server.stderr.readline()
        assert "WARNING" in warning and "plain HTTP" in warning and f":{port}/?token=" in first
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(10) is not None
    assert public_url("0.0.0.0", 8000) == f"http://{socket.getfqdn()}:8000"
    assert public_url("::1", 8000) == "http://[::1]:8000"
