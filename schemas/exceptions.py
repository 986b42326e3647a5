"""Errors shared by every SentryML package.

All SentryML errors derive from :class:`SentryMLError`, so an operator's wrapper can catch
one type. Each package adds its own leaves in its own ``exceptions.py``.
"""

from __future__ import annotations


class SentryMLError(Exception):
    """Root of every error SentryML raises on purpose."""


class InvalidEvent(SentryMLError, ValueError):
    """An event failed validation: bad JSON, wrong schema, too large, or out of range.

    The message names the offending field. Producers should fix the event at the source;
    the stream worker routes such events to the DLQ with this message in the headers.
    """

    def __init__(self, message: str, *, reason: str = "schema") -> None:
        super().__init__(message)
        #: short machine-readable class of the failure: ``json``, ``schema``, ``size``,
        #: ``encoding``, ``type_tag``, ``timestamp``
        self.reason = reason
