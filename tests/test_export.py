"""`sentryml dataset export`: the trainer's own examples, in TRL's and OpenAI's formats.

Each format is checked against its documented shape; the TRL files are loaded with
`datasets` and recognised by TRL's own `is_conversational`, as TRL's trainers load them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.test_trainer import MODEL, seed_support_data, tiny_config
from trainer.dataset import in_holdout
from trainer.export import export_dataset, heldout_path

SYSTEM = "Reply in JSON."


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _seed_pairs(store: Any, now: datetime) -> None:
    """Twelve preference pairs whose rejected answer carries PII, beside the corrections."""
    rows = [
        {"ts": now - timedelta(minutes=i), "request_id": f"pair-{i}", "base_model": MODEL,
         "adapter_version": "none", "reviewer": "qa", "prompt": f"Where is parcel {i}?",
         "chosen": json.dumps({"intent": "delivery", "answer": f"Parcel {i} ships today."}),
         "rejected": "No idea, mail jane.doe@example.com"}
        for i in range(12)
    ]  # fmt: skip
    store.insert("feedback", rows)


def test_sft_exports_are_the_trainers_examples_in_both_formats(store: Any, tmp_path: Path) -> None:
    from datasets import load_dataset
    from trl.data_utils import is_conversational

    now = datetime.now(UTC)
    ids = seed_support_data(store, 30, now=now)
    cfg = tiny_config(Path("unused.yaml"), system_prompt=SYSTEM)
    for fmt in ("trl-sft", "openai-sft"):
        out = tmp_path / f"{fmt}.jsonl"
        summary = export_dataset(store, MODEL, cfg, fmt, out, now=now)  # type: ignore[arg-type]
        train, heldout = _rows(out), _rows(heldout_path(out))
        assert summary.train == len(train) and summary.heldout == len(heldout)
        assert len(train) + len(heldout) == 30 and summary.by_source == {"correction": 30}
        # The held-out split is the trainer's own: the seeded hash of the request id.
        assert len(heldout) == sum(in_holdout(r, cfg.holdout_fraction, cfg.seed) for r in ids)
        for row in train + heldout:  # {"messages": [system, user, assistant]}
            assert list(row) == ["messages"]
            assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
            assert row["messages"][0]["content"] == SYSTEM
            assert set(json.loads(row["messages"][2]["content"])) == {"intent", "answer"}
    loaded = load_dataset("json", data_files=str(tmp_path / "trl-sft.jsonl"), split="train")
    assert len(loaded) == summary.train and is_conversational(loaded[0])


def test_preference_exports_take_pairs_only_redacted_and_say_what_they_left(
    store: Any, tmp_path: Path
) -> None:
    from datasets import load_dataset
    from trl.data_utils import is_conversational

    now = datetime.now(UTC)
    seed_support_data(store, 10, now=now)
    _seed_pairs(store, now)
    cfg = tiny_config(Path("unused.yaml"), system_prompt=None)
    out = tmp_path / "trl-dpo.jsonl"
    summary = export_dataset(store, MODEL, cfg, "trl-dpo", out, now=now)
    rows = _rows(out) + _rows(heldout_path(out))
    assert summary.train + summary.heldout == len(rows) == 12
    assert summary.by_source == {"preference": 12}
    assert summary.not_taken["not_a_preference_pair"] == 10
    for row in rows:  # {"prompt": [user], "chosen": [assistant], "rejected": [assistant]}
        assert [m["role"] for m in row["prompt"]] == ["user"]
        assert [m["role"] for m in row["chosen"] + row["rejected"]] == ["assistant", "assistant"]
        assert "jane.doe" not in row["rejected"][0]["content"]
        assert "[EMAIL]" in row["rejected"][0]["content"]
    loaded = load_dataset("json", data_files=str(out), split="train")
    assert set(loaded.column_names) == {"prompt", "chosen", "rejected"}
    assert is_conversational(loaded[0])

    openai_out = tmp_path / "openai-dpo.jsonl"
    export_dataset(store, MODEL, cfg, "openai-dpo", openai_out, now=now)
    for row in _rows(openai_out):
        # OpenAI's preference file: input.messages, preferred_output, non_preferred_output.
        assert set(row) == {"input", "preferred_output", "non_preferred_output"}
        assert row["input"]["messages"][-1]["role"] == "user"
        assert row["preferred_output"][0]["role"] == "assistant"
        assert row["non_preferred_output"][0]["role"] == "assistant"


def test_the_cli_writes_both_splits_and_a_summary(
    store: Any, store_settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import typer

    from streams.commands import dataset as dataset_cmd

    app = typer.Typer()
    app.callback()(lambda: None)  # a group, so the command is invoked by its name
    dataset_cmd.register(app)
    monkeypatch.setenv("COLUMNS", "250")
    seed_support_data(store, 12)
    monkeypatch.setenv("SENTRYML_STORE_URL", store_settings.url)
    monkeypatch.setenv("SENTRYML_STORE_DATABASE", store_settings.database)
    out = tmp_path / "sft.jsonl"
    result = CliRunner().invoke(
        app,
        ["dataset", "export", "-m", MODEL, "--format", "openai-sft", "--out", str(out),
         "--since", "2d", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "train examples" in result.output and "taken by source: 12 correction" in result.output
    assert len(_rows(out)) + len(_rows(heldout_path(out))) == 12
    bad = CliRunner().invoke(
        app, ["dataset", "export", "-m", MODEL, "--format", "csv", "--out", str(out)]
    )
    assert bad.exit_code != 0 and "trl-sft" in bad.output
