"""Deploying promoted adapters: llama.cpp (GGUF LoRA + restart) and vLLM (runtime LoRA API).

The llama.cpp tests are end to end on real parts: PEFT adapters trained for one step on the
demo model (SmolLM2-135M), converted by llama.cpp's own ``convert_lora_to_gguf.py`` (kept
by ``make setup``), served by a real ``llama_cpp.server`` that the deployer restarts.

A real vLLM server cannot run on this machine (no GPU, no CPU build installed), so the vLLM
deployer is tested against ``tests/servers/vllm_lora.py``: a real local HTTP server that
enforces the request shapes and status codes vLLM documents for ``/v1/load_lora_adapter``
and ``/v1/unload_lora_adapter`` and records every call.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from schemas.events import AdapterEvent, decode_event
from tests.conftest import REPO, _free_port
from tests.servers.vllm_lora import FakeVLLM
from trainer.deploy import (
    AdapterIntegrityError,
    AdapterNotApplied,
    ConverterUnavailable,
    DeployService,
    DeploySettings,
    LlamaCppDeployer,
    ServingRequestFailed,
    VLLMDeployer,
    convert_lora,
    find_converter,
    inspect_lora_gguf,
)
from trainer.registry import AdapterRecord, Registry, weights_sha256
from workers.kafka import KafkaSettings
from workers.store import StoreSettings

MODEL = "smollm2-135m-instruct"


class Recorder:
    """An event sink that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[AdapterEvent] = []

    def publish(self, event: AdapterEvent) -> None:
        self.events.append(event)


def register(
    registry: Registry, version: str, folder: Path, *, parent: str = "none"
) -> AdapterRecord:
    """Put ``folder`` in the registry as the promoted adapter ``version``."""
    return registry.upsert(
        AdapterRecord(
            version=version,
            base_model=MODEL,
            parent_version=parent,
            sha256=weights_sha256(folder),
            path=str(folder),
            status="promoted",
            job_id=f"job-{version}",
        )
    )


def fake_adapter(folder: Path, payload: bytes) -> Path:
    """A folder shaped like a saved PEFT adapter (for the vLLM server, which reads paths)."""
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    (folder / "adapter_model.safetensors").write_bytes(payload)
    return folder


# --- settings and set-up --------------------------------------------------------------------
def test_settings_come_from_sentryml_deploy_env_and_hide_the_api_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SENTRYML_DEPLOY_TARGET", "vllm")
    monkeypatch.setenv("SENTRYML_DEPLOY_VLLM_BASE_URL", "http://gpu-1:8000/v1/")
    monkeypatch.setenv("SENTRYML_DEPLOY_VLLM_API_KEY", "sk-secret-123")
    monkeypatch.setenv("SENTRYML_DEPLOY_VLLM_PATH_MAP", '{"/data/adapters": "/mnt/a"}')
    settings = DeploySettings()
    assert settings.target == "vllm" and settings.vllm_base_url == "http://gpu-1:8000/v1"
    assert settings.vllm_api_key is not None
    assert settings.vllm_api_key.get_secret_value() == "sk-secret-123"
    assert "sk-secret-123" not in repr(settings) and "sk-secret-123" not in str(
        settings.model_dump(mode="json")
    )
    deployer = VLLMDeployer(settings)
    assert deployer.server_path(Path("/data/adapters/m/ft-1")) == "/mnt/a/m/ft-1"
    assert deployer.server_path(Path("/data/adapters2/x")) == "/data/adapters2/x"
    monkeypatch.setenv("SENTRYML_DEPLOY_TARGET", "ollama")
    with pytest.raises(ValidationError, match="llama_cpp"):
        DeploySettings()


def test_a_missing_converter_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(ConverterUnavailable) as info:
        find_converter(tmp_path)
    assert "make setup" in str(info.value) and "SENTRYML_DEPLOY_CONVERTER_DIR" in str(info.value)


