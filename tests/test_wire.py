"""The run socket, in process: the wire format, the server against bad peers, an attached monitor (Pilot)."""

from __future__ import annotations

import json
import os
import random
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lrwatch.live import peer
from lrwatch.live.client import RemoteRunSource, RunClient
from lrwatch.live.host import serve
from lrwatch.live.server import RunServer
from lrwatch.live.sockets import LiveRecord, socket_dir
from lrwatch.protocol.commands import CommandError, EditParams, Pause, Race, RaceEnd, Stop, Switch, command_from_wire
from lrwatch.protocol.wire import (
    MAX_CLIENT_LINE,
    VERSION,
    LineBuffer,
    WireError,
    decode,
    encode,
    rows_message,
    unpack_rows,
)
from lrwatch.run.divergence import DivergencePolicy
from lrwatch.run.engine import Engine
from lrwatch.schedule.timeline import Timeline
from tests.conftest import FakeOptimizer


# -- the format -----------------------------------------------------------------------------
def test_messages_are_strict_json_lines_and_round_trip_non_finite_values() -> None:
    line = encode({"type": "status", "status": {"lr": float("nan"), "loss": float("inf"), "x": [float("-inf")]}})
    assert line.endswith(b"\n") and b"NaN" not in line and b"Infinity" not in line
    assert decode(line.rstrip()) == {"type": "status", "status": {"lr": "nan", "loss": "inf", "x": ["-inf"]}}
    for bad in (b"NaN", b"[1]", b'{"type": 3}', b"\xff\xfe", b'{"a": 1}', b'{"type": "x", "v": NaN}'):
        with pytest.raises(WireError):
            decode(bad)


def test_rows_travel_exactly() -> None:
    rng = np.random.default_rng(0)
    steps = np.arange(5, 1005, dtype=np.int64)
    epochs, lrs = steps / 7.0, rng.random(1000)
    losses = np.where(rng.random(1000) < 0.01, np.nan, rng.normal(size=1000))
    start, *columns = unpack_rows(decode(encode(rows_message(5, steps, epochs, lrs, losses)).rstrip()))
    assert start == 5
    for sent, got in zip((steps, epochs, lrs, losses), columns, strict=True):
        assert got.dtype == sent.dtype and np.array_equal(got, sent, equal_nan=True)


def test_line_buffer_joins_chunks_and_refuses_long_lines() -> None:
    buffer = LineBuffer(16)
    assert buffer.feed(b'{"a"') == [] and buffer.feed(b':1}\n{"b":2}\n{') == [b'{"a":1}', b'{"b":2}']
    with pytest.raises(WireError):
        buffer.feed(b"x" * 20)


@pytest.mark.parametrize(
    "data",
    [
        None, 3, {"command": 3}, {"command": "frob"}, {"command": "switch"}, {"command": "switch", "spec": 5},
        {"command": "switch", "spec": "exp", "anchor": "middle"}, {"command": "edit", "params": {"T_max": True}},
        {"command": "edit", "params": [["T_max"]]}, {"command": "pause", "extra": 1}, {"command": "stop", "reason": 1},
        {"command": "race", "specs": "exp"}, {"command": "race", "specs": [1]}, {"command": "race", "specs": ["x"] * 9},
        {"command": "race", "steps": 0}, {"command": "race", "steps": True}, {"command": "race", "keep": "worst"},
        {"command": "race-end", "keep": "1"}, {"command": "race-end", "keep": 99}, {"command": "race-end", "keep": -5},
    ],
)  # fmt: skip
def test_malformed_commands_are_refused_in_one_line(data: object) -> None:
    with pytest.raises(CommandError) as info:
        command_from_wire(data)
    assert "\n" not in str(info.value)


def test_well_formed_commands_parse() -> None:
    assert command_from_wire({"command": "switch", "spec": "exp", "anchor": "base"}) == Switch("exp", "base")
    assert command_from_wire({"command": "edit", "params": {"T_max": 30}}) == EditParams((("T_max", 30.0),))
    assert command_from_wire(json.loads(json.dumps(EditParams((("T_max", 3.0),)).to_dict()))) == EditParams(
        (("T_max", 3.0),)
    )
    assert command_from_wire({"command": "pause"}) == Pause()
    race = Race(("exp:gamma=0.9",), 500, "best")
    assert command_from_wire(json.loads(json.dumps(race.to_dict()))) == race
    assert command_from_wire({"command": "race"}) == Race() and command_from_wire({"command": "race-end"}) == RaceEnd()


