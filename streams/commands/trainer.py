"""`sentryml trainer`, `sentryml retrain ...`, `sentryml adapters ...`: gated retraining."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from streams.console import console, print_table

if TYPE_CHECKING:
    from trainer.config import TrainConfig

log = logging.getLogger(__name__)


def _train_config(config: Path | None, overrides: list[str] | None) -> TrainConfig:
    from trainer.config import TrainConfig
    from trainer.settings import TrainerSettings

    path = config or TrainerSettings().config_file
    return TrainConfig.load(path, overrides or [])


def register(app: typer.Typer) -> None:
    retrain_app = typer.Typer(
        help="Retrain requests and the gate's decisions.", no_args_is_help=True
    )
    adapters_app = typer.Typer(help="The adapter registry.", no_args_is_help=True)
    app.add_typer(retrain_app, name="retrain")
    app.add_typer(adapters_app, name="adapters")

    @app.command("trainer")
    def trainer(
        config: Path | None = typer.Option(
            None, "--config", "-c", help="Training config YAML (default: SENTRYML_CONFIG_FILE)"
        ),
        overrides: list[str] | None = typer.Option(
            None, "--set", help="Override one option, e.g. --set lora_r=16 (repeatable)"
        ),
        max_jobs: int | None = typer.Option(
            None, "--max-jobs", min=1, help="Exit after this many jobs (default: run forever)"
        ),
        show_config: bool = typer.Option(
            False, "--show-config", help="Print every training option with its help and exit"
        ),
    ) -> None:
        """Consume retrain requests and train, evaluate and promote adapters, one at a time."""
        from schemas.topics import Topics
        from trainer.config import TrainConfig
        from trainer.registry import AdapterEventPublisher
        from trainer.settings import TrainerSettings
        from trainer.worker import JobRunner, TrainerWorker
        from workers.store import open_store

        cfg = _train_config(config, overrides)
        if show_config:
            current = cfg.to_dict()
            print_table(
                ["option", "value", "help"],
                [(name, repr(current[name]), text) for name, _d, text in TrainConfig.describe()],
                title="training options (YAML keys / --set)",
            )
            return
        settings = TrainerSettings()
        store = open_store(settings.store)
        store.migrate()
        publisher = AdapterEventPublisher(
            settings.kafka, Topics(settings.kafka.topic_prefix).adapter_events
        )
        runner = JobRunner(store, cfg, adapters_dir=settings.adapters_dir, events=publisher)
        console.print(
            f"[bold]trainer[/] group {settings.consumer_group} on {settings.kafka.bootstrap}; "
            f"adapters in {settings.adapters_dir}; config {cfg.fingerprint()}"
        )
        try:
            outcomes = TrainerWorker(settings, runner).run(max_jobs=max_jobs)
        except KeyboardInterrupt:
            console.print("stopped")
            return
        finally:
            store.close()
        for o in outcomes:
            console.print(f"{o.job_id}: {o.decision} {o.adapter_version} — {o.reason}")

    @retrain_app.command("request")
    def retrain_request(
        base_model: str = typer.Option(..., "--base-model", "-m", help="Base model to retrain"),
        adapter: str | None = typer.Option(
            None, "--adapter", help="Incumbent adapter (default: the one being served)"
        ),
        method: str = typer.Option("lora", "--method", help="lora | qlora | dpo"),
        goal: str | None = typer.Option(
            None, "--goal", help="style | vocabulary | task | instruction (default: configured)"
        ),
        reason: str = typer.Option("", "--reason", help="Why (recorded with the job)"),
        requested_by: str = typer.Option("operator", "--by", help="Who asks (recorded)"),
    ) -> None:
        """Force a retrain request, bypassing the gate; recorded as `forced` in retrain_jobs."""
        import getpass

        from confluent_kafka import Producer

        from schemas.events import utcnow
        from schemas.topics import Topics
        from streams.config import WorkerSettings
        from streams.exceptions import BrokerUnavailable
        from workers.retrain_gate import (
            FORCED,
            GatePolicy,
            decide,
            gather_inputs,
            make_job_id,
            record_job_event,
            request_for,
        )
        from workers.store import open_store

        if method not in ("lora", "qlora", "dpo"):
            raise typer.BadParameter("choose lora, qlora or dpo", param_hint="--method")
        settings = WorkerSettings()
        now = utcnow()
        with open_store(settings.store) as store:
            inputs = gather_inputs(store, base_model, settings.retrain, settings.judge, now)
            if adapter:
                inputs = replace(inputs, adapter_version=adapter)
            if goal:
                if goal not in settings.retrain.min_examples:
                    raise typer.BadParameter(
                        f"choose one of {sorted(settings.retrain.min_examples)}",
                        param_hint="--goal",
                    )
                inputs = replace(inputs, task_goal=goal)
            gate = decide(inputs, GatePolicy.from_settings(settings.retrain), now)
            job_id = make_job_id(base_model, now)
            who = requested_by if requested_by != "operator" else f"operator:{getpass.getuser()}"
            request = request_for(
                inputs, gate, job_id=job_id, method=method, now=now, forced=True, requested_by=who
            )
            request = request.model_copy(
                update={"reason": f"forced by {who}: {reason or 'no reason given'}"}
            )
            producer = Producer({**settings.kafka.client_config(), "acks": "all"})
            errors: list[str] = []
            producer.produce(
                Topics(settings.kafka.topic_prefix).retrain_requests,
                key=base_model,
                value=request.to_bytes(),
                on_delivery=lambda err, _m: errors.append(str(err)) if err else None,
            )
            if producer.flush(30) or errors:
                raise BrokerUnavailable(
                    f"the retrain request was not delivered to {settings.kafka.bootstrap}: "
                    f"{errors or 'timed out'}; nothing was recorded"
                )
            record_job_event(
                store,
                base_model=base_model,
                adapter_version=inputs.adapter_version,
                decision=FORCED,
                reason=request.reason
                + (f" (the gate would have held: {gate.reason})" if not gate.fire else ""),
                job_id=job_id,
                details={**gate.details(), "method": method, "task_goal": inputs.task_goal},
                now=now,
            )
        console.print(
            f"forced retrain request [bold]{job_id}[/] for {base_model}/{inputs.adapter_version} "
            f"({method}, goal {inputs.task_goal})"
        )

    @retrain_app.command("decisions")
    def retrain_decisions(
        base_model: str | None = typer.Option(None, "--base-model", "-m"),
        limit: int = typer.Option(20, "--limit", "-n", min=1),
    ) -> None:
        """Recent gate decisions and job steps: why did (or didn't) we retrain?"""
        from streams.commands.core import store_settings
        from workers.store import open_store

        where = "WHERE base_model = {m:String} " if base_model else ""
        with open_store(store_settings()) as store:
            result = store.query(
                "SELECT ts, base_model, adapter_version, job_id, decision, reason "
                f"FROM retrain_jobs {where}ORDER BY ts DESC LIMIT {{n:UInt32}}",
                {"m": base_model, "n": limit} if base_model else {"n": limit},
            )
        print_table(result.columns, result.rows, title="retrain_jobs")

    @adapters_app.command("list")
    def adapters_list(
        base_model: str | None = typer.Option(None, "--base-model", "-m"),
        fmt: str = typer.Option("table", "--format", "-f", help="table | json"),
    ) -> None:
        """Every registered adapter, newest change first (the current one is marked *)."""
        from streams.commands.core import store_settings
        from trainer.registry import Registry
        from workers.store import open_store

        with open_store(store_settings()) as store:
            registry = Registry(store)
            records = registry.list_adapters(base_model)
            current = {r.base_model: registry.current(r.base_model) for r in records}
        if fmt == "json":
            console.print_json(json.dumps([r.to_row() for r in records], default=str))
            return
        rows = []
        for r in records:
            live = current.get(r.base_model)
            mark = "*" if live is not None and live.version == r.version else ""
            rows.append(
                (
                    mark,
                    r.base_model,
                    r.version,
                    r.status,
                    r.parent_version,
                    r.method,
                    _fmt(r.metrics.get("candidate_pass_rate")),
                    _fmt(r.metrics.get("incumbent_pass_rate")),
                    _fmt(r.metrics.get("mcnemar_p")),
                    r.dataset_hash[:12],
                    r.sha256[:12],
                    r.updated_at,
                )
            )
        columns = ["", "base_model", "version", "status", "parent", "method", "cand_pass",
                   "inc_pass", "p", "dataset", "sha256", "updated_at"]  # fmt: skip
        print_table(columns, rows, title="adapters")

    @adapters_app.command("rollback")
    def adapters_rollback(
        base_model: str = typer.Option(..., "--base-model", "-m"),
        deploy: bool = typer.Option(
            True,
            "--deploy/--no-deploy",
            help="Also serve the parent now (SENTRYML_DEPLOY_TARGET); --no-deploy leaves it "
            "to a running `sentryml deployer`",
        ),
    ) -> None:
        """Roll the current adapter back, re-promote the previous one (events emitted) and
        deploy it (or the base model alone) through the deployer."""
        from schemas.events import AdapterEvent
        from schemas.topics import Topics
        from streams.commands.deployer import deploy_service, describe
        from trainer.registry import AdapterEventPublisher, Registry
        from trainer.settings import TrainerSettings
        from workers.store import open_store

        settings = TrainerSettings()
        publisher = AdapterEventPublisher(
            settings.kafka, Topics(settings.kafka.topic_prefix).adapter_events
        )
        with open_store(settings.store) as store:
            rolled, restored = Registry(store).rollback(base_model)
            publisher.publish(rolled.event(message="rolled back by operator"))
            if restored is not None:
                publisher.publish(
                    restored.event(message=f"re-promoted: {rolled.version} rolled back")
                )
                console.print(f"rolled back {rolled.version}; {restored.version} is current again")
            else:
                publisher.publish(
                    AdapterEvent(
                        base_model=base_model,
                        adapter_version="none",
                        parent_version=rolled.version,
                        status="promoted",
                        message=f"{rolled.version} rolled back; no earlier adapter: base model alone",
                    )
                )
                console.print(
                    f"rolled back {rolled.version}; no earlier adapter: serve the base model"
                )
            service = deploy_service(store, publisher) if deploy else None
            if service is not None:
                from trainer.deploy import DeployError

                try:
                    console.print(describe(service.sync(base_model)))
                except DeployError as exc:
                    raise DeployError(
                        f"{rolled.version} is rolled back in the registry, but serving "
                        f"its parent failed: {exc}"
                    ) from exc
            elif deploy:
                console.print("SENTRYML_DEPLOY_TARGET is none: the serving model is unchanged")


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}"
