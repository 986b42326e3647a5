"""The judge against a real OpenAI-compatible server: llama.cpp serving SmolLM2-135M-Instruct.

A weak judge, but a real one: its answers must parse under the JSON-schema constraint and
land in ClickHouse, for the sampled requests and no others. Kept to one sampled request of
ten (three calls, one at a time so the server reuses the shared prompt prefix) because the
machine's cores are shared.
"""

from __future__ import annotations

import asyncio

import pytest

from schemas.events import InferenceLog
from workers.dlq import RawRecord
from workers.judge import JudgeClient, JudgeSampler, JudgeSettings, judge_batch, should_judge

pytestmark = [pytest.mark.slow]

QA = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("List two primary colours.", "- red\n- blue"),
    ("Translate 'thank you' to Spanish.", "Gracias."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("Write a haiku about rain.", "I can't help with that."),
]


def test_real_judge_scores_land_in_clickhouse_for_sampled_events_only(llm_server, store) -> None:
    settings = JudgeSettings(
        base_url=llm_server["base_url"],
        model=llm_server["model"],
        sample_rate=0.15,
        allow_rate_override=True,  # 15%, so that exactly 1 of these 10 requests is judged
        max_concurrency=1,
        timeout_s=120,
        max_tokens=200,
        max_attempts=2,
        daily_token_budget=None,
    )
    events = [
        InferenceLog(
            request_id=f"ticket-{i}",
            base_model="smollm2-135m",
            adapter_version="v1",
            prompt=QA[i % len(QA)][0],
            completion=QA[i % len(QA)][1],
        )
        for i in range(10)
    ]
    sampler = JudgeSampler(settings, store=store)
    chosen = sampler.select(events)
    assert [e.request_id for e in chosen] == [
        e.request_id for e in events if should_judge(e.request_id, 0.15)
    ]
    assert len(chosen) == 1
    records = [
        RawRecord("judge-requests", 0, offset, e.request_id.encode(), e.to_bytes())
        for offset, e in enumerate(chosen)
    ]

    async def judge() -> tuple:
        client = JudgeClient(settings)
        try:
            return await judge_batch(client, records), client.response_format_style
        finally:
            await client.aclose()

    batch, style = asyncio.run(judge())
    assert batch.failed == [], batch.failed
    store.insert("judge_scores", batch.rows, dedup_token=batch.dedup_token)

    rows = store.query(
        "SELECT request_id, dimension, score, ok, rationale, prompt_tokens, completion_tokens "
        "FROM judge_scores FINAL ORDER BY request_id, dimension"
    ).dicts()
    assert {r["request_id"] for r in rows} == {e.request_id for e in chosen}
    assert len(rows) == 3 * len(chosen)
    for row in rows:
        # JSON-schema-constrained decoding: every answer parses into a verdict in range
        assert row["ok"] == 1, row
        low, high = (0, 1) if row["dimension"] == "refusal" else (1, 5)
        assert low <= row["score"] <= high
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
    # llama-cpp-python's server accepts only {"type": "json_object", "schema": ...}; "auto"
    # found that out from its 422 and switched by itself
    assert style == "json_object"