# -- a served run ---------------------------------------------------------------------------
class TrainingRun:
    """An engine trained by a thread (a sleep per step), served on its socket, like a real run."""

    def __init__(self, run_dir: Path, steps: int = 1_000_000, delay: float = 0.0005, **engine_args) -> None:
        timeline = Timeline.start("cosine", lr=0.1, steps_per_epoch=100, total_steps=steps)
        self.engine = Engine(FakeOptimizer(0.1), timeline, run_dir=run_dir, **engine_args)
        self.server = serve(self.engine)
        self.engine.begin()
        self.steps, self.delay = steps, delay
        self.thread = threading.Thread(target=self._train, daemon=True)
        self.thread.start()

    def _train(self) -> None:
        for i in range(self.steps):
            if not self.engine.step(self.loss(i)):
                break
            if i % 100 == 99:
                self.engine.end_epoch(val_loss=1.0 / (i + 1), val_acc=0.5)
            time.sleep(self.delay)
        self.engine.finish()

    def loss(self, i: int) -> float:
        return 1.0 / (1 + i)

    def stop(self) -> None:
        if self.engine.state in ("running", "paused"):
            self.engine.submit(Stop("test"))
        self.thread.join(10)


@pytest.fixture
def run(tmp_path: Path):
    training = TrainingRun(tmp_path)
    yield training
    training.stop()


