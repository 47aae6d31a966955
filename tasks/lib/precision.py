"""Numeric precision, chosen at run time from the hardware and logged: the retriever at inference
(index, evaluate, reindex, serve), the generator at inference (evaluate, serve) and both models'
LoRA training (bf16 autocast).

Each setting is `fp32 | bf16 | auto`:
  fp32  the weights as trained, float32 arithmetic
  bf16  bfloat16: weights and activations at inference; autocast (fp32 master weights and
        optimizer state) while training. Native on a CPU with AVX-512 BF16 or AMX, and on CUDA
  auto  bf16 where the hardware has it natively, fp32 elsewhere. For the retriever's inference
        that means CPUs only: bf16 there was not measured on CUDA yet
The generator's inference has one more, `mixed`: bf16 weights and matrix products in every
linear layer but the output head, fp32 for the rest (residual stream, norms, attention, logits);
its `auto` is mixed on a bf16 CPU and bf16 on CUDA (resolve_generation_precision).

Measured by bench/retriever_precision.py, bench/generator_precision.py and
bench/train_precision.py (speed and quality against fp32 in one run; figures in the README).
bf16 retriever vectors match fp32 ones to a mean cosine of ~1.000, so tables need no
re-embedding when the setting changes and the precision is not part of a table's fingerprint.

Usage:
    precision = resolve_precision(cfg.index.precision, "cpu")   # "bf16" on an AVX-512 BF16 CPU
    model = apply_precision(model, precision)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def cpu_has_bf16() -> bool:
    """Whether the CPU has native bf16 arithmetic (AVX-512 BF16 or AMX; Linux /proc/cpuinfo)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(f" {flag}" in flags for flag in ("avx512_bf16", "amx_bf16"))


def resolve_precision(setting: str, device: str) -> str:
    """The retriever's inference: auto -> bf16 on a CPU with native bf16, else fp32; an explicit
    choice stands."""
    if setting == "auto":
        return "bf16" if device == "cpu" and cpu_has_bf16() else "fp32"
    return setting


def resolve_model_precision(setting: str, device: str) -> str:
    """The generator's inference and LoRA training: auto -> bf16 on a CPU with native bf16 and on
    a CUDA GPU with bf16 support (the usual way to run a causal LM there), else fp32."""
    if setting == "auto" and device == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return resolve_precision(setting, device)


def resolve_generation_precision(setting: str, device: str) -> str:
    """The generator's inference: auto -> bf16 on a bf16 CUDA GPU, mixed on a CPU with native
    bf16 (measured there: full bf16 flipped too many greedy answers), else fp32; an explicit
    choice stands."""
    if setting != "auto":
        return setting
    resolved = resolve_model_precision(setting, device)
    return "mixed" if resolved == "bf16" and device == "cpu" else resolved


def bf16_matmuls(model: Any) -> Any:
    """The causal LM with bf16 weights in its linear layers except the output head; each such
    layer takes its input in bf16 and hands its output back in the activations' dtype, so the
    residual stream, norms, attention softmax, KV cache and logits stay fp32 ("mixed")."""
    import torch

    head = model.get_output_embeddings()
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            module.to(torch.bfloat16)
            module.register_forward_pre_hook(_inputs_to_bf16)
            module.register_forward_hook(_output_to_fp32)
    return model


def _inputs_to_bf16(module: Any, args: tuple) -> tuple:
    import torch

    return (args[0].to(torch.bfloat16), *args[1:])


def _output_to_fp32(module: Any, args: tuple, output: Any) -> Any:
    import torch

    return output.to(torch.float32)


def autocast_dtype(setting: str, device: str, stage: str | None = None) -> Any:
    """torch.bfloat16 when training at `setting` resolves to bf16 on `device`, else None; with
    `stage`, the choice is logged (`train_generator: bf16 autocast on cpu (... precision auto)`)."""
    bf16 = resolve_model_precision(setting, device) == "bf16"
    if stage is not None:
        log.info("%s: %s on %s (%s.precision %s)", stage, "bf16 autocast" if bf16 else "fp32",
                 device, stage, setting)
    if not bf16:
        return None
    import torch

    return torch.bfloat16


def apply_precision(model: Any, precision: str) -> Any:
    """The SentenceTransformer for inference at `precision`: bf16 converted in place, fp32 as is."""
    if precision == "bf16":
        import torch

        model.to(torch.bfloat16)
    return model.eval()
