#!/usr/bin/env bash
# The gpu profile end to end on a CUDA machine, then the serving bench, with the figures printed.
#
# usage: bash bench/gpu_profile.sh [OUT_DIR] [KEY=VALUE ...]     (default: gpu-profile-out/)
#   KEY=VALUE: config overrides on top of configs/gpu.yaml, as `tunedex pipeline --set` reads
#   them, e.g. train_generator.max_examples=64 for a smaller slice. A dry run of this script on
#   a CPU box (everything but CUDA): the five `*.device` keys set to cpu, see bench/README.md.
#
# For a machine that has torch (CUDA), transformers, peft and sentence-transformers installed but
# perhaps not the rest, and perhaps no network:
#   - the venv (.venv) sees the system's packages (--system-site-packages), so torch and friends
#     are not installed again;
#   - the other dependencies come from PyPI, or, with TUNEDEX_WHEELS=/path/to/wheels, from wheels
#     carried along (pip --no-index --find-links; make them where pip reaches the index with
#     `bash bench/gpu_wheels.sh DIR [PYTHON_VERSION]`); the test tools (extra `dev`) are left out;
#   - the models are the bundled offline copies unless GPU_GENERATOR names another (the gpu
#     profile's Qwen2.5-0.5B-Instruct needs the hub or an HF cache).
# The data is the demo set (70 documents, 490 questions): small enough for minutes, large enough
# for every stage. Outputs (reports, scoreboard, timings, serve bench) are copied to OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu-profile-out}
shift $(( $# > 0 ? 1 : 0 ))
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_profile.log") 2>&1

GEN=${GPU_GENERATOR:-HuggingFaceTB/SmolLM2-135M-Instruct}
CFG=$OUT/gpu-slice.yaml
# No hub calls unless the generator must come from the hub (the Makefile reads this too).
if [ "$GEN" = "Qwen/Qwen2.5-0.5B-Instruct" ]; then export HF_HUB_OFFLINE=0; else export HF_HUB_OFFLINE=1; fi
echo "== machine"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true

echo "== setup"
test -x .venv/bin/python || python3 -m venv --system-site-packages .venv
if [ -n "${TUNEDEX_WHEELS:-}" ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=$TUNEDEX_WHEELS; fi
start=$(date +%s)
make setup EXTRAS=models >/dev/null   # the offline model copies (the cpu profile names them)
echo "setup: $(( $(date +%s) - start )) s"
.venv/bin/python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

# The profile with the offline generator, local state beside the outputs and the overrides,
# checked as the pipeline checks a config (a bad key stops here, named).
.venv/bin/python - "$CFG" "$GEN" "$OUT" "$@" <<'PY'
import sys
from pathlib import Path

import yaml

from tasks.lib.config import ConfigError, apply_overrides, parse_config, parse_override

out, gen, root = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]).resolve()
cfg = yaml.safe_load(Path("configs/gpu.yaml").read_text())
cfg["models"] |= {"generator_id": gen, "allow_download": gen == "Qwen/Qwen2.5-0.5B-Instruct"}
cfg["paths"] |= {"reports_dir": str(root / "reports"), "prepared_dir": str(root / "prepared"),
                 "adapters_dir": str(root / "models"), "index_uri": str(root / "lancedb"),
                 "logs_dir": str(root / "logs")}
cfg.setdefault("tracking", {})["artifact_location"] = str(root / "mlartifacts")
try:
    cfg = apply_overrides(cfg, dict(parse_override(arg) for arg in sys.argv[4:]))
    parse_config(cfg, source=str(out))
except ConfigError as err:
    sys.exit(f"gpu_profile.sh: {err}")
out.write_text(yaml.safe_dump(cfg, sort_keys=False))
print(f"config: {out} (generator {gen}; overrides: {' '.join(sys.argv[4:]) or 'none'})")
PY
export MLFLOW_TRACKING_URI=sqlite:///$(cd "$OUT" && pwd)/mlflow.db

echo "== pipeline (gpu profile)"
start=$(date +%s)
make pipeline CONFIG="$CFG" EXTRAS=models   # the Makefile's environment (Prefect home, no telemetry)
echo "pipeline wall: $(( $(date +%s) - start )) s"

echo "== figures"
.venv/bin/python - "$OUT" <<'PY'
import json
import sys
from pathlib import Path

from tasks.lib.config import flatten

reports = Path(sys.argv[1]) / "reports"
words = ("seconds", "per_second", "peak", "ndcg", "p95", "token_f1")
for stage in ("synthesize", "prepare", "train_retriever", "index", "train_generator", "evaluate"):
    path = reports / stage / "metrics.json"
    if path.is_file():
        flat = flatten(json.loads(path.read_text()))
        keep = {k: v for k, v in flat.items()
                if isinstance(v, int | float) and any(w in k for w in words)}
        print(f"{stage}: {json.dumps(keep)[:900]}")
board = reports / "evaluate" / "scoreboard.md"
if board.is_file():
    print("\n".join(board.read_text().splitlines()[:12]))
PY

echo "== serving bench"
.venv/bin/python bench/serve_load.py --config "$CFG" --seconds 5 --repeats 1 || echo "serve bench failed"
echo "== done: $OUT"
