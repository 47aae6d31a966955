"""The arguments the precision benches share (bench/retriever_precision.py,
bench/generator_precision.py, bench/train_precision.py): a prepared dir, an optional adapter,
the config and overrides, repeats and a JSON report path."""

from __future__ import annotations

import argparse


def precision_parser(doc: str | None, model: str | None, repeats: int | None
                     ) -> argparse.ArgumentParser:
    """An ArgumentParser with the shared arguments; `model` names the adapter's kind (None: no
    --adapter), `repeats` the default of --repeats (None: no --repeats)."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", required=True,
                        help="a prepared dir: chunks.jsonl, eval_qa.jsonl")
    if model is not None:
        parser.add_argument("--adapter", default=None, help=f"a {model} LoRA adapter dir (merged)")
    parser.add_argument("--config", default="configs/cpu.yaml")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    if repeats is not None:
        parser.add_argument("--repeats", type=int, default=repeats, help="runs per precision")
    parser.add_argument("--out", default=None, help="write the report as JSON here")
    return parser
