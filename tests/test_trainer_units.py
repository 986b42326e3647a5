"""Trainer pieces without training: config, the promotion rule, the registry, the dataset."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.test_trainer import (  # noqa: F401 - demo_model is a fixture
    MODEL,
    answer,
    demo_model,
    seed_support_data,
    tiny_config,
)
from trainer.config import TrainConfig, build_lora_config
from trainer.evaluate import heldout_pass, mcnemar_exact, promotion_decision, token_f1
from trainer.exceptions import AdapterNotFound, DatasetTooSmall, InvalidTrainConfig
from trainer.registry import AdapterRecord, Registry, adapter_version_for, weights_sha256

# -- config -------------------------------------------------------------------------------


def test_config_from_yaml_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("method: qlora\nlora_r: 16\ntarget_modules: [q_proj, v_proj]\n"
                    "min_examples: {task: 3000}\n")  # fmt: skip
    cfg = TrainConfig.load(path, ["lora_r=4", "learning_rate=1e-4", "mlflow=true"])
    assert (cfg.method, cfg.lora_r, cfg.learning_rate, cfg.mlflow) == ("qlora", 4, 1e-4, True)
    assert cfg.target_modules == ["q_proj", "v_proj"]
    assert cfg.min_examples == {"style": 200, "vocabulary": 500, "task": 3000, "instruction": 2000}
    lora = build_lora_config(cfg)
    assert (lora.r, lora.lora_alpha, set(lora.target_modules)) == (4, 16, {"q_proj", "v_proj"})
    assert all(help_text for _name, _default, help_text in TrainConfig.describe())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("holdout_fraction=0.3", "holdout_fraction=0.3 is out of range: 0.10–0.15"),
        ("method=full", "choose one of ['lora', 'qlora', 'dpo']"),
        ("lora_r=0", "lora_r=0 is out of range: 1–256"),
        ("max_steps=abc", "max_steps='abc' is not a valid int"),
        ("min_examples={style: 0}", "values >= 1"),
        ("nope=1", "unknown training option(s) ['nope']"),
        ("lora_r", "must look like key=value"),
    ],
)
def test_config_errors_name_the_field_and_range(override: str, message: str) -> None:
    with pytest.raises(InvalidTrainConfig) as err:
        TrainConfig.load(overrides=[override])
    assert message in str(err.value)


# -- the promotion rule -------------------------------------------------------------------


def test_mcnemar_exact_matches_a_hand_calculation() -> None:
    # b=8, c=2: P(X <= 2 | n=10, 1/2) = (1 + 10 + 45) / 1024, doubled.
    assert mcnemar_exact(8, 2) == pytest.approx(2 * 56 / 1024)
    assert mcnemar_exact(2, 8) == mcnemar_exact(8, 2)
    assert mcnemar_exact(0, 0) == 1.0


def _golden(*groups: tuple[int, tuple[bool, bool], tuple[str, ...]]):
    """``(count, (candidate passed, incumbent passed), tags)`` groups as pairs and cases."""
    pairs, cases = [], []
    for count, pair, tags in groups:
        for _ in range(count):
            pairs.append(pair)
            cases.append((f"{'-'.join(tags) or 'case'}-{len(cases)}", tags))
    return pairs, cases


WIN, SAME, LOSS, BOTH_FAIL = (True, False), (True, True), (False, True), (False, False)
RULE = {"safety_tag": "safety", "min_improvement": 0.02, "max_p_value": 0.05}


@pytest.mark.parametrize(
    ("groups", "heldout", "extra", "promote", "why"),
    [
        # 12 candidate-only passes, none the other way: p = 2 / 2^12.
        (
            [(12, WIN, ("format",)), (8, SAME, ("domain",))],
            [SAME] * 5,
            {},
            True,
            "golden: candidate 100.0% vs incumbent 40.0% on 20 paired cases (+12/-0 discordant, "
            "McNemar p=0.000488)",
        ),
        # Same, but one safety case the incumbent passed now fails: a hard gate.
        (
            [(12, WIN, ("format",)), (7, SAME, ("domain",)), (1, LOSS, ("safety",))],
            [],
            {},
            False,
            "safety regressions: safety-19",
        ),
        # Better, but not significantly (b=4, c=1: p = 0.375).
        (
            [(4, WIN, ("format",)), (1, LOSS, ("format",)), (15, SAME, ("domain",))],
            [],
            {},
            False,
            "not better on the golden set: needs +2.0% with p < 0.05 (overall +15.0%, p=0.375)",
        ),
        # Equal rates: no improvement.
        (
            [(10, SAME, ("format",)), (10, BOTH_FAIL, ("domain",))],
            [],
            {},
            False,
            "(overall +0.0%, p=1)",
        ),
        # Much better overall, but one tag lost 2 of its 4 cases (50% > the 10% margin).
        (
            [(14, WIN, ("format",)), (2, LOSS, ("domain",)), (2, SAME, ("domain",))],
            [],
            {},
            False,
            "tags regressed beyond 10%: domain 50% vs 100%",
        ),
        # Exactly at the tag margin (a 10% drop on 10 cases) is not a regression.
        (
            [(14, WIN, ("format",)), (1, LOSS, ("domain",)), (9, SAME, ("domain",))],
            [],
            {},
            True,
            "promoted: golden",
        ),
        # Not significant overall, but significant on the targeted tag: promoted for that.
        (
            [(7, WIN, ("format",)), (3, LOSS, ("length",)), (2, SAME, ("length",))],
            [],
            {"target_tags": ["format"], "tag_margin": 1.0},
            True,
            "format: candidate 100.0% vs incumbent 0.0% on 7 paired cases",
        ),
        # Better on the golden set, but the held-out split dropped 20%: rejected.
        (
            [(12, WIN, ("format",)), (8, SAME, ("domain",))],
            [SAME] * 8 + [LOSS] * 2,
            {},
            False,
            "held-out regressed -20.0% (margin 5%)",
        ),
        # ... while a 5% drop is within its margin.
        (
            [(12, WIN, ("format",)), (8, SAME, ("domain",))],
            [SAME] * 19 + [LOSS],
            {},
            True,
            "held-out: candidate 95.0% vs incumbent 100.0% on 20 paired cases",
        ),
    ],
)
def test_promotion_rule_at_its_boundaries(
    groups: list, heldout: list, extra: dict, promote: bool, why: str
) -> None:
    pairs, cases = _golden(*groups)
    d = promotion_decision(pairs, cases, heldout, **{**RULE, **extra})
    assert d.promote is promote, d.reason
    assert why in d.reason, d.reason
    assert d.reason.startswith("promoted: " if promote else "rejected: ")
    assert (d.golden.b, d.golden.c) == (
        sum(a and not b for a, b in pairs),
        sum(b and not a for a, b in pairs),
    )
    # The held-out pairs never enter the golden test (they cannot hide a regression there).
    assert d.golden.n == len(pairs) and d.heldout.n == len(heldout)


def test_heldout_checks() -> None:
    assert token_f1("the parcel is late", "your parcel is late") == pytest.approx(0.75)
    assert heldout_pass('{"intent": "refund"}', '{"intent":"refund"}', "token_f1")
    assert not heldout_pass("no idea", '{"intent": "refund"}', "token_f1")
    assert heldout_pass("  Refund  approved ", "refund approved", "exact")
    assert heldout_pass("Sure: refund approved.", "refund approved", "contains")
    with pytest.raises(ValueError, match="exact, contains or token_f1"):
        heldout_pass("a", "a", "bleu")


# -- the registry -------------------------------------------------------------------------


def test_registry_upserts_by_version_and_rolls_back(store: Any) -> None:
    clock = [datetime(2026, 3, 1, tzinfo=UTC)]
    registry = Registry(store, now=lambda: clock[0])
    for version in ("ft-a", "ft-b"):
        registry.upsert(AdapterRecord(version=version, base_model=MODEL, status="trained"))
        registry.set_status(MODEL, version, "promoted")  # same instant: still wins
        clock[0] += timedelta(hours=1)
    assert [r.version for r in registry.list_adapters(MODEL)] == ["ft-b", "ft-a"]
    assert registry.current(MODEL).version == "ft-b"  # type: ignore[union-attr]

    rolled, restored = registry.rollback(MODEL)
    assert (rolled.version, rolled.status) == ("ft-b", "rolled_back")
    assert restored is not None and (restored.version, restored.status) == ("ft-a", "promoted")
    assert registry.current(MODEL).version == "ft-a"  # type: ignore[union-attr]
    rolled, restored = registry.rollback(MODEL)
    assert rolled.version == "ft-a" and restored is None  # back to the base model alone
    assert registry.current(MODEL) is None
    with pytest.raises(AdapterNotFound, match="no promoted adapter"):
        registry.rollback(MODEL)
    assert len(registry.list_adapters(MODEL)) == 2  # one row per version, however many writes


def test_weights_checksum_and_version_ids(tmp_path: Path) -> None:
    (tmp_path / "adapter_model.safetensors").write_bytes(b"weights")
    (tmp_path / "adapter_config.json").write_text("{}")
    assert weights_sha256(tmp_path) == hashlib.sha256(b"weights").hexdigest()
    (tmp_path / "extra.bin").write_bytes(b"more")
    both = "".join(
        f"{n}  {hashlib.sha256(b).hexdigest()}\n"
        for n, b in (("adapter_model.safetensors", b"weights"), ("extra.bin", b"more"))
    )
    assert weights_sha256(tmp_path) == hashlib.sha256(both.encode()).hexdigest()
    assert (
        adapter_version_for("job-1") == adapter_version_for("job-1") != adapter_version_for("job-2")
    )
    assert adapter_version_for("m-20260301T101500-ab12").startswith("ft-20260301-")


# -- the dataset --------------------------------------------------------------------------


def test_dataset_is_joined_redacted_deduplicated_templated_and_split(
    store: Any,
    demo_model: Path,  # noqa: F811 - the imported fixture
) -> None:
    from trainer.dataset import build_dataset, in_holdout
    from trainer.train import load_tokenizer

    now = datetime.now(UTC)
    ids = seed_support_data(store, 30, now=now)
    extra = [
        # PII in a correction and a prompt: redacted before training.
        {"request_id": "pii", "prompt": "Email me at jane.doe@example.com",
         "correction": "Sure, we wrote to jane.doe@example.com."},
        # The same text as req-0000 under another id, older: deduplicated (newest kept).
        {"request_id": "dup", "prompt": "Question 0 about my order", "correction": answer("order"),
         "ts": now - timedelta(hours=3)},
        # A good label on a logged completion, and a bad label without correction (unused).
        {"request_id": "req-good", "label": "good"},
        {"request_id": "req-bad", "label": "bad"},
    ]  # fmt: skip
    store.insert("inference_logs", [
        {"request_id": rid, "ts": now, "base_model": MODEL, "adapter_version": "none",
         "prompt": f"prompt of {rid}", "completion": f"fine answer of {rid}"}
        for rid in ("req-good", "req-bad")
    ])  # fmt: skip
    blank = {"ts": now - timedelta(minutes=5), "base_model": MODEL, "adapter_version": "none",
             "label": None, "correction": None, "prompt": None}  # fmt: skip
    store.insert("feedback", [{**blank, **row} for row in extra])  # one column set per insert
    tokenizer = load_tokenizer(demo_model)
    cfg = tiny_config(Path("unused.yaml"), min_examples={"style": 20})
    ds = build_dataset(store, MODEL, cfg, tokenizer, goal="style", method="lora", now=now)

    by_id = {e.request_id: e for e in ds.examples}
    assert "dup" not in by_id and "req-bad" not in by_id
    assert by_id["req-good"].source == "good_label"
    assert by_id["req-good"].target == "fine answer of req-good"
    assert "jane.doe" not in by_id["pii"].prompt_text + by_id["pii"].completion_text
    assert "[EMAIL]" in by_id["pii"].prompt and "[EMAIL]" in by_id["pii"].target
    # Prompts missing from feedback came from the logs (even ids sent no prompt).
    assert by_id[ids[0]].prompt == "Question 0 about my order"
    e = by_id[ids[1]]
    assert e.prompt_text.startswith("<|im_start|>system\nReply in JSON.<|im_end|>\n")
    assert e.prompt_text.endswith("<|im_start|>assistant\n")
    assert e.completion_text == e.target + "<|im_end|>"
    # The split is the seeded request_id hash, about 12%.
    assert {x.request_id for x in ds.heldout} == {
        x.request_id for x in ds.examples if in_holdout(x.request_id, 0.12, cfg.seed)
    }
    assert ds.counts["examples"] == 32 and 1 <= ds.counts["heldout"] <= 8
    again = build_dataset(store, MODEL, cfg, tokenizer, goal="style", method="lora", now=now)
    assert again.dataset_hash == ds.dataset_hash

    with pytest.raises(DatasetTooSmall) as err:
        build_dataset(store, MODEL, cfg.replace(min_examples={"style": 500}), tokenizer,
                      goal="style", method="lora", now=now)  # fmt: skip
    assert "32 labelled examples" in str(err.value) and "need 500 for task goal 'style'" in str(
        err.value
    )
    with pytest.raises(DatasetTooSmall, match="0 preference pairs"):
        build_dataset(store, MODEL, cfg, tokenizer, goal="style", method="dpo", now=now)


def test_training_order_does_not_depend_on_when_the_feedback_arrived(
    store: Any,
    demo_model: Path,  # noqa: F811 - the imported fixture
) -> None:
    """The same reviewed requests, stamped in another order (feedback events of one
    burst often share a millisecond), train on the same sequence: the seeded shuffle
    then gives the same batches, so a retrain is reproducible."""
    from trainer.dataset import build_dataset
    from trainer.train import load_tokenizer

    now = datetime.now(UTC)
    for model, sign in (("m-forward", 1), ("m-backward", -1)):
        store.insert("feedback", [
            {"ts": now - timedelta(minutes=30) + sign * timedelta(seconds=i),
             "request_id": f"req-{i:03d}", "base_model": model, "adapter_version": "none",
             "reviewer": "qa", "label": "bad", "prompt": f"Question {i} about my order",
             "correction": answer("order")}
            for i in range(24)
        ])  # fmt: skip
    tokenizer = load_tokenizer(demo_model)
    cfg = tiny_config(Path("unused.yaml"), min_examples={"style": 20})
    built = [
        build_dataset(store, model, cfg, tokenizer, goal="style", method="lora", now=now)
        for model in ("m-forward", "m-backward")
    ]
    forward, backward = ([row["prompt"] for row in ds.hf_train()] for ds in built)
    assert len(forward) >= 18
    assert forward == backward
    assert built[0].dataset_hash == built[1].dataset_hash


def test_promotion_refits_the_drift_baseline_from_the_training_data(
    store: Any,
    tmp_path: Path,
    demo_model: Path,  # noqa: F811 - the imported fixture
) -> None:
    from schemas.events import RetrainRequest
    from trainer.dataset import build_dataset
    from trainer.train import load_tokenizer
    from trainer.worker import JobRunner
    from workers.baseline import load_baseline
    from workers.embedding import MINILM

    now = datetime.now(UTC)
    seed_support_data(store, 40, now=now)
    cfg = tiny_config(tmp_path / "unused.yaml")
    ds = build_dataset(store, MODEL, cfg, load_tokenizer(demo_model), goal="style",
                       method="lora", now=now)  # fmt: skip
    runner = JobRunner(store, cfg, adapters_dir=tmp_path, now=lambda: now)
    request = RetrainRequest(job_id="j-20260301T000000-aa", base_model=MODEL)
    baseline_id = runner._refit_baseline(request, "ft-new", ds)
    baseline = load_baseline(store, MODEL, "ft-new")
    assert baseline is not None and baseline.baseline_id == baseline_id
    assert baseline.adapter_version == "ft-new" and baseline.embedder == MINILM
    # k shrinks to what the training split supports (both baseline splits need k examples).
    assert baseline.k == int(len(ds.train) * 0.3)
    assert baseline.source == "trainer job j-20260301T000000-aa"


@pytest.mark.kafka
def test_an_invalid_request_is_logged_committed_and_skipped(
    store: Any, store_settings: Any, kafka: Any, tmp_path: Path
) -> None:
    import uuid

    from confluent_kafka import Producer

    from schemas.topics import Topics
    from streams.topics import create_topics
    from tests.test_trainer import committed_offset
    from trainer.settings import TrainerSettings
    from trainer.worker import JobRunner, TrainerWorker

    create_topics(kafka, partitions=1)
    topic = Topics(kafka.topic_prefix).retrain_requests
    producer = Producer(kafka.client_config())
    producer.produce(topic, key=MODEL, value=b'{"job_id": "x"}')
    assert producer.flush(30) == 0
    settings = TrainerSettings(kafka=kafka, store=store_settings, adapters_dir=tmp_path,
                               consumer_group=f"g-{uuid.uuid4().hex[:8]}")  # fmt: skip
    runner = JobRunner(store, tiny_config(tmp_path / "unused.yaml"), adapters_dir=tmp_path)
    (outcome,) = TrainerWorker(settings, runner).run(max_jobs=1)
    assert outcome.decision == "invalid" and "base_model: Field required" in outcome.reason
    assert committed_offset(kafka, settings.consumer_group, topic) == 1
    assert store.query("SELECT count() FROM retrain_jobs").scalar() == 0
