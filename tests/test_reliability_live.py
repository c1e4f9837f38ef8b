"""A live run survives its neighbours and its own tools: a busy or vanished socket, planted records, a socket
directory taken by another user, silent or stalled clients, another uid at the browser (issue 24)."""

from __future__ import annotations

import contextlib
import encodings.idna  # noqa: F401 - loaded before a fork to another uid (see as_uid)
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from lrwatch.live import sockets
from lrwatch.live.client import RemoteRunSource, RunClient
from lrwatch.live.sockets import LiveRecord, live_runs, record_of_run_dir, socket_dir, unpublish
from lrwatch.protocol.events import Event
from lrwatch.protocol.wire import VERSION
from tests.test_wire import TrainingRun

ROOT = Path(__file__).resolve().parent.parent
HELLO = b'{"type": "hello", "version": %d, "client": "monitor"}\n' % VERSION
CLI = [sys.executable, "-m", "lrwatch.cli"]
RUN = "import sys; from pathlib import Path; from tests.test_wire import TrainingRun; TrainingRun(Path(sys.argv[1]), delay=0.002).thread.join()"  # noqa: E501


def env(tmp: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")} | {"TMPDIR": str(tmp)}


def wait_for(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def status_of(path: str) -> str:
    client = RunClient(path, kind="ls", timeout=5.0)
    try:
        return client.status().state
    finally:
        client.close()


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A socket directory of this test's own (``TMPDIR``), so that other runs on the machine do not count."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    return tmp_path


def test_ls_during_a_burst_on_a_stalled_run_reports_it_busy_and_removes_nothing(private_tmp: Path) -> None:
    """The run's accept queue is full (a burst of connections while the process is stopped): ``ls`` says
    busy, and the socket and both records stay; once it goes on, ``send`` reaches it."""
    run_dir = private_tmp / "run"
    proc = subprocess.Popen([sys.executable, "-c", RUN, str(run_dir)], cwd=ROOT, env=env(private_tmp))
    burst: list[socket.socket] = []
    try:
        wait_for(lambda: (run_dir / "live.json").exists() and (run_dir / "run.json").exists(), "the run")
        record = record_of_run_dir(run_dir)
        os.kill(proc.pid, signal.SIGSTOP)
        with contextlib.suppress(OSError):  # until the queue is full: EAGAIN
            for _ in range(1000):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.setblocking(False)
                burst.append(sock)
                sock.connect(record.socket)
        ls = subprocess.run([*CLI, "ls", "--json"], capture_output=True, text=True, env=env(private_tmp), timeout=60)
        rows = json.loads(ls.stdout)
        assert [(r["pid"], r["state"], r["stale"]) for r in rows] == [(proc.pid, "busy", False)], ls.stdout
        assert Path(record.socket).exists() and (run_dir / "live.json").exists()
        assert Path(record.socket).with_suffix(".json").exists()
        for sock in burst:
            sock.close()
        os.kill(proc.pid, signal.SIGCONT)
        sent = subprocess.run([*CLI, "send", str(run_dir), "pause"], capture_output=True, text=True,
                              env=env(private_tmp), timeout=60)  # fmt: skip
        assert sent.returncode == 0, sent.stderr
    finally:
        for sock in burst:
            sock.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait()


def test_a_run_whose_socket_file_vanished_serves_again_within_seconds(private_tmp: Path) -> None:
    run = TrainingRun(private_tmp / "run", delay=0.002)
    try:
        record = run.server.record
        assert status_of(record.socket) == "running"
        for path in (Path(record.socket), Path(record.socket).with_suffix(".json"), private_tmp / "run" / "live.json"):
            path.unlink()  # a cleaner of /tmp, a careless rm
        wait_for(lambda: Path(record.socket).exists() and (private_tmp / "run" / "live.json").exists(), "a re-bind", 5)
        assert status_of(record.socket) == "running"
        assert [r.pid for r in live_runs()[0]] == [os.getpid()]
        Path(record.socket).unlink()
        Path(record.socket).write_text("not a socket")  # replaced by something else: served again too
        wait_for(lambda: Path(record.socket).is_socket(), "a second re-bind", 5)
        assert status_of(record.socket) == "running"
    finally:
        run.stop()


def test_planted_records_never_make_lrwatch_remove_a_file_elsewhere(private_tmp: Path, capsys) -> None:
    victim = private_tmp / "victim"
    victim.write_text("precious\n")
    (private_tmp / "victim.json").write_text("precious too\n")
    run_dir = private_tmp / "run"
    run_dir.mkdir()
    pid = dead_pid()
    planted = LiveRecord(pid, str(victim), str(run_dir), 1.0)
    (run_dir / "live.json").write_text(json.dumps(planted.to_dict()))
    assert record_of_run_dir(run_dir) is None  # ignored, and said
    assert f"its socket {victim} is not in your socket directory" in capsys.readouterr().err
    unpublish(planted)
    in_dir = socket_dir() / f"{pid}-1.json"  # a record in the socket directory that names the victim
    in_dir.write_text(json.dumps(planted.to_dict()))
    ls = subprocess.run([*CLI, "ls", "--json"], capture_output=True, text=True, env=env(private_tmp), timeout=60)
    assert ls.returncode == 0 and json.loads(ls.stdout) == []
    assert victim.read_text() == "precious\n" and (private_tmp / "victim.json").read_text() == "precious too\n"


def test_a_socket_directory_taken_by_another_user_falls_back_to_a_private_one(private_tmp: Path, capsys) -> None:
    taken = private_tmp / f"lrwatch-{os.getuid()}"
    taken.mkdir(mode=0o700)
    os.chown(taken, 65534, 65534)
    sockets._said_fallback.clear()
    run = TrainingRun(private_tmp / "run", delay=0.002)
    try:
        assert run.server is not None, "the run must still serve its socket"
        assert Path(run.server.record.socket).parent == private_tmp / f"lrwatch-{os.getuid()}-1"
        assert status_of(run.server.record.socket) == "running"
        assert [r.pid for r in live_runs()[0]] == [os.getpid()]
        err = capsys.readouterr().err
        assert err.count(f"belongs to uid 65534, not {os.getuid()}: using {taken}-1 for sockets instead") == 1
    finally:
        run.stop()


def http_status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def as_uid(uid: int, fn) -> object:
    """``fn()`` in a forked child running as ``uid`` (its JSON result): another local user. (Modules are
    imported before: this interpreter's files need not be readable by that user.)"""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.write(write, json.dumps(fn()).encode())
        except BaseException as exc:
            os.write(write, json.dumps({"error": repr(exc)}).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def test_serve_refuses_the_page_and_the_websocket_without_its_token(private_tmp: Path) -> None:
    """Another local user (uid 65534) reaches 127.0.0.1 but not the run: 403 without the printed token."""
    pytest.importorskip("textual_serve")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([*CLI, "serve", "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env(private_tmp))  # fmt: skip
    try:
        first = server.stdout.readline()
        assert f"http://127.0.0.1:{port}/?token=" in first
        token = first.split("?token=", 1)[1].split()[0]
        base = f"http://127.0.0.1:{port}"
        upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}  # fmt: skip

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, "lrwatch serve to listen")
        assert http_status(f"{base}/?token={token}") == 200  # the URL printed opens the page (and warms urllib up)
        statuses = as_uid(65534, lambda: [
            http_status(f"{base}/"), http_status(f"{base}/?token=wrong"),
            http_status(f"{base}/ws?width=80&height=24", upgrade),
            http_status(f"{base}/ws", upgrade | {"Cookie": f"lrwatch-serve-{port}=wrong"}),
        ])  # fmt: skip
        assert statuses == [403, 403, 403, 403]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_silent_subscribers_cost_a_bounded_memory_and_the_65th_is_told_why(private_tmp: Path) -> None:
    """100 monitors subscribe to a 400k-row run and never read: 64 are served, the rest told why in one
    line; the run's memory grows by at most ~1.5 MB per subscriber and comes back when they go."""
    import numpy as np

    from lrwatch.live.feed import SNAPSHOT_ROWS
    from lrwatch.live.host import serve
    from lrwatch.run.engine import Engine
    from lrwatch.schedule.timeline import Timeline
    from tests.conftest import FakeOptimizer

    n = 400_000
    engine = Engine(FakeOptimizer(0.1), Timeline.start("cosine", lr=0.1, steps_per_epoch=100, total_steps=10**7),
                    run_dir=private_tmp / "run")  # fmt: skip
    engine.begin()
    steps = np.arange(n)
    engine.history.extend(steps, steps / 100, np.full(n, 0.1), 1.0 / (1 + steps))  # a long run's history
    server = serve(engine)
    clients: list[socket.socket] = []
    try:
        before = rss_mb()
        for _ in range(100):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(server.record.socket)
            sock.sendall(HELLO + b'{"type": "subscribe"}\n')
            clients.append(sock)
        wait_for(lambda: sum(c.subscribed for c in server.clients) == 64 and len(server.clients) == 64, "64 served")
        time.sleep(1.0)  # a few pushes: each silent subscriber holds what it was given, no more
        during = rss_mb()
        refused = []
        for sock in clients[64:]:
            sock.settimeout(5)
            refused.append(sock.recv(65536))
        assert all(b"this run has 64 monitors attached, the most it serves" in r for r in refused), refused[:1]
        assert max(len(c.out) for c in server.clients) < 2 << 20
        assert during - before < 64 * 1.5, f"{during - before:.0f} MB for 64 silent subscribers"
        for sock in clients:
            sock.close()
        wait_for(lambda: not server.clients, "the subscribers to go")
        wait_for(lambda: rss_mb() - before < 16, "their memory to come back (within a server check, 1 s)", 5)
        reader = RemoteRunSource.of_path(server.record.socket).start()  # a monitor that reads gets the snapshot:
        assert reader.ready.wait(30) and len(reader.history) == SNAPSHOT_ROWS  # decimated, all its slices in
        steps = reader.history.column("step")
        assert steps[-1] == n - 1 and np.array_equal(steps[-SNAPSHOT_ROWS // 2 :], np.arange(n - SNAPSHOT_ROWS // 2, n))
        reader.detach()
    finally:
        for sock in clients:
            sock.close()
        server.close()
        engine.finish()


def test_a_half_line_left_hanging_is_closed_with_one_error_line(
    private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lrwatch.live import peer

    monkeypatch.setattr(peer, "IDLE_LINE_SECONDS", 0.5)
    run = TrainingRun(private_tmp / "run", delay=0.002)
    try:
        half = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        half.settimeout(10)
        half.connect(run.server.record.socket)
        half.sendall(HELLO + b'{"type": "sta')
        received = b""
        while chunk := half.recv(65536):
            received += chunk
        last = json.loads(received.splitlines()[-1])
        assert last["type"] == "error" and "a line left unfinished" in last["message"]
        assert status_of(run.server.record.socket) == "running"  # the run and its other clients go on
    finally:
        run.stop()


def test_escape_codes_from_the_wire_are_shown_escaped(private_tmp: Path, capsys) -> None:
    """A stop whose reason carries escape codes (sent by any client) reaches the log and terminal escaped."""
    import io

    from lrwatch.protocol.commands import Stop
    from lrwatch.record.console import HeadlessPrinter, plain_line

    run = TrainingRun(private_tmp / "run", delay=0.002)
    out = io.StringIO()
    run.engine.add_listener(HeadlessPrinter(run.engine, out))
    try:
        client = RunClient(run.server.record.socket, kind="send")
        event = client.command(Stop("\x1b]0;owned\x07\x1b[2J\nfake line"))["event"]
        client.close()
        run.thread.join(10)
    finally:
        run.stop()
    line = plain_line(Event.from_dict(event))
    assert "\x1b" not in line and "\n" not in line and "\\x1b]0;owned\\x07\\x1b[2J\\nfake line" in line
    printed = [text for text in capsys.readouterr().err.splitlines() if "stop at step" in text]  # a stop: stderr
    assert printed and "\x1b" not in printed[0] and "fake line" in printed[0]
