"""Golden-set errors: every one a :class:`schemas.exceptions.SentryMLError`."""

from __future__ import annotations

from schemas.exceptions import SentryMLError


class GoldenError(SentryMLError):
    """Base of the golden-set errors."""


class InvalidGoldenSet(GoldenError, ValueError):
    """A golden-set file is malformed. The message names the file, line, case id and field.

    Fix the case and check the file with ``sentryml golden validate FILE``.
    """


class ModelUnavailable(GoldenError):
    """No case could be generated: the model endpoint is down or misconfigured.

    Nothing is stored and nobody is paged (a golden run measures behaviour, not uptime);
    check ``--base-url`` / ``SENTRYML_GOLDEN_BASE_URL``, the model name and the server.
    """
