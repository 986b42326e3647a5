"""`sentryml deployer`: serve every promoted adapter (and every rollback's parent)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from streams.console import console, print_table

if TYPE_CHECKING:
    from trainer.deploy import Deployment, DeployService, EventSink
    from workers.store import Store


def deploy_service(store: Store, publisher: EventSink | None) -> DeployService | None:
    """The deploy service of ``SENTRYML_DEPLOY_*`` on ``store``, or None (target ``none``).

    Shared by `sentryml deployer` and `sentryml adapters rollback`, so a rollback takes the
    same deployer path as a promotion.
    """
    from trainer.deploy import DeployService, DeploySettings, make_deployer
    from trainer.registry import Registry

    deployer = make_deployer(DeploySettings())
    if deployer is None:
        return None
    return DeployService(Registry(store), deployer, events=publisher)


def describe(deployment: Deployment) -> str:
    """One line for the operator."""
    what = "now serves" if deployment.changed else "already serves"
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in deployment.timings.items())
    return (
        f"{deployment.target} at {deployment.endpoint} {what} {deployment.base_model}/"
        f"{deployment.adapter_version} as {deployment.served_model!r}"
        + (f" ({timings})" if timings else "")
    )


def register(app: typer.Typer) -> None:
    @app.command("deployer")
    def deployer(
        sync: list[str] | None = typer.Option(
            None,
            "--sync",
            "-m",
            help="Deploy the current adapter of this base model at start (repeatable)",
        ),
        max_events: int | None = typer.Option(
            None, "--max-events", min=0, help="Exit after this many deploy events (0: sync only)"
        ),
        show_config: bool = typer.Option(
            False, "--show-config", help="Print the SENTRYML_DEPLOY_* settings and exit"
        ),
    ) -> None:
        """Deploy on every promoted / rolled_back adapter event (SENTRYML_DEPLOY_TARGET)."""
        from schemas.topics import Topics
        from streams.deployer import DeployerAgent
        from trainer.deploy import DeploySettings, InvalidDeploySettings
        from trainer.registry import AdapterEventPublisher
        from trainer.settings import TrainerSettings
        from workers.settings import redacted
        from workers.store import open_store

        deploy = DeploySettings()
        if show_config:
            values = redacted(deploy)
            print_table(
                ["setting", "value", "help"],
                [
                    (f"SENTRYML_DEPLOY_{name.upper()}", repr(values[name]), field.description)
                    for name, field in DeploySettings.model_fields.items()
                ],
                title="deployer settings",
            )
            return
        if deploy.target == "none":
            raise InvalidDeploySettings(
                "SENTRYML_DEPLOY_TARGET is none: set it to llama_cpp (the local llama.cpp "
                "server) or vllm (a vLLM server with runtime LoRA updating)"
            )
        # Kafka and the store are the trainer's (SENTRYML_KAFKA_*, SENTRYML_STORE_*).
        settings = TrainerSettings()
        topic = Topics(settings.kafka.topic_prefix).adapter_events
        publisher = AdapterEventPublisher(settings.kafka, topic)
        store = open_store(settings.store)
        try:
            store.migrate()
            service = deploy_service(store, publisher)
            if service is None:  # unreachable: target checked above
                return
            for base_model in sync or []:
                console.print(describe(service.sync(base_model)))
            if max_events == 0:
                return
            console.print(
                f"[bold]deployer[/] ({deploy.target}) group {deploy.consumer_group} on "
                f"{settings.kafka.bootstrap}, topic {topic}"
            )
            agent = DeployerAgent(
                settings.kafka,
                topic,
                service,
                group=deploy.consumer_group,
                poll_timeout_s=deploy.poll_timeout_s,
            )
            try:
                handled = agent.run(max_events=max_events)
            except KeyboardInterrupt:
                console.print("stopped")
                return
        finally:
            store.close()
        for h in handled:
            event = h.event
            head = f"{h.where}: {event.status} {event.adapter_version}" if event else h.where
            console.print(f"{head} → {describe(h.deployment) if h.deployment else h.error}")
