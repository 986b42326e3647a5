"""Where the store is and how to log in to it."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from workers.settings import Section, default_data_dir

#: Addresses that only this machine reaches.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def serve_password_file() -> Path:
    """Where `sentryml store serve` keeps the password it generated (owner-only file)."""
    return default_data_dir() / "store-password"


def read_password_file(path: Path) -> str:
    """The first line of a password file ("" when it is empty)."""
    try:
        lines = path.read_text().strip().splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read the store password file {path}: {exc}") from exc
    return lines[0].strip() if lines else ""


class StoreSettings(Section):
    url: str = Field(
        default_factory=lambda: f"chdb://{default_data_dir() / 'chdb'}",
        description="chdb:///path (embedded) or http(s)://host:8123 (ClickHouse server)",
    )
    database: str = "sentryml"
    username: str = "default"
    password: SecretStr | None = None
    password_file: Path | None = Field(
        None,
        description="File holding the password (e.g. the one `sentryml store serve` writes); "
        "read when no password is given",
    )

    def secret(self) -> str:
        """The password: ``password``, else ``password_file``'s first line, else the file that
        `sentryml store serve` generated, for a store on this machine (loopback URL)."""
        if self.password is not None:
            return self.password.get_secret_value()
        path = self.password_file
        if path is None:
            path = serve_password_file()
            if urlsplit(self.url).hostname not in LOOPBACK_HOSTS or not path.is_file():
                return ""
        return read_password_file(path)

    @field_validator("database")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not value.replace("_", "").isalnum():
            raise ValueError("database must be letters, digits and underscores")
        return value
