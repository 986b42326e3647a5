"""Who may use the chDB endpoint: its users, and the checks every request passes first.

Every user has a password (no anonymous or passwordless access); a reader is limited to
ClickHouse's ``readonly = 1``. Credentials come from HTTP basic auth,
``X-ClickHouse-User``/``X-ClickHouse-Key`` or the ``user``/``password`` parameters, and are
checked before the request is parsed; a request with an ``Origin`` header (a web page) is
refused unless that origin is allowed.
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from workers.store._server_errors import ClickHouseError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.@-]*$")


@dataclass(frozen=True)
class ServeUser:
    """A user of the endpoint: a writer, or a reader limited to ClickHouse ``readonly = 1``.

    Every user has a password: the endpoint has no anonymous or passwordless access.
    """

    name: str
    password: str = field(repr=False)
    readonly: bool = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(
                f"user name {self.name!r} must start with a letter or _ and hold only "
                "letters, digits, '_', '.', '@', '-'"
            )
        if not self.password:
            raise ValueError(
                f"user {self.name!r} has no password: give NAME:PASSWORD (every user of the "
                "endpoint needs one)"
            )


def parse_user(spec: str, readonly: bool = False) -> ServeUser:
    """``"NAME:PASSWORD"`` as a :class:`ServeUser` (a missing password is an error).

    >>> parse_user("reader:s3cret", readonly=True)
    ServeUser(name='reader', readonly=True)
    """
    name, _, password = spec.partition(":")
    return ServeUser(name.strip(), password, readonly)


def check_origin(hdrs: Mapping[str, str], allowed_origins: frozenset[str]) -> None:
    """Refuse a request from a web page (an ``Origin`` header) unless its origin is allowed."""
    origin = hdrs.get("origin")
    if origin is not None and origin.rstrip("/") not in allowed_origins:
        raise ClickHouseError(
            497,
            "ACCESS_DENIED",
            f"requests from the web origin {origin[:100]!r} are refused; allow it with "
            "`sentryml store serve --allow-origin ORIGIN`",
        )


def authenticate(
    hdrs: Mapping[str, str], params: Mapping[str, str], users: Mapping[str, ServeUser]
) -> ServeUser:
    """The user a request's credentials name, or :class:`ClickHouseError` (no anonymous user)."""
    name, password = "", ""
    auth = hdrs.get("authorization", "")
    if auth.lower().startswith("basic "):
        try:
            name, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
        except ValueError as exc:
            raise ClickHouseError(
                516, "AUTHENTICATION_FAILED", "malformed basic auth header"
            ) from exc
    elif auth:
        raise ClickHouseError(
            516, "AUTHENTICATION_FAILED", "only basic auth and X-ClickHouse-User are supported"
        )
    elif "x-clickhouse-user" in hdrs:
        name, password = hdrs["x-clickhouse-user"], hdrs.get("x-clickhouse-key", "")
    elif "user" in params:
        name, password = params["user"], params.get("password", "")
    if not name:
        raise ClickHouseError(
            194,
            "REQUIRED_PASSWORD",
            "this endpoint needs credentials: HTTP basic auth or the X-ClickHouse-User / "
            "X-ClickHouse-Key headers (SENTRYML_STORE_USERNAME / SENTRYML_STORE_PASSWORD)",
        )
    user = users.get(name)
    if user is None or not hmac.compare_digest(user.password.encode(), password.encode()):
        raise ClickHouseError(
            516,
            "AUTHENTICATION_FAILED",
            f"{name}: Authentication failed: password is incorrect, or "
            "there is no user with such name",
        )
    return user