# --- vLLM (against the documented API, served by tests/servers/vllm_lora.py) ---------------
@pytest.fixture
def vllm() -> Iterator[FakeVLLM]:
    with FakeVLLM(base_model=MODEL, api_key="sk-vllm") as server:
        yield server


def vllm_service(store: Any, server: FakeVLLM, **settings: Any) -> tuple[DeployService, Recorder]:
    deploy = DeploySettings(
        target="vllm", vllm_base_url=server.base_url, vllm_api_key="sk-vllm", **settings
    )
    events = Recorder()
    return DeployService(Registry(store), VLLMDeployer(deploy), events=events), events


def test_vllm_loads_through_the_documented_endpoints_and_rollback_redeploys_the_parent(
    store: Any, vllm: FakeVLLM, tmp_path: Path
) -> None:
    """Promote v1, promote v2, roll back twice: each step takes the same deployer path and
    ends with the registry's current adapter (then the base model alone) serving."""
    registry = Registry(store)
    service, events = vllm_service(store, vllm)
    v1 = fake_adapter(tmp_path / "v1", b"weights one")
    v2 = fake_adapter(tmp_path / "v2", b"weights two")
    register(registry, "v1", v1)

    first = service.sync(MODEL)
    load = vllm.posts("load_lora_adapter")
    assert [c.body for c in load] == [{"lora_name": "v1", "lora_path": str(v1)}]
    assert load[0].headers["content-type"] == "application/json"
    assert load[0].headers["authorization"] == "Bearer sk-vllm"
    assert load[0].status == 200
    assert [c.body["model"] for c in vllm.posts("completions")] == ["v1"]
    assert first.served_model == "v1" and first.changed
    (event,) = events.events
    assert (event.status, event.adapter_version, event.served_model) == ("deployed", "v1", "v1")
    assert event.endpoint == vllm.base_url and event.served_sha256 == weights_sha256(v1)
    assert registry.get(MODEL, "v1").status == "deployed"  # type: ignore[union-attr]

    register(registry, "v2", v2, parent="v1")
    service.sync(MODEL)
    routes = [c.path.rsplit("/", 1)[1] for c in vllm.calls if c.method == "POST"]
    # the new adapter is loaded and answers before the old one is unloaded
    assert routes[-3:] == ["load_lora_adapter", "completions", "unload_lora_adapter"]
    assert vllm.posts("unload_lora_adapter")[-1].body == {"lora_name": "v1"}
    assert vllm.loaded == {"v2": str(v2)}
    assert events.events[-1].adapter_version == "v2"

    registry.rollback(MODEL)  # v2 rolled back, v1 re-promoted
    service.sync(MODEL)
    assert vllm.loaded == {"v1": str(v1)}
    assert (events.events[-1].adapter_version, events.events[-1].served_model) == ("v1", "v1")
    assert registry.current(MODEL).status == "deployed"  # type: ignore[union-attr]

    registry.rollback(MODEL)  # v1 rolled back, nothing before it: the base model alone
    base = service.sync(MODEL)
    assert vllm.loaded == {} and base.served_model == MODEL
    last = events.events[-1]
    assert (last.adapter_version, last.parent_version, last.served_model) == ("none", "v1", MODEL)

    calls, published = len(vllm.posts("load_lora_adapter")), len(events.events)
    again = service.sync(MODEL)  # a replayed event: nothing changes, nothing is announced
    assert not again.changed and len(events.events) == published
    assert len(vllm.posts("load_lora_adapter")) == calls


