"""Base classes of every settings section, the data folder, and the printable view."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """Where embedded state lives when nothing is configured (XDG data dir)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "sentryml"


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EnvSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SENTRYML_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        frozen=True,
        extra="ignore",
    )


def redacted(settings: BaseModel) -> dict[str, Any]:
    """The settings as a plain dict with every secret shown as ``'**********'``."""
    return settings.model_dump(mode="json")
