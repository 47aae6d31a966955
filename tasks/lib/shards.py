"""Sharded embedding: new/changed chunks split into `index.shards` parts, each embedded by a
Prefect task mapped over the configured task runner — threads on one box, or a Dask cluster
(prefect-dask; local processes, or `index.dask_address`) when one box is not enough.

Each worker loads the retriever from its directories once per process; the parts come back in
order, so the vectors line up with the chunks exactly as a single `encode` call would.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from prefect import flow, task, unmapped

from tasks.lib.runtime import IO_RETRIES


def split(items: list[Any], shards: int) -> list[list[Any]]:
    """Contiguous, near-equal parts (order kept); never an empty part."""
    shards = max(1, min(shards, len(items)))
    size, extra = divmod(len(items), shards)
    parts, start = [], 0
    for i in range(shards):
        end = start + size + (1 if i < extra else 0)
        parts.append(items[start:end])
        start = end
    return parts


@task(name="embed_shard", **IO_RETRIES)
def embed_shard(base_dir: str, adapter_dir: str | None, device: str, texts: list[str],
                batch_size: int, precision: str = "fp32") -> np.ndarray:
    """Unit-length embeddings of one shard (the model is loaded once per worker process)."""
    from tasks.lib.models import cached_retriever
    from tasks.lib.tables import encode

    return encode(cached_retriever(base_dir, adapter_dir, device, precision), texts, batch_size)


@flow(name="tunedex-embed-shards")
def embed_shards(base_dir: str, adapter_dir: str | None, device: str, texts: list[str],
                 shards: int, batch_size: int, precision: str = "fp32") -> np.ndarray:
    """Map embed_shard over the parts on this flow's task runner; concatenate in order."""
    futures = embed_shard.map(unmapped(base_dir), unmapped(adapter_dir), unmapped(device),
                              split(texts, shards), unmapped(batch_size), unmapped(precision))
    return np.concatenate(futures.result())


def task_runner(cfg: Any) -> Any:
    """ThreadPoolTaskRunner, or a DaskTaskRunner (needs the `scale` extra: prefect-dask)."""
    from tasks.lib.errors import ConfigError

    if cfg.task_runner == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=cfg.shards)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ConfigError("index.task_runner: dask needs prefect-dask: pip install "
                          "'tunedex[scale]' (or set index.task_runner: thread)") from None
    if cfg.dask_address:
        return DaskTaskRunner(address=cfg.dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.shards, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": None})


def sharded_encoder(base_dir: Any, adapter_dir: Any, cfg: Any):
    """An encode(model, texts, batch_size) replacement that embeds in cfg.shards parallel shards;
    None (plain encode) when cfg.shards is 1."""
    if cfg.shards <= 1:
        return None

    def encode_sharded(_model: Any, texts: list[str], batch_size: int) -> np.ndarray:
        if not texts:
            from tasks.lib.tables import encode

            return encode(_model, texts, batch_size)
        run = embed_shards.with_options(task_runner=task_runner(cfg))
        return run(str(base_dir), str(adapter_dir) if adapter_dir else None, cfg.device, texts,
                   cfg.shards, batch_size, cfg.precision)
    return encode_sharded
