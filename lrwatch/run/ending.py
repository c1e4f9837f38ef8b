"""How a run ends, in the training thread: a stop at a step boundary (a command, a signal, the cooldown's
end), an interrupted step (Ctrl+C), the run's last events and the run directory closed; and running the
loop itself, where any exception ends the run in state ``error`` with everything logged on disk."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Any

from lrwatch.protocol.events import ENDED_STATES


class Ending:
    """Mixed into :class:`~lrwatch.run.engine.Engine`, whose attributes it reads."""

    state: str
    stop_reason: str | None
    error: str | None
    completed: bool
    log: Any
    control: Any

    def interrupted(self) -> None:
        """The loop was interrupted mid-step (Ctrl+C): log the stop, without a checkpoint of a half step."""
        self.stop_now("KeyboardInterrupt", checkpoint=False)

    def stop_now(self, reason: str, *, checkpoint: bool = True) -> None:
        """Stop at this step boundary: log ``stop`` and (``checkpoint``) save one, so ``--resume`` goes on here."""
        if self.state in ("running", "paused"):
            self.state = "stopping"
            self.stop_reason = reason
            self.emit("stop", reason=reason)
            if checkpoint:
                self.checkpoint("stop")  # so that --resume continues exactly here

    def finish(self, error: BaseException | None = None) -> None:
        """Log how the run ended and close the run directory; safe to call twice."""
        if self.state in ENDED_STATES:
            return
        if error is not None:
            self.error = "".join(traceback.format_exception_only(type(error), error)).strip()
            self.emit("error", message=self.error, traceback="".join(traceback.format_exception(error)))
            self.state = "error"
        elif self.state == "stopping":
            self.state = "finished" if self.completed else "stopped"
        else:
            self.state = "finished"
        writer = self.log.writer
        if writer is not None:
            writer.flush()  # a disk that has room again takes what waited
        if writer is not None and writer.trouble is not None:
            self.warn(f"{writer.backlog:,} bytes of rows and events are not on disk ({writer.trouble})")
        self.emit("finish", status=self.state)
        self.log.close()
        self.control.remove()

    def run(self, train: Callable[[Any], None]) -> None:
        """Run ``train(self)`` here; any exception ends the run in state ``error`` (not re-raised)."""
        try:
            train(self)
        except KeyboardInterrupt:
            self.interrupted()
            self.finish()
            raise
        except BaseException as exc:  # the app stays up and shows it; the run dir is closed below
            self.finish(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            self.finish()

    def start_thread(self, train: Callable[[Any], None]) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(train,), name="lrwatch-train", daemon=True)
        thread.start()
        return thread
