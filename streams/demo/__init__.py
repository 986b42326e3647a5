"""The main job end to end on one machine (`sentryml demo`, `make demo`); see :mod:`._story`."""

from __future__ import annotations

from streams.console import console
from streams.demo._services import REPO, DemoFailed, services, stop_process_group
from streams.demo._story import DemoConfig, run_demo

__all__ = [
    "REPO",
    "DemoConfig",
    "DemoFailed",
    "console",
    "run_demo",
    "services",
    "stop_process_group",
]
