"""Errors shared by every SentryML package.

All SentryML errors derive from :class:`SentryMLError`, so an operator's wrapper can catch
one type. Each package adds its own leaves beside its code; the whole tree::

    SentryMLError
    ├── InvalidEvent (ValueError)                 schemas: bad JSON, schema, size, timestamp
    ├── WorkerError                               workers/exceptions.py
    │   ├── JudgeError → JudgeUnavailable, JudgeRejected
    │   ├── EmbedderUnavailable
    │   ├── TrainingDataError (ValueError)
    │   ├── BaselineError (ValueError)
    │   ├── RetriesExhausted                      workers/retry.py
    │   └── OtlpDecodeError (ValueError)          workers/otlp: not an OTLP export request
    ├── StoreError                                workers/store/exceptions.py
    │   ├── StoreUnavailable, QueryFailed → StoreMisconfigured
    │   ├── InvalidStoreURL (ValueError)
    │   └── ClickHouseError                       the store endpoint's answers
    ├── GoldenError → InvalidGoldenSet (ValueError), ModelUnavailable   workers/golden
    ├── NotifyError                               workers/alerts: a webhook or topic refused
    ├── TrainerError                              trainer/exceptions.py
    │   ├── DemoModelUnavailable, InvalidTrainConfig (ValueError), DatasetTooSmall
    │   └── QuantizationUnavailable, AdapterNotFound
    ├── StreamsError → BrokerUnavailable, Fenced  streams/exceptions.py
    └── DemoFailed                                streams/demo/

``tests/test_layers.py`` checks that every exception class defined in the project is in
this tree (derives from :class:`SentryMLError`).
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
