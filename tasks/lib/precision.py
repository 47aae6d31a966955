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
linear layer, fp32 for the rest (residual stream, norms, attention, logits; the output head's
top candidates are rescored in fp32, so a greedy pick between close tokens is the fp32 one);
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
    residual stream, norms, attention softmax, KV cache and logits stay fp32 ("mixed"). The
    output head multiplies in bf16 too, its best candidates rescored in fp32 (rescored_head)."""
    import torch

    head = model.get_output_embeddings()
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            module.to(torch.bfloat16)
            module.register_forward_pre_hook(_inputs_to_bf16)
            module.register_forward_hook(_output_to_fp32)
    if isinstance(head, torch.nn.Linear):
        model.set_output_embeddings(rescored_head(head))
    return model


def rescored_head(head: Any, rescore: int = 16) -> Any:
    """The mixed generator's output head, from the model's fp32 one (see RescoredHead below)."""
    import torch

    class RescoredHead(torch.nn.Module):
        """The output head in bf16 with the top candidates rescored in fp32: the vocabulary-wide
        product runs at bf16 speed, and the `rescore` best tokens per position get their exact
        fp32 logits from the fp32 weights (the tied embedding's own tensor, not a copy), so a
        greedy pick between close candidates is the fp32 one. The other logits stay approximate
        (bf16-rounded, returned as fp32)."""

        def __init__(self, head: Any, rescore: int = 16) -> None:
            super().__init__()
            self.weight = head.weight  # fp32, shared with the input embedding when tied
            self.bias = head.bias
            self.register_buffer("weight_bf16", head.weight.detach().to(torch.bfloat16),
                                 persistent=False)
            self.rescore = min(rescore, head.weight.shape[0])

        def forward(self, hidden: Any) -> Any:
            hidden = hidden.float()
            logits = torch.nn.functional.linear(hidden.to(torch.bfloat16), self.weight_bf16).float()
            if self.bias is not None:
                logits = logits + self.bias
            top = logits.topk(self.rescore, dim=-1).indices  # [..., k]
            exact = (self.weight[top] @ hidden.unsqueeze(-1)).squeeze(-1)  # [..., k]
            if self.bias is not None:
                exact = exact + self.bias[top]
            return logits.scatter_(-1, top, exact)

    return RescoredHead(head, rescore)


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
