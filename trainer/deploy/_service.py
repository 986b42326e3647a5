"""Make the server serve what the registry says is current, then say so.

Level-triggered, like a controller: an adapter event (``promoted``, ``rolled_back``) only
says *which base model* to look at. :meth:`DeployService.sync` reads the registry's current
adapter of that base model (the promoted or deployed one changed last, or the base model
alone), checks its weights are the promoted ones, hands it to the :class:`Deployer`, marks
it ``deployed`` in the registry and publishes an ``AdapterEvent`` ``deployed`` with the
served model's identity. Duplicated, replayed or reordered events therefore converge on
the same state, and an event that arrives when the server already serves the current
adapter (``sentryml adapters rollback`` deployed it itself) changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Protocol

from schemas.events import AdapterEvent, utcnow
from trainer.deploy._types import BASE_ONLY, Deployer, Deployment, Desired
from trainer.deploy.exceptions import AdapterIntegrityError
from trainer.exceptions import TrainerError
from trainer.registry import AdapterRecord, Registry, weights_sha256

log = logging.getLogger(__name__)

#: Adapter events after which the serving model may have to change.
DEPLOY_ON = frozenset({"promoted", "rolled_back"})


class EventSink(Protocol):
    def publish(self, event: AdapterEvent) -> None: ...


class DeployService:
    """Deploy the registry's current adapter of a base model with ``deployer``.

    ``events`` receives the ``deployed`` events (the Kafka publisher in production);
    ``now`` is injected for tests.
    """

    def __init__(
        self,
        registry: Registry,
        deployer: Deployer,
        events: EventSink | None = None,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.registry = registry
        self.deployer = deployer
        self.events = events
        self.now = now

    def desired(self, base_model: str) -> tuple[Desired, AdapterRecord | None]:
        """What should serve now: the registry's current adapter, or the base model alone."""
        record = self.registry.current(base_model)
        if record is None:
            replaced = next(
                (
                    r.version
                    for r in self.registry.list_adapters(base_model)
                    if r.status == "rolled_back"
                ),
                BASE_ONLY,
            )
            return Desired(base_model=base_model, parent_version=replaced), None
        return (
            Desired(
                base_model=base_model,
                version=record.version,
                adapter_dir=Path(record.path) if record.path else None,
                sha256=record.sha256,
                parent_version=record.parent_version,
                job_id=record.job_id,
            ),
            record,
        )

    def sync(self, base_model: str) -> Deployment:
        """Serve the current adapter of ``base_model``; mark and announce it when that
        changed anything (or the registry did not say ``deployed`` yet)."""
        desired, record = self.desired(base_model)
        if record is not None:
            check_weights(desired)
        managed = [r.version for r in self.registry.list_adapters(base_model)]
        deployment = self.deployer.deploy(desired, managed)
        marked = record is None or record.status == "deployed"
        if deployment.changed or not marked:
            if record is not None and record.status != "deployed":
                self.registry.set_status(base_model, record.version, "deployed")
            self._publish(desired, deployment)
        else:
            log.info(
                "%s/%s already serves as %r on %s; nothing to do",
                base_model,
                desired.version,
                deployment.served_model,
                deployment.target,
            )
        return deployment

    def _publish(self, desired: Desired, deployment: Deployment) -> None:
        if self.events is None:
            return
        replaced = deployment.replaced or desired.parent_version
        self.events.publish(
            AdapterEvent(
                ts=self.now(),
                base_model=desired.base_model,
                adapter_version=desired.version,
                parent_version=desired.parent_version,
                status="deployed",
                job_id=desired.job_id,
                metrics=dict(deployment.timings),
                path=deployment.artifact or None,
                sha256=desired.sha256 or None,
                served_model=deployment.served_model,
                endpoint=deployment.endpoint,
                served_sha256=deployment.artifact_sha256 or None,
                message=(
                    f"deployed to {deployment.target} as {deployment.served_model!r} "
                    f"(replaced {replaced or BASE_ONLY}); {deployment.verified}"
                ),
            )
        )


def check_weights(desired: Desired) -> None:
    """Raise :class:`AdapterIntegrityError` unless ``desired``'s folder holds the weights the
    registry promoted (same SHA-256)."""
    folder = desired.adapter_dir
    if folder is None or not folder.is_dir():
        raise AdapterIntegrityError(
            f"adapter {desired.base_model}/{desired.version} has no folder at {folder}: "
            "restore it, or roll back (`sentryml adapters rollback`)"
        )
    if not desired.sha256:
        return
    try:
        digest = weights_sha256(folder)
    except (TrainerError, OSError) as exc:  # no weight files, unreadable folder
        raise AdapterIntegrityError(f"cannot read the weights in {folder}: {exc}") from exc
    if digest != desired.sha256:
        raise AdapterIntegrityError(
            f"the weights in {folder} (sha256 {digest[:12]}) are not the ones promoted as "
            f"{desired.version} ({desired.sha256[:12]}): the folder changed after promotion; "
            "restore it or roll back"
        )
