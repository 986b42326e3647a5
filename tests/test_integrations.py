"""The OpenAI SDK wrapper and the LiteLLM callback, on real parts: the official ``openai``
and ``litellm`` packages calling the local llama.cpp server, events through the real broker.
"""

from __future__ import annotations

import asyncio
import uuid

import openai
import pytest

from schemas.events import InferenceLog, decode_event
from schemas.topics import Topics
from streams.config import ProducerSettings
from streams.integrations import instrument
from streams.producer import InferenceLogger
from streams.topics import create_topics
from tests.conftest import wait_for
from tests.test_producer import _consume_all
from workers.kafka import KafkaSettings

pytestmark = pytest.mark.kafka

QUESTION = [
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "What colour is the sky?"},
]


def _events(kafka: KafkaSettings, n: int) -> list[InferenceLog]:
    messages = _consume_all(kafka, Topics(kafka.topic_prefix).inference_logs, n, timeout=60)
    return [decode_event(m.value(), InferenceLog) for m in messages]


@pytest.fixture
def own_kafka(kafka: KafkaSettings) -> KafkaSettings:
    """A topic prefix of its own, so each test reads only its events."""
    return kafka.model_copy(update={"topic_prefix": f"t{uuid.uuid4().hex[:8]}."})


def test_openai_sync_client_logs_plain_and_streamed_completions(
    llm_server: dict[str, str], own_kafka: KafkaSettings
) -> None:
    create_topics(own_kafka)
    with InferenceLogger(ProducerSettings(kafka=own_kafka)) as logger:
        client = instrument(
            openai.OpenAI(base_url=llm_server["base_url"], api_key="sk-local"),
            logger,
            base_model="smollm2",
            adapter_version="v3",
            app="support-bot",
        )
        assert instrument(client, logger) is client  # a second call keeps one wrapper
        plain = client.chat.completions.create(
            model=llm_server["model"], messages=QUESTION, max_tokens=8, temperature=0
        )
        stream = client.chat.completions.create(
            model=llm_server["model"], messages=QUESTION, max_tokens=8, temperature=0,
            stream=True, stream_options={"include_usage": True},
        )  # fmt: skip
        chunks = list(stream)
        streamed = "".join(
            c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].delta
        )
    assert client._sentryml.logged == 2 and client._sentryml.errors == 0
    events = {e.request_id: e for e in _events(own_kafka, 2)}
    assert len(events) == 2
    first = events[plain.id]
    assert first.completion == plain.choices[0].message.content
    assert (first.base_model, first.adapter_version, first.app) == ("smollm2", "v3", "support-bot")
    assert [(m.role, m.content) for m in first.messages or []] == [
        ("system", "Answer in one word."),
        ("user", "What colour is the sky?"),
    ]
    assert plain.usage is not None
    assert first.prompt_tokens == plain.usage.prompt_tokens
    assert first.completion_tokens == plain.usage.completion_tokens
    assert first.latency_ms is not None and first.latency_ms > 0
    second = events[chunks[0].id]
    assert second.completion == streamed and streamed
    # The usage chunk's count when the server sends one (llama-cpp-python's does not).
    usage = next((c.usage for c in chunks if c.usage is not None), None)
    assert second.completion_tokens == (usage.completion_tokens if usage else None)


def test_openai_async_client_logs_plain_and_streamed_completions(
    llm_server: dict[str, str], own_kafka: KafkaSettings
) -> None:
    create_topics(own_kafka)

    async def calls(client: openai.AsyncOpenAI) -> tuple[str, str]:
        plain = await client.chat.completions.create(
            model=llm_server["model"], messages=QUESTION, max_tokens=8, temperature=0
        )
        stream = await client.chat.completions.create(
            model=llm_server["model"], messages=QUESTION, max_tokens=8, temperature=0,
            stream=True,
        )  # fmt: skip
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        return plain.choices[0].message.content or "", "".join(parts)

    with InferenceLogger(ProducerSettings(kafka=own_kafka)) as logger:
        client = instrument(
            openai.AsyncOpenAI(base_url=llm_server["base_url"], api_key="sk-local"), logger
        )
        plain, streamed = asyncio.run(calls(client))
    assert client._sentryml.logged == 2
    events = _events(own_kafka, 2)
    assert sorted(e.completion for e in events) == sorted([plain, streamed])
    # Without base_model the events carry the model the server answered with.
    assert {e.base_model for e in events} == {llm_server["model"]}