def _connect_raw(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(path)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return data + b"<timeout>"
    except OSError:
        pass
    return data


def test_socket_is_private_and_recorded(run: TrainingRun, tmp_path: Path) -> None:
    path = Path(run.server.record.socket)
    assert path.parent == socket_dir() and oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700" and len(str(path)) <= 107
    live = json.loads((tmp_path / "live.json").read_text())
    assert live["socket"] == str(path) and live["pid"] == os.getpid()
    run.stop()
    assert not path.exists() and not (tmp_path / "live.json").exists()


def test_random_bytes_and_bad_frames_change_nothing(run: TrainingRun, tmp_path: Path) -> None:
    """A thousand garbage peers: each gets at most one error line (or nothing), the run goes on untouched."""
    rng = random.Random(0)
    frames = [
        b"\n", b"{}\n", b"[]\n", b'{"type":"command"}\n', b'{"type":"status"}\n', b"NaN\n",
        b'{"type":"hello","version":99}\n',
        b'{"type":"hello","version":%d}\n{"type":"command","command":{"command":1}}\n' % VERSION,
        b'{"type":"hello","version":%d}\n{"type":"frob"}\n' % VERSION, b"x" * (MAX_CLIENT_LINE + 10),
        b'{"type":"hello","version":1}\n',  # an older client: refused in one line
    ]  # fmt: skip
    payloads = frames + [rng.randbytes(rng.randint(1, 300)) for _ in range(1000)]
    events_before = len(run.engine.events_since(0))
    for payload in payloads:
        sock = _connect_raw(run.server.record.socket)
        sock.settimeout(2)
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server dropped us mid-send: allowed
        reply = _read_all(sock)
        sock.close()
        lines = [line for line in reply.split(b"\n") if line]
        errors = [decode(line) for line in lines if b'"error"' in line]
        assert len(errors) <= 1 and b"<timeout>" not in reply, (payload[:80], reply[:200])
        assert b"Traceback" not in reply
    assert run.engine.state == "running" and run.thread.is_alive()
    kinds = {e.kind for e in run.engine.events_since(events_before)}
    assert kinds <= {"epoch"}, kinds  # nothing from garbage reached the run: no rejected, no warning
    client = RunClient(run.server.record.socket)
    assert client.status().state == "running"
    client.close()
    rows = (tmp_path / "metrics.csv").read_text().splitlines()[1:]
    steps = [int(r.split(",")[0]) for r in rows if r.split(",")[3]]
    assert steps == list(range(len(steps)))  # only training wrote there


def test_another_uid_gets_no_reply_at_all(tmp_path: Path) -> None:
    """SO_PEERCRED: a peer of another uid is closed before a single byte (here the socket is world-open on
    purpose, so that only the uid check stands between; lrwatch's own directory is 0700)."""
    if os.getuid() != 0:
        pytest.skip("needs root to connect as another uid")
    open_dir = Path(tempfile.mkdtemp(prefix="lrwatch-uidtest-"))
    open_dir.chmod(0o777)
    timeline = Timeline.start("cosine", lr=0.1, steps_per_epoch=10, total_steps=100)
    engine = Engine(FakeOptimizer(0.1), timeline, run_dir=tmp_path)
    record = LiveRecord(os.getpid(), str(open_dir / "s.sock"), str(tmp_path), time.time())
    server = RunServer(engine, record)
    server.start()
    os.chmod(record.socket, 0o666)
    try:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the other user: a forked child that drops to uid 65534 before it connects
            try:
                os.setgid(65534)
                os.setuid(65534)
                sock = _connect_raw(record.socket)
                sock.sendall(encode({"type": "hello", "version": 1}))
                os.write(write_end, b"reply:" + sock.recv(100))
            except (ConnectionResetError, BrokenPipeError):  # closed before or after our hello: no reply either way
                os.write(write_end, b"reply:")
            except BaseException as exc:
                os.write(write_end, f"failed: {exc!r}".encode())
            os._exit(0)
        os.close(write_end)
        os.waitpid(pid, 0)
        with os.fdopen(read_end, "rb") as f:
            said = f.read()
        assert said == b"reply:", said  # connected, closed, nothing said
        mine = RunClient(record.socket)
        assert mine.hello["type"] == "hello"
        mine.close()
    finally:
        server.close()
        engine.finish()


def test_a_client_that_stops_reading_is_dropped_and_training_goes_on(
    run: TrainingRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peer, "STALL_SECONDS", 0.5)
    sock = _connect_raw(run.server.record.socket)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(encode({"type": "hello", "version": VERSION, "client": "monitor"}) + encode({"type": "subscribe"}))
    deadline = time.monotonic() + 30
    subscribed = lambda: any(c.subscribed for c in run.server.clients)  # noqa: E731
    while not subscribed():
        assert time.monotonic() < deadline, "never subscribed"
        time.sleep(0.02)
    while subscribed():
        assert time.monotonic() < deadline, "a stalled client was never dropped"
        time.sleep(0.1)
    step = run.engine.step_index
    time.sleep(0.3)
    assert run.engine.step_index > step and run.engine.state == "running"
    sock.close()


def test_commands_answer_with_their_event_and_reach_every_attached_client(run: TrainingRun) -> None:
    a = RemoteRunSource.of_path(run.server.record.socket).start()
    b = RemoteRunSource.of_path(run.server.record.socket).start()
    assert a.ready.wait(10) and b.ready.wait(10)
    sender = RunClient(run.server.record.socket, kind="send")
    answer = sender.command(Switch("exp:gamma=0.5"))
    assert answer["event"]["event"] == "switch" and answer["event"]["spec"] == "exp:gamma=0.5"
    assert sender.command(Switch("cosine:T_max=-1"))["event"]["event"] == "rejected"
    assert sender.command(Pause())["event"]["event"] == "pause"
    assert sender.command(Pause())["event"]["event"] == "rejected"  # already paused: said, not ignored
    deadline = time.monotonic() + 1.0  # each monitor sees the others' switches within a second
    while not all(str(s.timeline.segments[-1].spec) == "exp:gamma=0.5" for s in (a, b)):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert a.status().clients == 2 and a.status().state == "paused"
    sender.command(Stop("test"))
    sender.close()
    assert a.closed.wait(10) and b.closed.wait(10)
    for source in (a, b):
        assert source.status().state == "stopped" and source.events_since(0)[-1].kind == "finish"
        for name in ("step", "lr", "loss"):
            assert np.array_equal(source.history.column(name), run.engine.history.column(name))
        assert [e.to_dict() for e in source.events_since(0)] == [e.to_dict() for e in run.engine.events_since(0)]


def test_divergence_without_a_monitor_stops_and_with_one_pauses(tmp_path: Path) -> None:
    policy = DivergencePolicy(action="auto")
    for watched in (False, True):
        timeline = Timeline.start("cosine", lr=0.1, steps_per_epoch=10, total_steps=1000)
        engine = Engine(FakeOptimizer(0.1), timeline, divergence=policy)
        engine.monitors = int(watched)
        engine.begin()
        for _ in range(30):
            engine.step(1.0)
        done: list[bool] = []
        threading.Thread(target=lambda e=engine, d=done: d.append(e.step(float("nan"))), daemon=True).start()
        time.sleep(0.5)
        if watched:
            assert engine.state == "paused" and not done  # waits for the monitor's answer
            engine.monitors = 0  # the monitor left: a run nobody watches does not wait
        deadline = time.monotonic() + 5
        while not done:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert done == [False] and engine.state == "stopping"
        assert engine.stop_reason.startswith("divergence")
