"""`sentryml baseline fit | list | show`: the training baselines drift is measured against."""

from __future__ import annotations

from pathlib import Path

import typer

from streams.commands.core import store_settings
from streams.console import console, print_table


def register(app: typer.Typer) -> None:
    baseline_app = typer.Typer(
        help="Fit and inspect the training baselines drift is measured against.",
        no_args_is_help=True,
    )
    app.add_typer(baseline_app, name="baseline")

    @baseline_app.command("fit")
    def fit(
        base_model: str = typer.Option(..., "--base-model", help="Base model name, as logged"),
        adapter: str = typer.Option("none", "--adapter", help="Adapter version ('none' = base)"),
        data: Path = typer.Option(..., "--data", help="Training JSONL (prompt/completion)"),
        k: int = typer.Option(16, "--k", min=2, max=4096, help="k-means clusters"),
        embedder: str = typer.Option("minilm", "--embedder", help="minilm | model2vec"),
        out: Path | None = typer.Option(None, "--out", help="Also write the baseline as JSON"),
        seed: int = typer.Option(0, "--seed", help="Seed of the split and of k-means"),
        reference_fraction: float = typer.Option(
            0.3, "--reference-fraction", min=0.05, max=0.95, help="Held-out reference share"
        ),
        novelty: bool = typer.Option(
            True, "--novelty/--no-novelty", help="Add the 'outside every cluster' bin"
        ),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
    ) -> None:
        """Embed the training prompts, fit k-means and output bins, store the baseline."""
        from workers.baseline import (
            DEFAULT_NOVELTY_QUANTILE,
            fit_baseline,
            read_training_jsonl,
            save_baseline,
        )
        from workers.embedding import load_embedder
        from workers.store import open_store

        records = read_training_jsonl(data)
        console.print(f"read {len(records)} training examples from {data}")
        model = load_embedder(embedder)
        baseline = fit_baseline(
            records,
            model,
            base_model=base_model,
            adapter_version=adapter,
            k=k,
            seed=seed,
            reference_fraction=reference_fraction,
            novelty_quantile=DEFAULT_NOVELTY_QUANTILE if novelty else None,
            progress=progress,
            source=str(data),
        )
        with open_store(store_settings()) as store:
            store.migrate()
            save_baseline(store, baseline, json_path=out)
        summary = baseline.summary()
        print_table(["field", "value"], [(k_, v) for k_, v in summary.items()], title="baseline")
        if out is not None:
            console.print(f"written to {out}")

    @baseline_app.command("list")
    def list_(
        base_model: str | None = typer.Option(None, "--base-model", help="Only this model"),
    ) -> None:
        """Every stored baseline, newest first."""
        from workers.baseline import LIST_COLUMNS, list_baselines
        from workers.store import open_store

        with open_store(store_settings()) as store:
            rows = list_baselines(store, base_model)
        print_table(list(LIST_COLUMNS), [tuple(r[c] for c in LIST_COLUMNS) for r in rows])

    @baseline_app.command("show")
    def show(
        baseline_id: str = typer.Argument(..., help="A baseline_id from `baseline list`"),
    ) -> None:
        """One baseline's bins: edges, reference counts and shares per feature."""
        from workers.baseline import iter_feature_bins, load_baseline_by_id
        from workers.exceptions import BaselineError
        from workers.store import open_store

        with open_store(store_settings()) as store:
            baseline = load_baseline_by_id(store, baseline_id)
        if baseline is None:
            raise BaselineError(f"no baseline {baseline_id!r}; see `sentryml baseline list`")
        print_table(["field", "value"], list(baseline.summary().items()), title="baseline")
        rows = []
        for feature, b, share, count in iter_feature_bins(baseline):
            fb = baseline.features[feature]
            if fb.edges is not None:
                lo = "-inf" if b == 0 else f"{fb.edges[b - 1]:g}"
                hi = "inf" if b == len(fb.edges) else f"{fb.edges[b]:g}"
                label = f"[{lo}, {hi})"
            elif feature == "embedding":
                label = "novelty" if b == baseline.k else f"cluster {b}"
            else:
                label = "refusal" if b == 1 else "no refusal"
            rows.append((feature, b, label, count, f"{share:.4f}"))
        print_table(["feature", "bin", "range", "count", "share"], rows, title="reference bins")
