"""Run a real Faust app (from ``streams.app.create_app``) in a background thread for a test.

The app talks to the real local broker; its store is the test's own chDB database (same
process, so the same chDB folder). Stopping is graceful (``app.stop()``), like SIGTERM.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import faust


class AppThread:
    def __init__(self, app: faust.App) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="faust-app", daemon=True)
        self._started = threading.Event()
        self.error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.app.start())
        except BaseException as exc:  # surfaced to the test by start()
            self.error = exc
        finally:
            self._started.set()
        if self.error is None:
            self.loop.run_forever()

    def start(self, timeout: float = 60.0) -> None:
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("Faust app did not start")
        if self.error is not None:
            raise self.error

    def call(self, coro: Any, timeout: float = 120.0) -> Any:
        """Run a coroutine on the app's loop (e.g. one drift evaluation) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, timeout: float = 60.0) -> None:
        try:
            self.call(self.app.stop(), timeout)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)


@contextmanager
def running(app: faust.App) -> Iterator[AppThread]:
    runner = AppThread(app)
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()
