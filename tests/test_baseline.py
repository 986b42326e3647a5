"""Baselines: training JSONL, fitting on real MiniLM embeddings, chDB round trip, the CLI."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from streams.commands import baseline as baseline_cmd
from workers.baseline import (
    FEATURES,
    Baseline,
    FeatureBaseline,
    TrainingRecord,
    fit_baseline,
    list_baselines,
    load_baseline,
    quantile_edges,
    read_training_jsonl,
    save_baseline,
)
from workers.embedding import CachedEmbedder, load_embedder
from workers.exceptions import BaselineError, TrainingDataError
from workers.store import StoreSettings
from workers.synthetic import degraded_records, domain_prompts, support_records, write_jsonl


@pytest.fixture(scope="module")
def embedder() -> CachedEmbedder:
    return load_embedder("minilm")


@pytest.fixture(scope="module")
def records() -> list[TrainingRecord]:
    return support_records(200, seed=5)


@pytest.fixture(scope="module")
def fitted(embedder: CachedEmbedder, records: list[TrainingRecord]) -> Baseline:
    return fit_baseline(
        records, embedder, base_model="smollm2", adapter_version="v1", k=4, seed=3, progress=False
    )


# -- training data ------------------------------------------------------------------------
def _write(tmp_path: Path, lines: list[Any]) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n",
        encoding="utf-8",
    )
    return path


def test_reads_every_supported_shape(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        [
            {"prompt": "Where is my order?", "completion": '{"intent": "order_status"}', "id": 1},
            "",
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "first question"},
                    {"role": "assistant", "content": "first answer"},
                    {"role": "user", "content": "Can I return it?"},
                    {"role": "assistant", "content": "Yes, within 30 days."},
                ]
            },
            {
                "prompt": [{"role": "user", "content": "Cancel my plan"}],
                "completion": [{"role": "assistant", "content": "Done."}],
            },
        ],
    )
    recs = read_training_jsonl(path)
    assert [(r.prompt, r.completion) for r in recs] == [
        ("Where is my order?", '{"intent": "order_status"}'),
        ("Can I return it?", "Yes, within 30 days."),
        ("Cancel my plan", "Done."),
    ]
    assert recs[1].messages is not None and recs[1].messages[0] == ("system", "Be brief.")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], "no training examples"),
        (["", "   "], "no training examples"),
        (
            [{"prompt": "a", "completion": "b"}, '{"prompt": "a", "completion": '],
            ":2: invalid JSON",
        ),
        ([{"prompt": "a", "completion": "b"}, "", {"prompt": "only"}], ":3: needs 'prompt'"),
        ([{"prompt": "a", "completion": 5}], ":1: 'completion' must be a string"),
        ([[1, 2]], ":1: expected a JSON object"),
        ([{"messages": [{"role": "user", "content": "hi"}]}], ":1: the last message must be"),
        ([{"messages": [{"role": "assistant", "content": "hi"}]}], ":1: no user message"),
        ([{"messages": [{"content": "hi"}]}], r":1: messages\[0\] must be an object"),
    ],
)
def test_malformed_files_name_the_line(tmp_path: Path, lines: list[Any], message: str) -> None:
    path = _write(tmp_path, lines) if lines else tmp_path / "empty.jsonl"
    if not lines:
        path.write_text("", encoding="utf-8")
    with pytest.raises(TrainingDataError, match=message) as info:
        read_training_jsonl(path)
    assert str(path) in str(info.value)


def test_missing_file() -> None:
    with pytest.raises(TrainingDataError, match="no such file"):
        read_training_jsonl("/nonexistent/train.jsonl")


# -- bins ---------------------------------------------------------------------------------
def test_feature_baseline_bins() -> None:
    fb = FeatureBaseline.from_counts("output_length", (10.0, 20.0), [2, 5, 3])
    assert fb.shares == (0.2, 0.5, 0.3) and fb.n == 10 and fb.bins == 3
    assert fb.assign(np.array([3, 10, 19.5, 20, 400])).tolist() == [0, 1, 1, 2, 2]
    refusal = FeatureBaseline.from_counts("refusal", None, [9, 1])
    assert refusal.assign(np.array([True, False])).tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"bin indices must be in \[0, 2\)"):
        refusal.assign(np.array([2]))
    values = [3, 10, 19.5, 20, 400, -1e9, 10.000001, float("nan")]
    assert [fb.assign_one(v) for v in values] == fb.assign(np.array(values)).tolist()
    assert [refusal.assign_one(v) for v in (True, False, 1.0)] == [1, 0, 1]
    with pytest.raises(ValueError, match=r"bin indices must be in \[0, 2\)"):
        refusal.assign_one(2.0)
    with pytest.raises(ValueError, match="need 2 edges"):
        FeatureBaseline("x", (1.0,), (0.5, 0.3, 0.2), (5, 3, 2))
    with pytest.raises(ValueError, match="increase strictly"):
        FeatureBaseline("x", (2.0, 1.0), (0.5, 0.3, 0.2), (5, 3, 2))
    assert quantile_edges(np.arange(100), 4) == (24.75, 49.5, 74.25)
    assert quantile_edges(np.array([1.0] * 90 + [0.5] * 10), 4) == (1.0,)
    assert quantile_edges(np.full(50, 3.0), 10) == ()  # one bin when every value is equal


# -- fitting ------------------------------------------------------------------------------
def test_fit_splits_counts_and_describes_every_feature(
    fitted: Baseline, records: list[TrainingRecord]
) -> None:
    assert (fitted.n_fit, fitted.n_reference) == (140, 60)
    assert set(fitted.features) == set(FEATURES)
    assert fitted.centroids.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(fitted.centroids, axis=1), 1.0, atol=1e-5)
    emb = fitted.features["embedding"]
    assert emb.bins == 5 and fitted.embedding_bins == 5  # 4 clusters + the novelty bin
    for name in FEATURES:
        fb = fitted.features[name]
        if name != "novelty":
            assert fb.n == fitted.n_reference  # counts come from the held-out reference split
        assert sum(fb.shares) == pytest.approx(1.0)
    # novelty: half the fitting split is the neighbour memory, every other example
    # calibrates; the counts are the calibration's gaps (they sum to its size + 1)
    assert fitted.memory is not None and fitted.memory.shape == (70, 384)
    assert fitted.memory.dtype == np.float16
    novelty = fitted.features["novelty"]
    assert novelty.n == len(records) - 70 + 1
    assert novelty.shares[0] <= 0.01 and sum(novelty.shares[:2]) <= 0.05
    assert fitted.features["refusal"].counts == (60, 0)  # no refusal in the training answers
    assert fitted.embedder == "minilm-l6-v2" and fitted.baseline_id.startswith("bl-")
    assert fitted.meta["seed"] == 3 and fitted.novelty_threshold is not None


def test_kmeans_binning_is_deterministic_for_a_seed(
    fitted: Baseline, embedder: CachedEmbedder, records: list[TrainingRecord]
) -> None:
    again = fit_baseline(
        records, embedder, base_model="smollm2", adapter_version="v1", k=4, seed=3, progress=False
    )
    assert again.baseline_id == fitted.baseline_id
    np.testing.assert_array_equal(again.centroids, fitted.centroids)
    probe = embedder.encode(domain_prompts("support", 30, seed=9))
    np.testing.assert_array_equal(again.assign_embeddings(probe), fitted.assign_embeddings(probe))
    other = fit_baseline(
        records, embedder, base_model="smollm2", adapter_version="v1", k=4, seed=4, progress=False
    )
    assert other.baseline_id != fitted.baseline_id  # another split and k-means init


def test_other_domains_land_in_the_novelty_bin(fitted: Baseline, embedder: CachedEmbedder) -> None:
    k = fitted.k
    same = fitted.assign_embeddings(embedder.encode(domain_prompts("support", 60, seed=11)))
    cooking = fitted.assign_embeddings(embedder.encode(domain_prompts("cooking", 30, seed=11)))
    legal = fitted.assign_embeddings(embedder.encode(domain_prompts("legal", 30, seed=11)))
    assert np.mean(same == k) <= 0.1
    assert np.mean(cooking == k) >= 0.8 and np.mean(legal == k) >= 0.8
    with pytest.raises(BaselineError, match="do not match"):
        fitted.assign_embeddings(np.ones((2, 10), dtype=np.float32))


def test_other_domains_read_as_off_distribution(fitted: Baseline, embedder: CachedEmbedder) -> None:
    from workers.stats import off_distribution_share

    fb = fitted.features["novelty"]
    same = embedder.encode([r.prompt for r in support_records(60, seed=12)])
    cooking = embedder.encode(domain_prompts("cooking", 60, seed=11))
    _, same_bins = fitted.bin_embeddings(same)
    _, cooking_bins = fitted.bin_embeddings(cooking)
    assert same_bins is not None and cooking_bins is not None
    quiet = off_distribution_share(np.bincount(same_bins, minlength=fb.bins), fb.counts)
    moved = off_distribution_share(np.bincount(cooking_bins, minlength=fb.bins), fb.counts)
    assert quiet.low == 0.0 and quiet.p_value > 0.01
    assert moved.share > 0.8 and moved.p_value < 1e-3
    empty = fitted.bin_embeddings(np.zeros((0, 384), dtype=np.float32))[1]
    assert empty is not None and empty.size == 0


def test_output_bins_separate_degraded_answers(fitted: Baseline) -> None:
    from workers.stats import text_stats

    length = fitted.features["output_length"]
    rambling = [text_stats(r.completion).length for r in degraded_records("rambling", 40, seed=1)]
    top = length.bins - 1
    assert np.mean(length.assign(np.array(rambling)) == top) >= 0.9


def test_too_few_examples(embedder: CachedEmbedder, records: list[TrainingRecord]) -> None:
    with pytest.raises(BaselineError, match="at least 54 examples"):
        fit_baseline(records[:50], embedder, base_model="m", k=16, progress=False)
    same = [TrainingRecord("Where is my order?", "{}")] * 100
    with pytest.raises(BaselineError, match="distinct prompts"):
        fit_baseline(same, embedder, base_model="m", k=4, progress=False)
    with pytest.raises(ValueError, match="k must be"):
        fit_baseline(records, embedder, base_model="m", k=1, progress=False)


# -- storage ------------------------------------------------------------------------------
def test_round_trip_through_chdb(store: Any, fitted: Baseline, tmp_path: Path) -> None:
    assert load_baseline(store, "smollm2", "v1") is None
    save_baseline(store, fitted, json_path=tmp_path / "bl.json")
    save_baseline(store, fitted)  # idempotent
    loaded = load_baseline(store, "smollm2", "v1")
    assert loaded is not None
    assert loaded.to_payload() == fitted.to_payload()
    np.testing.assert_array_equal(loaded.centroids, fitted.centroids)
    assert loaded.memory is not None and fitted.memory is not None
    np.testing.assert_array_equal(loaded.memory, fitted.memory)  # float16, exact
    assert loaded.features == fitted.features
    assert loaded.created_at == fitted.created_at
    on_disk = json.loads((tmp_path / "bl.json").read_text())
    assert Baseline.from_payload(on_disk).to_payload() == fitted.to_payload()
    assert [r["baseline_id"] for r in list_baselines(store)] == [fitted.baseline_id]

    # an adapter without its own baseline gets the base model's newest one
    newer = Baseline.from_payload(
        {
            **fitted.to_payload(),
            "baseline_id": "bl-newer",
            "adapter_version": "v2",
            "created_at": (fitted.created_at + timedelta(hours=1)).isoformat(),
        }
    )
    save_baseline(store, newer)
    fallback = load_baseline(store, "smollm2", "v3")
    assert fallback is not None and fallback.baseline_id == "bl-newer"
    exact = load_baseline(store, "smollm2", "v1")
    assert exact is not None and exact.baseline_id == fitted.baseline_id
    assert load_baseline(store, "other-model", "v1") is None
    assert len(list_baselines(store, "smollm2")) == 2


def test_corrupt_payload() -> None:
    with pytest.raises(BaselineError, match="format"):
        Baseline.from_payload({"format": 99})
    with pytest.raises(BaselineError, match="corrupt"):
        Baseline.from_payload({"format": 1, "centroids": {}})


# -- CLI ----------------------------------------------------------------------------------
def test_cli_fit_list_show(
    store: Any, store_settings: StoreSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRYML_STORE_URL", store_settings.url)
    monkeypatch.setenv("SENTRYML_STORE_DATABASE", store_settings.database)
    monkeypatch.setenv("COLUMNS", "250")  # rich folds long ids in narrow tables
    app = typer.Typer()
    baseline_cmd.register(app)
    runner = CliRunner()
    data = tmp_path / "train.jsonl"
    write_jsonl(support_records(80, seed=21), str(data))
    out = tmp_path / "baseline.json"
    args = ["baseline", "fit", "--base-model", "m1", "--adapter", "a1", "--data", str(data)]
    result = runner.invoke(app, [*args, "--k", "4", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    stored = load_baseline(store, "m1", "a1")
    assert stored is not None and stored.k == 4 and stored.source == str(data)
    assert json.loads(out.read_text())["baseline_id"] == stored.baseline_id

    listed = runner.invoke(app, ["baseline", "list"])
    assert listed.exit_code == 0 and stored.baseline_id in listed.output
    shown = runner.invoke(app, ["baseline", "show", stored.baseline_id])
    assert shown.exit_code == 0 and "novelty" in shown.output and "output_length" in shown.output

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\nnot json\n', encoding="utf-8")
    failed = runner.invoke(app, ["baseline", "fit", "--base-model", "m1", "--data", str(bad)])
    assert isinstance(failed.exception, TrainingDataError)
    assert f"{bad}:2: invalid JSON" in str(failed.exception)
    few = runner.invoke(app, [*args, "--k", "32", "--no-progress"])
    assert isinstance(few.exception, BaselineError) and "lower --k" in str(few.exception)


def test_clusters_are_named_by_their_keywords_with_examples(fitted: Baseline) -> None:
    from workers.baseline import keywords

    clusters = fitted.meta["clusters"]
    assert [c["bin"] for c in clusters] == list(range(fitted.k))
    for c in clusters:
        assert c["keywords"] and c["name"].startswith(f"c{c['bin']}: ")
        assert 1 <= len(c["examples"]) <= 3 and all(len(e) <= 200 for e in c["examples"])
    names = fitted.bin_names()
    assert len(names) == fitted.embedding_bins and names[-1] == "novelty"
    # c-TF-IDF: a term frequent in one group and absent from the other names that group
    assert keywords([["apple pie recipe", "apple tart"], ["court ruling appeal"]], top=1) == [
        ["apple"],
        ["appeal"],
    ]
    assert keywords([["the and of"], ["a an"]]) == [[], []]  # only stop words
