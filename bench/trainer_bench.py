"""Trainer benchmark: base-weight memory in NF4 4-bit vs 16/32-bit, LoRA trainable share,
training steps/s (CPU; CUDA too when a GPU is visible). Writes ``bench/results/trainer.json``.

    .venv/bin/python -m bench.trainer_bench [--steps 6] [--out bench/results/trainer.json]

Memory is measured on the same model (the SmolLM2-135M demo model) loaded three ways, with
``model.get_memory_footprint()`` (parameters and buffers as stored), and separately for the
weights of the Linear layers alone: those are what NF4 quantizes; embeddings and norms stay
in 16-bit, so the whole-model saving of a small model with a large vocabulary is lower.
Rows follow the shape of ``bench/common.py`` (ours, reference, ratio = ours/reference).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

OUT = Path(__file__).resolve().parent / "results" / "trainer.json"


def row(name: str, title: str, ours: float | None, reference: float | None, unit: str, *,
        better: str, ours_label: str, reference_label: str, n: int = 1,
        target_ratio: float | None = None, note: str = "", **extra: Any) -> dict[str, Any]:  # fmt: skip
    ratio = round(ours / reference, 4) if ours is not None and reference else None
    meets = None
    if target_ratio is not None and ratio is not None:
        meets = ratio >= target_ratio if better == "higher" else ratio <= target_ratio
    sign = ">=" if better == "higher" else "<="
    return {
        "name": name, "title": title, "ours": ours, "reference": reference, "unit": unit,
        "n": n, "better": better, "ours_label": ours_label, "reference_label": reference_label,
        "target_ratio": target_ratio,
        "target": f"ratio {sign} {target_ratio:g}" if target_ratio is not None else "",
        "meets_target": meets, "note": note, "extra": extra, "ratio": ratio,
    }  # fmt: skip


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "cores": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    from importlib import metadata

    for pkg in ("transformers", "peft", "trl", "bitsandbytes"):
        info[pkg] = metadata.version(pkg)
    return info


def linear_weight_bytes(model: Any) -> int:
    """Bytes of the weights of every nn.Linear / bnb Linear4bit except the LM head (which
    bitsandbytes leaves unquantized), including NF4 quantization constants."""
    import torch

    total = 0
    for name, module in model.named_modules():
        if name.endswith("lm_head") or not isinstance(module, torch.nn.Linear):
            continue
        w = module.weight
        total += w.numel() * w.element_size()
        state = getattr(w, "quant_state", None)
        if state is not None:  # absmax (double-quantized: uint8 + a small float table)
            for t in (state.absmax, getattr(state.state2, "absmax", None) if state.state2 else None,
                      getattr(state.state2, "code", None) if state.state2 else None):  # fmt: skip
                if t is not None:
                    total += t.numel() * t.element_size()
    return total


def memory_rows(path: Path, device: str) -> list[dict[str, Any]]:
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    sizes: dict[str, tuple[int, int]] = {}
    for label in ("float32", "bfloat16", "nf4"):
        kwargs: dict[str, Any] = {"dtype": torch.float32 if label == "float32" else torch.bfloat16}
        if label == "nf4":
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
            )  # fmt: skip
            kwargs["device_map"] = {"": device}
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        if label != "nf4":
            model = model.to(device)
        sizes[label] = (int(model.get_memory_footprint()), linear_weight_bytes(model))
        print(f"[{device}] {label}: footprint {sizes[label][0] / 2**20:.1f} MiB, "
              f"linear weights {sizes[label][1] / 2**20:.1f} MiB", flush=True)  # fmt: skip
        del model
        gc.collect()
    mib = 2**20
    out = []
    for ref in ("bfloat16", "float32"):
        bits = "16" if ref == "bfloat16" else "32"
        out.append(row(
            f"trainer.memory.whole_model.nf4_vs_{ref}.{device}",
            f"demo model weights in memory, NF4 vs {bits}-bit ({device})",
            round(sizes["nf4"][0] / mib, 2), round(sizes[ref][0] / mib, 2), "MiB",
            better="lower", ours_label="NF4 4-bit + double quant (QLoRA base)",
            reference_label=f"{ref}", target_ratio=0.4 if ref == "bfloat16" else None,
            note="whole model: the 28M-parameter embedding (21% of SmolLM2-135M) is not "
            "quantized, so the saving is below the 4-bit/16-bit ideal",
            saving=round(1 - sizes["nf4"][0] / sizes[ref][0], 4),
        ))  # fmt: skip
        out.append(row(
            f"trainer.memory.linear_weights.nf4_vs_{ref}.{device}",
            f"Linear-layer weights, NF4 vs {bits}-bit ({device})",
            round(sizes["nf4"][1] / mib, 2), round(sizes[ref][1] / mib, 2), "MiB",
            better="lower", ours_label="NF4 4-bit + quantization constants",
            reference_label=f"{ref}", target_ratio=0.4 if ref == "bfloat16" else None,
            note="what QLoRA quantizes: every Linear except the LM head",
            saving=round(1 - sizes["nf4"][1] / sizes[ref][1], 4),
        ))  # fmt: skip
    return out


def trainable_rows(path: Path) -> list[dict[str, Any]]:
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from trainer.config import TrainConfig, build_lora_config

    out = []
    for label, cfg in (
        ("default: r=8, q/k/v/o", TrainConfig()),
        ("r=16, all linear", TrainConfig(lora_r=16, lora_alpha=32, target_modules=[
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])),
    ):  # fmt: skip
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(path), build_lora_config(cfg))
        trainable, total = model.get_nb_trainable_parameters()
        print(
            f"LoRA {label}: {trainable:,} of {total:,} ({100 * trainable / total:.3f}%)", flush=True
        )
        out.append(row(
            f"trainer.lora.trainable_share.r{cfg.lora_r}_{len(cfg.target_modules)}mod",
            f"LoRA trainable parameters ({label})", int(trainable), int(total), "params",
            better="lower", ours_label="trainable (adapters)", reference_label="all parameters",
            note="claim to check: 0.1–1% of the model", share_percent=round(100 * trainable / total, 4),
        ))  # fmt: skip
        del model
        gc.collect()
    return out


def _examples(tokenizer: Any, n: int) -> Any:
    from trainer.dataset import BuiltDataset, Example, dataset_hash, render

    intents = ["order", "refund", "invoice", "delivery", "subscription", "password_reset"]
    examples = []
    for i in range(n):
        intent = intents[i % len(intents)]
        prompt = f"Question {i}: I need help with my {intent.replace('_', ' ')} please."
        target = json.dumps({"intent": intent, "answer": f"Open Account > {intent.title()}."})
        p, c = render(tokenizer, prompt, target, "Reply in JSON.")
        rejected = render(tokenizer, prompt, "I don't know.", "Reply in JSON.")[1]
        examples.append(Example(f"b{i}", "correction", prompt, target, "I don't know.", p, c,
                                rejected, holdout=False))  # fmt: skip
    return lambda method: BuiltDataset(tuple(examples), method, dataset_hash(examples), {})


def speed_rows(path: Path, device: str, steps: int, tmp: Path) -> list[dict[str, Any]]:
    from trainer.config import TrainConfig
    from trainer.train import load_tokenizer, train_adapter

    data = _examples(load_tokenizer(path), 64)
    cfg = TrainConfig(base_model_path=str(path), device=device, max_steps=steps, batch_size=4,
                      max_seq_length=128, warmup_ratio=0.0, lora_r=8)  # fmt: skip
    rates: dict[str, float] = {}
    for method in ("lora", "qlora", "dpo"):
        stamps: list[float] = []
        result = train_adapter(cfg, data(method), tmp / f"{method}-{device}", method=method,
                               on_step=lambda *_, s=stamps: s.append(time.perf_counter()))  # fmt: skip
        # Steady state: from the end of step 1 to the end of the last (first step warms up).
        rates[method] = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
        print(f"[{device}] {method}: {rates[method]:.3f} steps/s steady "
              f"({result.steps} steps, batch 4, <=128 tokens)", flush=True)  # fmt: skip
        del result
        gc.collect()
    return [
        row(f"trainer.speed.qlora_vs_lora.{device}",
            f"training steps/s, QLoRA vs LoRA ({device}, batch 4, <=128 tokens)",
            round(rates["qlora"], 4), round(rates["lora"], 4), "steps/s", better="higher",
            ours_label="QLoRA (NF4 base)", reference_label="LoRA (16/32-bit base)", n=steps,
            note="4-bit buys memory; each forward also dequantizes the base weights"),
        row(f"trainer.speed.dpo_vs_lora.{device}",
            f"training steps/s, DPO vs SFT LoRA ({device})",
            round(rates["dpo"], 4), round(rates["lora"], 4), "steps/s", better="higher",
            ours_label="DPO (chosen+rejected, reference pass)", reference_label="SFT LoRA", n=steps),
    ]  # fmt: skip


def main() -> None:
    import tempfile

    import torch

    from trainer.demo_model import ensure_demo_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per speed run")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--skip-speed", action="store_true", help="memory and share only")
    args = parser.parse_args()
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    info = machine()
    path = ensure_demo_model()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows: list[dict[str, Any]] = []
    for device in devices:
        rows += memory_rows(path, device)
    rows += trainable_rows(path)
    if not args.skip_speed:
        with tempfile.TemporaryDirectory() as tmp:
            for device in devices:
                rows += speed_rows(path, device, args.steps, Path(tmp))
    payload = {
        "benchmark": "trainer",
        "created_at": started.isoformat(),
        "duration_s": round(time.perf_counter() - t0, 1),
        "machine": info,
        "rows": rows,
        "notes": [
            "CPU training runs in float32: bfloat16 autocast on a CPU without native bf16 "
            "(no AVX512-BF16/AMX) is emulated and several times slower.",
            "steps/s on a shared machine is noisy; compare the ratios, measured back to back.",
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