def test_vllm_without_runtime_lora_updating_names_the_variable(store: Any, tmp_path: Path) -> None:
    with FakeVLLM(base_model=MODEL, api_key="sk-vllm", runtime_updating=False) as server:
        registry = Registry(store)
        register(registry, "v1", fake_adapter(tmp_path / "v1", b"w"))
        service, events = vllm_service(store, server)
        with pytest.raises(ServingRequestFailed, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"):
            service.sync(MODEL)
    assert events.events == [] and registry.get(MODEL, "v1").status == "promoted"  # type: ignore[union-attr]


def test_vllm_load_failure_keeps_the_previous_adapter_serving(
    store: Any, vllm: FakeVLLM, tmp_path: Path
) -> None:
    """A path the vLLM host cannot read (here: mapped to a folder that does not exist) is
    refused with vLLM's own message; the adapter that served before is not unloaded."""
    registry = Registry(store)
    v1 = fake_adapter(tmp_path / "v1", b"one")
    register(registry, "v1", v1)
    vllm_service(store, vllm)[0].sync(MODEL)
    register(registry, "v2", fake_adapter(tmp_path / "v2", b"two"), parent="v1")
    mapped, events = vllm_service(store, vllm, vllm_path_map={str(tmp_path / "v2"): "/nowhere/v2"})
    with pytest.raises(ServingRequestFailed, match="No adapter found for /nowhere/v2"):
        mapped.sync(MODEL)
    assert vllm.posts("load_lora_adapter")[-1].body["lora_path"] == "/nowhere/v2"
    assert vllm.loaded == {"v1": str(v1)} and events.events == []


def test_weights_changed_after_promotion_are_not_deployed(
    store: Any, vllm: FakeVLLM, tmp_path: Path
) -> None:
    registry = Registry(store)
    folder = fake_adapter(tmp_path / "v1", b"promoted weights")
    register(registry, "v1", folder)
    (folder / "adapter_model.safetensors").write_bytes(b"something else")
    service, events = vllm_service(store, vllm)
    with pytest.raises(AdapterIntegrityError, match="changed after promotion"):
        service.sync(MODEL)
    assert vllm.calls == [] and events.events == []


# --- llama.cpp (real converter, real server) -----------------------------------------------
@pytest.fixture(scope="session")
def demo_base() -> Any:
    """The demo model's Hugging Face folder (converted once per machine)."""
    from trainer.demo_model import ensure_demo_model

    return ensure_demo_model()


def train_lora(base: Path, out: Path, *, seed: int, steps: int = 1, lr: float = 1e-2) -> Path:
    """A real PEFT LoRA (rank 2 on q/v) on the demo model, ``steps`` AdamW steps on one
    support answer; ``steps=0`` saves PEFT's initial adapter (``lora_B`` all zero)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    peft_model = get_peft_model(model, config)
    batch = tokenizer(['{"intent": "refund", "answer": "Open Account > Refund."}'] * 2,
                      return_tensors="pt")  # fmt: skip
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        loss = peft_model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def loras(demo_base: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loras")
    return {
        "v1": train_lora(demo_base, root / "v1", seed=1),
        "v2": train_lora(demo_base, root / "v2", seed=2, lr=2e-2),
        "zero": train_lora(demo_base, root / "zero", seed=3, steps=0),
    }


@pytest.fixture
def llama_dir(tmp_path: Path) -> Iterator[Path]:
    """A real llama.cpp server (scripts/llm_local.py) of this test's own, base model only."""
    data = tmp_path / "llm"
    script = REPO / "scripts" / "llm_local.py"
    subprocess.run(
        [sys.executable, str(script), "start", "--dir", str(data), "--port", str(_free_port()),
         "--threads", "1", "--ctx", "512"],
        check=True,
    )  # fmt: skip
    try:
        yield data
    finally:
        subprocess.run([sys.executable, str(script), "stop", "--dir", str(data)], check=False)


def served_lora(llama_dir: Path) -> str | None:
    return json.loads((llama_dir / "server.json").read_text())["lora"]


@pytest.mark.slow
def test_a_peft_adapter_converts_to_a_gguf_lora_once(
    demo_base: Path, loras: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "v1.gguf"
    source = weights_sha256(loras["v1"])
    started = time.perf_counter()
    converted = convert_lora(loras["v1"], out, base_dir=demo_base, source_sha256=source)
    print(f"\nconversion of a rank-2 q/v adapter: {time.perf_counter() - started:.1f}s")
    info = inspect_lora_gguf(out)
    # 30 layers x (q, v) x (lora_a, lora_b), alpha from adapter_config.json
    assert info == {"type": "adapter/lora", "architecture": "llama", "alpha": 4.0, "tensors": 120}
    assert not converted.reused and converted.sha256 == weights_sha256_file(out)
    again = convert_lora(loras["v1"], out, base_dir=demo_base, source_sha256=source)
    assert again.reused and again.sha256 == converted.sha256
    other = convert_lora(loras["v2"], out, base_dir=demo_base, source_sha256="changed")
    assert not other.reused and other.sha256 != converted.sha256


def weights_sha256_file(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_llama_cpp_serves_the_promoted_adapter_and_rollback_redeploys_the_parent(
    store: Any, loras: dict[str, Path], llama_dir: Path
) -> None:
    registry = Registry(store)
    events = Recorder()
    deployer = LlamaCppDeployer(DeploySettings(target="llama_cpp", llama_dir=llama_dir))
    service = DeployService(registry, deployer, events=events)
    base_url = (llama_dir / "base_url").read_text()

    register(registry, "v1", loras["v1"])
    first = service.sync(MODEL)
    gguf_v1 = llama_dir / "loras" / MODEL / "v1.gguf"
    assert served_lora(llama_dir) == str(gguf_v1) == first.artifact
    assert first.verified.startswith("probe differs from the base model's")
    models = httpx.get(f"{base_url}/models").json()["data"]
    assert [m["id"] for m in models] == [MODEL]
    answer = httpx.post(
        f"{base_url}/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8},
        timeout=120,
    ).json()
    assert answer["choices"][0]["message"]["content"]
    (event,) = events.events
    assert (event.status, event.adapter_version, event.served_model) == ("deployed", "v1", MODEL)
    assert event.served_sha256 == weights_sha256_file(gguf_v1) and event.path == str(gguf_v1)
    assert event.sha256 == weights_sha256(loras["v1"]) and event.endpoint == base_url
    assert registry.get(MODEL, "v1").status == "deployed"  # type: ignore[union-attr]
    print(f"\nv1: {first.timings}")

    register(registry, "v2", loras["v2"], parent="v1")
    second = service.sync(MODEL)
    assert served_lora(llama_dir) == str(llama_dir / "loras" / MODEL / "v2.gguf")
    assert second.replaced == "v1" and events.events[-1].adapter_version == "v2"
    print(f"v2: {second.timings}")

    registry.rollback(MODEL)  # v1 is current again: redeployed from its cached GGUF
    back = service.sync(MODEL)
    assert served_lora(llama_dir) == str(gguf_v1) and back.timings["convert_s"] == 0.0
    assert events.events[-1].adapter_version == "v1"
    assert registry.current(MODEL).version == "v1"  # type: ignore[union-attr]
    print(f"rollback to v1: {back.timings}")

    registry.rollback(MODEL)  # nothing before v1: the base model alone
    base = service.sync(MODEL)
    assert served_lora(llama_dir) is None and base.served_model == MODEL
    assert (events.events[-1].adapter_version, events.events[-1].parent_version) == ("none", "v1")
    assert not service.sync(MODEL).changed and len(events.events) == 4


@pytest.mark.slow
def test_an_adapter_that_changes_nothing_is_refused_and_the_previous_one_restored(
    store: Any, loras: dict[str, Path], llama_dir: Path
) -> None:
    """PEFT initialises ``lora_B`` to zero: such an adapter loads, but the server answers
    exactly as the base model does, so the deployment is refused and v1 serves again."""
    registry = Registry(store)
    events = Recorder()
    deployer = LlamaCppDeployer(DeploySettings(target="llama_cpp", llama_dir=llama_dir))
    service = DeployService(registry, deployer, events=events)
    register(registry, "v1", loras["v1"])
    service.sync(MODEL)
    register(registry, "zero", loras["zero"], parent="v1")
    with pytest.raises(AdapterNotApplied, match="exactly as the base model"):
        service.sync(MODEL)
    assert served_lora(llama_dir) == str(llama_dir / "loras" / MODEL / "v1.gguf")
    assert [e.adapter_version for e in events.events] == ["v1"]
    assert registry.get(MODEL, "zero").status == "promoted"  # type: ignore[union-attr]


# --- the deployer process and the rollback command -------------------------------------------
@pytest.mark.kafka
def test_the_deployer_deploys_on_promoted_events_and_the_rollback_command_redeploys(
    kafka: KafkaSettings,
    store: Any,
    store_settings: StoreSettings,
    vllm: FakeVLLM,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from confluent_kafka import Consumer
    from typer.testing import CliRunner

    from schemas.topics import Topics
    from streams.commands import deployer as deployer_cmd
    from streams.commands import trainer as trainer_cmd
    from streams.deployer import DeployerAgent
    from streams.topics import create_topics
    from trainer.registry import AdapterEventPublisher

    create_topics(kafka)
    topic = Topics(kafka.topic_prefix).adapter_events
    publisher = AdapterEventPublisher(kafka, topic)
    registry = Registry(store)
    record = register(registry, "v1", fake_adapter(tmp_path / "v1", b"one"))
    publisher.publish(record.event(message="promoted by the trainer"))

    deploy = DeploySettings(target="vllm", vllm_base_url=vllm.base_url, vllm_api_key="sk-vllm")
    service = DeployService(registry, VLLMDeployer(deploy), events=publisher)
    agent = DeployerAgent(kafka, topic, service, group=f"d-{uuid.uuid4().hex[:8]}")
    (handled,) = agent.run(max_events=1)
    assert handled.deployment is not None and handled.deployment.served_model == "v1"
    assert vllm.loaded == {"v1": str(tmp_path / "v1")}

    env = {
        "SENTRYML_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "SENTRYML_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "SENTRYML_STORE_URL": store_settings.url,
        "SENTRYML_STORE_DATABASE": store_settings.database,
        "SENTRYML_DEPLOY_TARGET": "vllm",
        "SENTRYML_DEPLOY_VLLM_BASE_URL": vllm.base_url,
        "SENTRYML_DEPLOY_VLLM_API_KEY": "sk-vllm",
        "COLUMNS": "200",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    import typer

    app = typer.Typer()
    trainer_cmd.register(app)
    deployer_cmd.register(app)
    result = CliRunner().invoke(app, ["adapters", "rollback", "-m", MODEL])
    assert result.exit_code == 0, result.output
    assert "no earlier adapter" in result.output and f"as '{MODEL}'" in result.output
    assert vllm.loaded == {}

    consumer = Consumer({**kafka.client_config(), "group.id": f"r-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest"})  # fmt: skip
    consumer.subscribe([topic])
    seen: list[AdapterEvent] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(seen) < 5:
        msg = consumer.poll(1.0)
        if msg is not None and not msg.error():
            seen.append(decode_event(msg.value(), AdapterEvent))
    consumer.close()
    assert [(e.status, e.adapter_version) for e in seen] == [
        ("promoted", "v1"),
        ("deployed", "v1"),
        ("rolled_back", "v1"),
        ("promoted", "none"),
        ("deployed", "none"),
    ]
    assert seen[-1].served_model == MODEL and seen[1].served_model == "v1"

    # the running deployer then sees the rollback's events: already served, nothing to do
    again = DeployerAgent(kafka, topic, service, group=f"d-{uuid.uuid4().hex[:8]}")
    replayed = again.run(max_events=3)  # promoted v1, rolled_back v1, promoted none
    assert [h.deployment.adapter_version for h in replayed if h.deployment] == ["none"] * 3
    assert [h.deployment.changed for h in replayed if h.deployment] == [False] * 3
