"""Synthetic traffic for the demo, tests and benchmarks (templated, seeded)."""

from __future__ import annotations

from workers.synthetic._domains import DOMAINS
from workers.synthetic._generate import (
    DEGRADATIONS,
    degraded_records,
    domain_prompts,
    domain_records,
    support_records,
    to_inference_logs,
    write_jsonl,
)

__all__ = [
    "DEGRADATIONS",
    "DOMAINS",
    "degraded_records",
    "domain_prompts",
    "domain_records",
    "support_records",
    "to_inference_logs",
    "write_jsonl",
]
