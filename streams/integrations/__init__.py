"""Ways in for producers that already use something: the OpenAI SDK (:func:`instrument`) and
LiteLLM (:mod:`streams.integrations.litellm_callback`, imported only by LiteLLM users)."""

from __future__ import annotations

from streams.integrations.openai_client import instrument

__all__ = ["instrument"]
