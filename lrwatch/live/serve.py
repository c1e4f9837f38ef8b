"""``lrwatch serve``: the monitor in a browser tab, through textual-serve (Textualize's server for Textual apps).

Each browser tab that opens the page gets its own ``lrwatch attach`` process (textual-serve starts the
command once per websocket, under Textual's web driver): a tab is a client of the run, as a terminal is.
Closing the tab ends that process, never the run; ``q`` in a tab asks before it stops the run.

**A secret in the URL.** Every local user can reach 127.0.0.1, and a tab bypasses the socket's 0700
directory and peer-uid check, so the page and its websocket answer only a request that carries the random
token of the URL printed at start (``http://127.0.0.1:PORT/?token=...``, as Jupyter does): 403 otherwise,
before any process starts. The page, opened with the token, sets it as a cookie (HttpOnly, SameSite=Strict,
named for the port) that the page's own websocket carries. This uses textual-serve's public handlers only
(:class:`TokenServer` overrides ``handle_index`` and ``handle_websocket``); its static files stay open (they
are textual-serve's own JavaScript and CSS).

It listens on 127.0.0.1 by default and prints the ``ssh -L`` line that reaches it from a laptop. ``--host``
binds elsewhere, with a warning: the token is then all that keeps others out, over plain HTTP.
"""

from __future__ import annotations

import argparse
import getpass
import hmac
import secrets
import shlex
import socket
import sys
from pathlib import Path
from typing import Any

from lrwatch.record.rundir import run_dir_problem

LOOPBACK = ("127.0.0.1", "localhost", "::1")
EXIT_USAGE = 2


def add_serve_command(sub: Any) -> None:
    serve = sub.add_parser("serve", help="the monitor in a browser tab (textual-serve), attached to a run")
    serve.add_argument("run_dir", nargs="?", type=Path, metavar="RUN_DIR", help="default: your most recent live run")
    serve.add_argument("--port", type=int, default=8000, help="default 8000")
    serve.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1; elsewhere: the token over plain HTTP")
    serve.add_argument("--public-url", default=None, help="the URL browsers use, if not http://HOST:PORT")
    serve.add_argument("--fps", type=float, default=2.0, help="max redraws per second of each tab (default 2)")


def attach_command(run_dir: Path | None, fps: float) -> str:
    """The shell command textual-serve runs for each tab: this Python's ``lrwatch attach``."""
    words = [sys.executable, "-m", "lrwatch.cli", "attach", "--fps", f"{fps:g}"]
    if run_dir is not None:
        words.append(str(run_dir.resolve()))
    return shlex.join(words)


def public_url(host: str, port: int) -> str:
    """What the page's websocket address is built from: a wildcard bind is reached by this machine's name."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def token_server(command: str, *, token: str, host: str, port: int, public_url: str) -> Any:
    """textual-serve's ``Server``, answering only requests that carry ``token`` (query or cookie)."""
    from aiohttp import web
    from textual_serve.server import Server

    cookie = f"lrwatch-serve-{port}"

    def allowed(request: web.Request) -> bool:
        given = request.query.get("token") or request.cookies.get(cookie) or ""
        return hmac.compare_digest(given.encode(), token.encode())

    class TokenServer(Server):
        async def handle_index(self, request: web.Request) -> web.StreamResponse:
            if not allowed(request):
                raise web.HTTPForbidden(text="lrwatch serve: open the URL lrwatch serve printed (with ?token=...)\n")
            response = await super().handle_index(request)
            response.set_cookie(cookie, token, httponly=True, samesite="Strict")  # the page's websocket carries it
            return response

        async def handle_websocket(self, request: web.Request) -> web.StreamResponse:
            if not allowed(request):
                raise web.HTTPForbidden(text="lrwatch serve: no token\n")  # before any process starts
            return await super().handle_websocket(request)

    return TokenServer(command, host=host, port=port, title="lrwatch", public_url=public_url)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import textual_serve.server  # noqa: F401
    except ImportError:
        print("lrwatch serve: needs textual-serve (pip install 'lrwatch[serve]')", file=sys.stderr)
        return EXIT_USAGE
    problem = run_dir_problem(args.run_dir) if args.run_dir is not None else None
    if problem is not None:
        print(f"lrwatch serve: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.run_dir is not None and not (args.run_dir / "run.json").is_file():
        from lrwatch.live.starting import STARTING_NOTE

        print(f"lrwatch serve: {args.run_dir} is {STARTING_NOTE}; each tab waits for it", flush=True)
    if not 0 < args.port < 65536:
        print(f"lrwatch serve: --port must be 1..65535 (got {args.port})", file=sys.stderr)
        return EXIT_USAGE
    url = args.public_url or public_url(args.host, args.port)
    token = secrets.token_urlsafe(24)
    target = args.run_dir or "your most recent live run"
    print(f"lrwatch serve: {url}/?token={token}  (each tab attaches to {target})", flush=True)
    if args.host in LOOPBACK:
        user, machine = getpass.getuser(), socket.getfqdn()
        print(f"  from your laptop: ssh -N -L {args.port}:127.0.0.1:{args.port} {user}@{machine}", flush=True)
        print(f"  then open http://localhost:{args.port}/?token={token}", flush=True)
    else:
        print(
            f"lrwatch serve: WARNING: listening on {args.host}:{args.port}, over plain HTTP: anyone who can reach"
            " it and sees the token can switch, pause or stop your run. Prefer the default and an ssh tunnel.",
            file=sys.stderr,
            flush=True,
        )
    server = token_server(attach_command(args.run_dir, args.fps), token=token, host=args.host, port=args.port,
                          public_url=url)  # fmt: skip
    server.serve()
    return 0
