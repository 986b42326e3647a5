"""LiteLLM in one line: a ``CustomLogger`` that publishes every completion to SentryML.

SDK users::

    import litellm
    from streams.integrations.litellm_callback import SentryMLLogger
    litellm.callbacks = [SentryMLLogger(base_model="llama-3-8b")]

Proxy users put a two-line file beside the proxy's ``config.yaml``
(``sentryml_callback.py``: ``from streams.integrations.litellm_callback import
SentryMLLogger`` and ``proxy_handler_instance = SentryMLLogger()``) and name it under
``litellm_settings: callbacks: sentryml_callback.proxy_handler_instance``.

Each successful chat completion's *standard logging payload* (LiteLLM's documented
``kwargs["standard_logging_object"]``) becomes one :class:`~schemas.events.InferenceLog`:
its id is the ``request_id``, its model group (else model) the ``base_model``, its
messages, the first choice's text, the token counts and ``endTime - startTime`` as the
latency; the adapter comes from the request's metadata key ``sentryml_adapter_version``
(else the logger's ``adapter_version``) and the end user becomes the ``tenant``. Events go
through the non-blocking :class:`~streams.producer.InferenceLogger` (librdkafka batches
them), so the callback returns at once and never raises into LiteLLM; what it cannot map
is counted in :attr:`SentryMLLogger.errors`.

LiteLLM fetches a model price map from the network when it is first imported; importing
this module first sets ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (unless it is set) so that
LiteLLM uses its bundled copy and nothing is fetched.
"""

from __future__ import annotations

import logging
import os
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from litellm.integrations.custom_logger import CustomLogger

from streams.integrations._common import chat_messages, content_text
from streams.producer import InferenceLogger

log = logging.getLogger(__name__)

#: Request metadata key naming the adapter that served the call.
ADAPTER_METADATA_KEY = "sentryml_adapter_version"
_CHAT_CALLS = frozenset({"completion", "acompletion"})


class SentryMLLogger(CustomLogger):  # type: ignore[misc]
    """Publish LiteLLM's standard logging payload of each chat completion to SentryML."""

    def __init__(
        self,
        logger: InferenceLogger | None = None,
        *,
        base_model: str | None = None,
        adapter_version: str = "none",
        app: str | None = "litellm",
    ) -> None:
        super().__init__()
        self.logger = logger if logger is not None else InferenceLogger()  # it has a __len__
        self.base_model = base_model
        self.adapter_version = adapter_version
        self.app = app
        self.logged = 0
        self.skipped = 0
        self.errors = 0

    def log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self.publish(kwargs.get("standard_logging_object"), kwargs)

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self.publish(kwargs.get("standard_logging_object"), kwargs)  # never blocks: no await needed

    def publish(self, payload: dict[str, Any] | None, kwargs: dict[str, Any] | None = None) -> bool:
        """Queue the event of one standard logging payload; True when it was queued.

        ``kwargs`` is the callback's own: the SDK keeps a request's ``metadata`` in
        ``kwargs["litellm_params"]`` and its ``user`` at the top; the proxy puts them in the
        payload (``requester_metadata``, ``end_user``). Both are read."""
        kwargs = kwargs or {}
        try:
            if not payload or payload.get("call_type") not in _CHAT_CALLS:
                self.skipped += 1
                return False
            requested = (payload.get("metadata") or {}).get("requester_metadata") or {}
            sdk = (kwargs.get("litellm_params") or {}).get("metadata") or {}
            adapter = requested.get(ADAPTER_METADATA_KEY) or sdk.get(ADAPTER_METADATA_KEY)
            response = payload.get("response") or {}
            choices = response.get("choices") or [{}]
            completion = content_text((choices[0].get("message") or {}).get("content"))
            messages = payload.get("messages")
            start, end = payload.get("startTime"), payload.get("endTime")
            fields: dict[str, Any] = {
                "request_id": str(payload["id"]),
                "base_model": self.base_model
                or str(payload.get("model_group") or payload.get("model") or "unknown"),
                "adapter_version": str(adapter or self.adapter_version),
                "completion": completion,
                "prompt_tokens": payload.get("prompt_tokens"),
                "completion_tokens": payload.get("completion_tokens"),
                "latency_ms": (end - start) * 1000 if start and end and end >= start else None,
                "app": self.app,
                "tenant": payload.get("end_user") or kwargs.get("user") or None,
            }
            if isinstance(messages, str):
                fields["prompt"] = messages
            else:
                fields["messages"] = chat_messages(messages)
            queued = self.logger.log(**fields)
        except Exception:  # monitoring must never fail LiteLLM's call
            self.errors += 1
            log.debug("sentryml: could not map a LiteLLM logging payload", exc_info=True)
            return False
        if queued:
            self.logged += 1
        else:
            self.errors += 1
        return queued
