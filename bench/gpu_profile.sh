#!/usr/bin/env bash
# The gpu profile end to end on a CUDA machine, then the serving bench, with the figures printed.
#
# usage: bash bench/gpu_profile.sh [OUT_DIR]        (default: gpu-profile-out/)
#
# For a machine that has torch (CUDA), transformers, peft and sentence-transformers installed but
# perhaps not the rest, and perhaps no network:
#   - the venv (.venv) sees the system's packages (--system-site-packages), so torch and friends
#     are not installed again;
#   - the other dependencies come from PyPI, or, with TUNEDEX_WHEELS=/path/to/wheels, from wheels
#     carried along (pip --no-index --find-links; make them with `pip download -d wheels -e .`);
#   - the models are the bundled offline copies unless GPU_GENERATOR names another (the gpu
#     profile's Qwen2.5-0.5B-Instruct needs the hub or an HF cache).
# The data is the demo set (70 documents, 211 questions): small enough for minutes, large enough
# for every stage. Outputs (reports, scoreboard, timings, serve bench) are copied to OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu-profile-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_profile.log") 2>&1

GEN=${GPU_GENERATOR:-HuggingFaceTB/SmolLM2-135M-Instruct}
CFG=$OUT/gpu-slice.yaml
echo "== machine"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

echo "== setup"
test -x .venv/bin/python || python3 -m venv --system-site-packages .venv
if [ -n "${TUNEDEX_WHEELS:-}" ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=$TUNEDEX_WHEELS; fi
start=$(date +%s)
make setup >/dev/null   # the offline model copies (the cpu profile names them)
echo "setup: $(( $(date +%s) - start )) s"

# The profile with the offline generator and local state beside the outputs.
.venv/bin/python - "$CFG" "$GEN" "$OUT" <<'PY'
import sys
from pathlib import Path

import yaml

out, gen, root = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]).resolve()
cfg = yaml.safe_load(Path("configs/gpu.yaml").read_text())
cfg["models"] |= {"generator_id": gen, "allow_download": gen == "Qwen/Qwen2.5-0.5B-Instruct"}
cfg["paths"] |= {"reports_dir": str(root / "reports"), "prepared_dir": str(root / "prepared"),
                 "adapters_dir": str(root / "models"), "index_uri": str(root / "lancedb"),
                 "logs_dir": str(root / "logs")}
cfg.setdefault("tracking", {})["artifact_location"] = str(root / "mlartifacts")
out.write_text(yaml.safe_dump(cfg, sort_keys=False))
print(f"config: {out} (generator {gen})")
PY
export MLFLOW_TRACKING_URI=sqlite:///$(cd "$OUT" && pwd)/mlflow.db

echo "== pipeline (gpu profile)"
start=$(date +%s)
.venv/bin/tunedex pipeline -c "$CFG"
echo "pipeline wall: $(( $(date +%s) - start )) s"

echo "== figures"
.venv/bin/python - "$OUT" <<'PY'
import json
import sys
from pathlib import Path

reports = Path(sys.argv[1]) / "reports"
for stage in ("synthesize", "prepare", "train_retriever", "index", "train_generator", "evaluate"):
    path = reports / stage / "metrics.json"
    if path.is_file():
        flat = {k: v for k, v in json.loads(path.read_text()).items() if isinstance(v, int | float)}
        keep = {k: v for k, v in flat.items() if any(w in k for w in ("seconds", "per_second",
                                                                      "peak", "ndcg", "token_f1"))}
        print(f"{stage}: {json.dumps(keep)[:600]}")
board = reports / "evaluate" / "scoreboard.md"
if board.is_file():
    print("\n".join(board.read_text().splitlines()[:12]))
PY

echo "== serving bench"
.venv/bin/python bench/serve_load.py --config "$CFG" --seconds 5 --repeats 1 || echo "serve bench failed"
echo "== done: $OUT"
