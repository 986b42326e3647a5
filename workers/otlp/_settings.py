"""Where the OpenTelemetry Collector's Kafka exporter writes, and how its inferences map."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from workers.settings import Section

#: The payload encodings of the Collector's Kafka exporter that carry OTLP (its
#: ``encoding`` option); ``auto`` reads a payload that starts with ``{`` as OTLP/JSON.
OtlpEncoding = Literal["otlp_proto", "otlp_json", "auto"]
#: The two OTLP signals that carry inferences: spans and log records (events).
OtlpSignal = Literal["traces", "logs"]


class OtlpSettings(Section):
    """OTLP GenAI telemetry from the Collector's Kafka exporter, mapped to inference logs.

    The Collector writes traces and logs to one topic each (its defaults ``otlp_spans``
    and ``otlp_logs``; the names are the Collector's, so the SentryML prefix is not
    added); both exporters may also share one topic, and each record's signal is then
    read from the payload. ``SENTRYML_OTLP='{"encoding": "otlp_json"}'`` as a
    ``WorkerSettings`` section.
    """

    enabled: bool = Field(False, description="Consume the Collector's topics")
    traces_topic: str = Field(
        "otlp_spans", min_length=1, description="Topic the Collector's traces exporter writes"
    )
    logs_topic: str = Field(
        "otlp_logs", min_length=1, description="Topic the Collector's logs exporter writes"
    )
    encoding: OtlpEncoding = Field(
        "auto", description="The exporter's `encoding`; auto: JSON when it starts with '{'"
    )
    adapter_attribute: str = Field(
        "sentryml.adapter_version",
        min_length=1,
        description="Attribute naming the served adapter (span/log, then resource)",
    )
    request_id_attribute: str = Field(
        "gen_ai.response.id",
        min_length=1,
        description="Attribute used as request_id (else vLLM's gen_ai.request.id, else "
        "trace id + span id, hex)",
    )
    base_model: str | None = Field(
        None, min_length=1, max_length=256, description="Label every event with this model"
    )
    require_content: bool = Field(
        True,
        description=(
            "An inference without prompt or completion text goes to the DLQ "
            "(otlp_incomplete); false: it is skipped and counted (content captured "
            "on the other signal only, or vLLM's server spans, which carry no text)"
        ),
    )
    join_spans: int = Field(
        100_000,
        ge=0,
        description="Recent spans remembered to join and de-duplicate their events",
    )
