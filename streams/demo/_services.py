"""The demo's processes and waits: start each service, stop all of them (also on Ctrl-C or failure), one demo per folder."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.exceptions import SentryMLError
from streams.console import console
from workers.retry import poll_until

if TYPE_CHECKING:
    pass


REPO = Path(__file__).resolve().parents[2]


class DemoFailed(SentryMLError):
    """A stage of the demo did not happen; the message says which and where to look."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process_group(proc: subprocess.Popen[Any], grace_s: float) -> None:
    """SIGTERM the process group of ``proc`` (started with ``start_new_session``); SIGKILL
    it if it has not exited after ``grace_s`` seconds."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


class Services:
    """Processes the demo started; all stopped (reverse order) on exit."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.stops: list[Callable[[], None]] = []
        self.env: dict[str, str] = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def script(self, name: str, *args: str, port: int, folder: str | None = None) -> Path:
        """Start a service script (kafka_local / llm_local) in ``out_dir/folder`` (default:
        its name) and register its stop; returns the folder."""
        data = self.out_dir / (folder or name)
        cmd = [sys.executable, str(REPO / "scripts" / f"{name}.py")]
        subprocess.run([*cmd, "start", "--port", str(port), "--dir", str(data), *args], check=True)

        def stop() -> None:
            subprocess.run([*cmd, "stop", "--dir", str(data)], check=False, capture_output=True)

        self.stops.append(stop)
        return data

    def process(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.out_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**self.env, **env},
            start_new_session=True,
        )

        def stop() -> None:
            stop_process_group(proc, grace_s=30)
            log.close()

        self.stops.append(stop)
        return proc

    def close(self) -> None:
        for stop in reversed(self.stops):
            stop()
        self.stops.clear()


def _claim(out_dir: Path) -> Any:
    """Hold ``out_dir/demo.lock`` for this process (the kernel frees it however we exit), or
    refuse: a second demo in the same folder would overwrite the first's pid files, and
    the first could then not stop its own servers."""
    import fcntl

    out_dir.mkdir(parents=True, exist_ok=True)
    lock = open(out_dir / "demo.lock", "a+")  # noqa: SIM115 - held until the demo ends
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "?"
        lock.close()
        raise DemoFailed(
            f"another demo is running in {out_dir} (pid {holder}); wait for it to end or stop "
            "it (Ctrl-C), or give this one another folder (--out)"
        ) from None
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


@contextmanager
def services(out_dir: Path) -> Iterator[Services]:
    lock = _claim(out_dir)
    svc = Services(out_dir)
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        yield svc
    finally:
        console.print("[dim]stopping the demo's processes ...[/]")
        svc.close()
        signal.signal(signal.SIGTERM, previous)
        lock.close()


def wait_until(what: str, condition: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    with console.status(f"waiting: {what}"):
        try:
            return poll_until(condition, timeout=timeout, interval=every, what=what)
        except TimeoutError:
            raise DemoFailed(
                f"timed out after {timeout:.0f}s waiting for: {what} (see the demo's logs)"
            ) from None


def _stage(n: int, text: str) -> None:
    console.rule(f"[bold cyan]{n}. {text}")


def _run(coro: Any) -> Any:
    import asyncio

    return asyncio.run(coro)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _try_open(open_store: Any, url: str, login: dict[str, str]) -> Any:
    from pydantic import SecretStr

    from workers.store import StoreSettings
    from workers.store.exceptions import StoreError

    try:
        return open_store(
            StoreSettings(
                url=url,
                username=login["SENTRYML_STORE_USERNAME"],
                password=SecretStr(login["SENTRYML_STORE_PASSWORD"]),
            )
        )
    except StoreError:
        return None
