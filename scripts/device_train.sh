#!/usr/bin/env bash
# Continue the chain's head (frontier/ or the bundled weights) on a lent GPU for MINUTES minutes;
# writes float16 EMA weights under $OUT.
#
# Here, first (CPU):   python scripts/pack_photos.py .carry/photos            # ~25 MiB, ignored by git
#                      OUT=/tmp/out MINUTES=0.5 STEPS=4 DEVICE=cpu BATCH=2 CROP=64 bash scripts/device_train.sh
# On the device:       run(command="MINUTES=8 bash scripts/device_train.sh", carry=[".carry"], timeout_s=600)
# Back here:           smartassign bundle <files_at>/run --weights <files_at>/best_fp16.safetensors --machine "H200"
#
# Accumulates rather than resumes: a call cut off loses only its last ckpt_every steps, and the next call
# starts from the weights the previous one returned (INIT=path/to/best_fp16.safetensors, carried).
# Runs the package from src/ with the device image's python3 (it has torch, PyYAML, safetensors, tqdm, Pillow,
# SciPy, scikit-image); no install. Validation is off there: the gate scores the result here.
set -euo pipefail
: "${OUT:?set OUT (the device tool sets it)}"
MINUTES=${MINUTES:-8}
STEPS=${STEPS:-20000}
BATCH=${BATCH:-32}
CROP=${CROP:-192}
DEVICE=${DEVICE:-auto}
# The chain's head: the frontier (the best refused run, committed) when there is one, else the bundled file.
FRONTIER=frontier/small.safetensors
[ -f "$FRONTIER" ] && HEAD="$FRONTIER" || HEAD=src/smartassign/weights/small.safetensors
INIT=${INIT:-$HEAD}
PY=${PY:-python3}
RUN="$OUT/run"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" SMARTASSIGN_CACHE="${TMPDIR:-/tmp}/smartassign-cache"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>/dev/null || true
"$PY" -m smartassign train --config configs/continue_small.yaml --init "$INIT" \
    data.photos=.carry/photos data.val_pairs=0 data.crop="$CROP" "data.progressive=[]" train.batch_size="$BATCH" \
    train.device="$DEVICE" train.steps="$STEPS" train.time_limit_min="$MINUTES" train.out_dir="$RUN" \
    train.warmup_steps=200 train.ckpt_every=500 train.log_every=50 train.tensorboard=false train.progress=false
# The last checkpoint holds the EMA (state file); keep only what comes back: float16 EMA weights + logs.
"$PY" - "$RUN" "$OUT" <<'PY'
import json, sys
from pathlib import Path
from safetensors.torch import load_file, save_file
run, out = Path(sys.argv[1]), Path(sys.argv[2])
last = sorted((run / "checkpoints").glob("step_*.state.safetensors"))[-1]
prefix = "ema.module."
ema = {k[len(prefix):]: v.half() for k, v in load_file(str(last)).items() if k.startswith(prefix)}
save_file(ema, str(out / "best_fp16.safetensors"))
meta = json.loads(last.with_name(last.name.replace(".state.safetensors", ".json")).read_text())
(out / "best_fp16.json").write_text(json.dumps({**meta, "dtype": "float16", "weights": "EMA"}, indent=2))
for f in (run / "checkpoints").glob("*"):
    f.unlink()  # 50+ MB each: they would not come back anyway
print("wrote", out / "best_fp16.safetensors")
PY
