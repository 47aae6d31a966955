"""Generation wall time per batch size, against the configured `generate.batch_size`, in one run:
what evaluate pays for each setup's answers, and whether the answers change.

For up to --questions eval questions of a prepared dir, the base and rag prompts (as
bench/generator_precision.py builds them), each setup answered greedily at the configured
precision (`generate.precision`, resolved as evaluate resolves it) in batches of each
--batch-sizes (sizes interleaved over --repeats; the best wall time counts). On a CPU a decode
step costs about the same for 8 rows as for 16 (weights are read once per step), so bigger
batches take fewer steps; the prompts' prefill does not shrink, and a batch runs until its
longest answer ends. Quality: token F1 per prompt paired against the configured size (BCa) and
the share of identical answers: left padding differs between batchings, so a few answers can
flip. A size counts as faster when its wall time is at most 0.9x the configured one and its token
F1 interval covers 0.

usage: python bench/generator_batch_size.py --prepared data/prepared [--adapter models/generator]
         [--config configs/cpu.yaml] [--questions 48] [--repeats 2] [--batch-sizes 16 24]
         [--out F.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flows.env import set_offline_env  # noqa: E402

set_offline_env()

import numpy as np  # noqa: E402

from bench.generator_precision import prompts_for  # noqa: E402
from bench.precision_args import precision_parser  # noqa: E402
from tasks.lib.answer_metrics import token_f1  # noqa: E402
from tasks.lib.config import load_config, parse_override  # noqa: E402
from tasks.lib.generator import (  # noqa: E402
    generate_answers,
    generation_throughput,
    generator_base_dir,
    load_generator,
    warm_up_generation,
)
from tasks.lib.metrics import paired_diff_ci  # noqa: E402

FASTER = 0.9  # wall time ratio a size must reach to count as faster


def main() -> None:
    parser = precision_parser(__doc__, "generator", 2)
    parser.add_argument("--questions", type=int, default=48)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[16, 24],
                        help="each measured against the configured generate.batch_size")
    args = parser.parse_args()
    cfg = load_config(args.config, dict(parse_override(s) for s in args.sets))
    g = cfg.generate
    prompts, refs, setups = prompts_for(cfg, Path(args.prepared), args.questions)
    base = generator_base_dir(cfg.models, cfg.paths.models_dir)
    model, tok = load_generator(base, Path(args.adapter) if args.adapter else None, g.device,
                                precision=g.precision)
    warm_up_generation(model, tok)
    sizes = [g.batch_size, *[b for b in args.batch_sizes if b != g.batch_size]]
    by_setup = {s: [i for i, x in enumerate(setups) if x == s] for s in ("base", "rag")}
    wall: dict[int, dict[str, list[float]]] = {b: {s: [] for s in by_setup} for b in sizes}
    speed: dict[int, list[float]] = {b: [] for b in sizes}
    answers: dict[int, list[str]] = {b: [""] * len(prompts) for b in sizes}
    for _ in range(args.repeats):  # sizes interleaved: a slow spell hits each alike
        for b in sizes:
            tokens = seconds = 0.0
            for setup, idx in by_setup.items():  # one generate pass per setup, as evaluate runs
                out = generate_answers(model, tok, [prompts[i] for i in idx], g.max_new_tokens, b)
                t = generation_throughput(out)
                wall[b][setup].append(t["seconds"])
                tokens, seconds = tokens + t["new_tokens"], seconds + t["seconds"]
                for i, o in zip(idx, out, strict=True):
                    answers[b][i] = o["text"]
            speed[b].append(tokens / seconds if seconds else 0.0)
    f1 = {b: [token_f1(a, r) for a, r in zip(answers[b], refs, strict=True)] for b in sizes}
    ref = sizes[0]
    best = {b: sum(min(wall[b][s]) for s in by_setup) for b in sizes}
    print(f"{len(prompts)} prompts ({len(prompts) // 2} questions x base/rag), "
          f"{g.max_new_tokens} new tokens, precision {g.precision}, best of {args.repeats}"
          f"{', adapter ' + args.adapter if args.adapter else ''}")
    report: dict = {"prompts": len(prompts), "repeats": args.repeats, "adapter": args.adapter,
                    "configured": ref, "sizes": {}}
    for b in sizes:
        row = {"wall_seconds": best[b], "wall_by_setup": {s: min(v) for s, v in wall[b].items()},
               "tokens_per_second": max(speed[b]), "ratio": best[b] / best[ref]}
        line = (f"batch {b:3d}: {best[b]:6.1f} s (base {row['wall_by_setup']['base']:.1f}, rag "
                f"{row['wall_by_setup']['rag']:.1f}), {max(speed[b]):.1f} tokens/s")
        if b != ref:
            diff = paired_diff_ci(f1[b], f1[ref], 1000, 13)
            same = sum(x == y for x, y in zip(answers[b], answers[ref], strict=True)) / len(refs)
            covered = diff["lo"] <= 0 <= diff["hi"]
            row.update(delta=diff, identical_share=same,
                       faster=row["ratio"] <= FASTER and covered)
            line += (f"  x{row['ratio']:.2f} the wall time of {ref}; token F1 "
                     f"{np.mean(f1[b]):.3f} vs {np.mean(f1[ref]):.3f}, delta {diff['mean']:+.4f} "
                     f"[{diff['lo']:+.4f}, {diff['hi']:+.4f}], identical {same:.0%} -> "
                     f"{'FASTER' if row['faster'] else 'not faster'}")
        print(line)
        report["sizes"][b] = row
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