def test_messages_map_onto_the_event_roles_and_text() -> None:
    """OpenAI's newer ``developer`` role is the event's ``system``; multi-part content
    keeps its text parts; SDK message objects map like dicts."""
    from openai.types.chat import ChatCompletionMessage

    from streams.integrations._common import chat_messages

    raw = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]},
        ChatCompletionMessage(role="assistant", content=None),
    ]
    assert chat_messages(raw) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": ""},
    ]


def test_the_callers_errors_pass_through_and_monitoring_errors_never_do(
    llm_server: dict[str, str], own_kafka: KafkaSettings
) -> None:
    create_topics(own_kafka)
    with InferenceLogger(ProducerSettings(kafka=own_kafka), strict=True) as strict:
        # The API's own failure reaches the caller as the SDK raised it; nothing is logged.
        dead = instrument(
            openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="x", max_retries=0), strict
        )
        with pytest.raises(openai.APIConnectionError):
            dead.chat.completions.create(model="m", messages=QUESTION)
        assert (dead._sentryml.logged, dead._sentryml.errors) == (0, 0)
        # A strict logger raises InvalidEvent for an event the schema refuses (a too long
        # base model): the wrapper swallows it, counts it, and returns the answer.
        client = instrument(
            openai.OpenAI(base_url=llm_server["base_url"], api_key="sk-local"),
            strict,
            base_model="m" * 300,  # over the schema's 256 characters
        )
        answer = client.chat.completions.create(
            model=llm_server["model"], messages=QUESTION, max_tokens=4
        )
        assert answer.choices[0].message.content is not None
        assert (client._sentryml.logged, client._sentryml.errors) == (0, 1)


def test_litellm_callback_publishes_the_standard_logging_payload(
    llm_server: dict[str, str], own_kafka: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no price-map fetch
    import litellm

    from streams.integrations.litellm_callback import SentryMLLogger

    create_topics(own_kafka)
    with InferenceLogger(ProducerSettings(kafka=own_kafka)) as logger:
        callback = SentryMLLogger(logger, adapter_version="v1")
        monkeypatch.setattr(litellm, "callbacks", [callback])
        common = {
            "model": f"openai/{llm_server['model']}",
            "api_base": llm_server["base_url"],
            "api_key": "sk-local",
            "max_tokens": 8,
            "temperature": 0,
        }
        sync = litellm.completion(
            messages=[{"role": "user", "content": "Say hi."}],
            metadata={"sentryml_adapter_version": "v2"},
            user="tenant-7",
            **common,
        )
        # LiteLLM runs sync success callbacks on a thread of its own, after returning.
        wait_for(
            lambda: callback.logged + callback.skipped + callback.errors >= 1,
            timeout=60,
            what="the sync callback",
        )
        assert (callback.logged, callback.skipped, callback.errors) == (1, 0, 0)

        async def acompletion() -> None:
            await litellm.acompletion(messages=[{"role": "user", "content": "Say bye."}], **common)
            # LiteLLM schedules the async callback as a task: let it run before the loop ends.
            for _ in range(600):
                if callback.logged >= 2:
                    return
                await asyncio.sleep(0.1)

        asyncio.run(acompletion())
        wait_for(lambda: callback.logged >= 2, timeout=60, what="LiteLLM's success callbacks")
    assert callback.errors == 0
    events = {e.messages[-1].content: e for e in _events(own_kafka, 2) if e.messages}
    hi, bye = events["Say hi."], events["Say bye."]
    assert hi.completion == sync.choices[0].message.content
    assert (hi.adapter_version, hi.tenant, hi.app) == ("v2", "tenant-7", "litellm")
    assert bye.adapter_version == "v1"
    assert hi.completion_tokens == sync.usage.completion_tokens
    assert hi.latency_ms is not None and hi.latency_ms > 0
