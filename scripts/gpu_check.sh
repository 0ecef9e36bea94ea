#!/usr/bin/env bash
# The GPU check (issue 12, part 4), under 5 minutes on one H100:
#   - scripts/bench_extract.py --device cuda for AlexNet and VGG-16: featx (whole process, the call, its steady
#     state) vs the GPU forward ceiling, the decode rate of all cores, GPU utilisation (nvidia-smi);
#   - one short `featx finetune --device cuda` run (AMP: float16 autocast + GradScaler) on synthetic cells;
# then one table. Needs no network: it uses .venv when that has featx's requirements, else python3 (the GPU
# machine's, which holds torch), with this checkout on PYTHONPATH; `make install` only as a last resort.
#
#   bash scripts/gpu_check.sh                          # on a machine with a GPU
#   bash scripts/gpu_check.sh --device cpu --quick     # smoke test of the script itself, anywhere
#
# Results (table, JSON per backbone, logs) go to $OUT when it is set (the device tool brings them back),
# else to a temporary folder; PYTHON=... picks the interpreter.
set -euo pipefail

DEVICE=cuda
QUICK=0
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE=${2:?--device needs cuda or cpu}; shift 2 ;;
        --quick) QUICK=1; shift ;;
        -h|--help) sed -n 2,14p "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
REPO=$PWD
RESULTS=${OUT:-$(mktemp -d -t featx-gpu-check-XXXXXX)}
WORK=$(mktemp -d -t featx-gpu-work-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$RESULTS"
START=$(date +%s)

NEEDS="import torch, torchvision, numpy, PIL, h5py, sklearn, typer, rich, joblib, filelock"
pick_python() {
    local py
    for py in "${PYTHON:-}" "$REPO/.venv/bin/python" python3 python; do
        [ -n "$py" ] || continue
        command -v "$py" >/dev/null 2>&1 || continue
        if "$py" -c "$NEEDS" >/dev/null 2>&1; then
            echo "$py"
            return 0
        fi
    done
    return 1
}
if ! PY=$(pick_python); then
    echo "no Python here has featx's requirements ($NEEDS); trying make install" >&2
    make -C "$REPO" install >&2
    PY=$REPO/.venv/bin/python
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

"$PY" - "$DEVICE" <<'EOF'
import sys, torch, torchvision
device = sys.argv[1]
print(f"python {sys.version.split()[0]} at {sys.executable}; torch {torch.__version__}, torchvision "
      f"{torchvision.__version__}; CUDA available: {torch.cuda.is_available()}")
if device == "cuda":
    if not torch.cuda.is_available():
        sys.exit("gpu_check.sh: --device cuda but torch sees no GPU; run it where there is one, or pass --device cpu")
    print(f"GPU: {torch.cuda.get_device_name(0)}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
EOF
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi

if [ "$QUICK" = 1 ]; then
    ALEX_N=64; VGG_N=32; DISTINCT=20; SIZE=64; BATCH=16; FT_SIZE=64; FT_EPOCHS=1
else
    ALEX_N=8000; VGG_N=3000; DISTINCT=100; SIZE=224; BATCH=128; FT_SIZE=224; FT_EPOCHS=2
fi

bench() {  # backbone images
    echo "== bench_extract.py --device $DEVICE --backbone $1 --images $2 ($(( $(date +%s) - START )) s in)"
    "$PY" "$REPO/scripts/bench_extract.py" --device "$DEVICE" --backbone "$1" --images "$2" --size "$SIZE" \
        --batch-size "$BATCH" --distinct "$DISTINCT" --in-process --data "$WORK/bench" --json "$RESULTS/$1.json" \
        2>&1 | tee "$RESULTS/$1.log"
}
bench alexnet "$ALEX_N" || echo "gpu_check.sh: the AlexNet benchmark failed (see above)"
bench vgg16 "$VGG_N" || echo "gpu_check.sh: the VGG-16 benchmark failed (see above)"

echo "== featx finetune --device $DEVICE (AMP on CUDA) ($(( $(date +%s) - START )) s in)"
CELLS=$(find "$WORK/bench" -maxdepth 1 -type d -name 'cells-*' | head -n 1)
FT_START=$(date +%s)
FT_STATUS=ok
if ! "$PY" -m featx finetune "$CELLS" --backbone alexnet --weights none --epochs "$FT_EPOCHS" \
        --image-size "$FT_SIZE" --batch-size 32 --val fold_2 --device "$DEVICE" -q --out "$WORK/finetune" \
        >"$RESULTS/finetune.log" 2>&1; then
    FT_STATUS=failed
    tail -n 20 "$RESULTS/finetune.log"
fi
FT_WALL=$(( $(date +%s) - FT_START ))

"$PY" - "$RESULTS" "$WORK/finetune/history.csv" "$FT_STATUS" "$FT_WALL" "$DEVICE" <<'EOF' | tee "$RESULTS/gpu_check.txt"
import csv, json, sys
from pathlib import Path

results, history, ft_status, ft_wall, device = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
fmt = lambda v, spec=".0f": "n/a" if v is None else format(v, spec)  # noqa: E731
print(f"\nfeatx GPU check ({device})")
head = (f"{'backbone':<9}{'images':>7}{'ceiling':>9}{'process':>9}{'call':>8}{'steady':>8}{'decode':>8}"
        f"{'of bound':>9}{'GPU util':>9}{'max diff':>10}")
print(head + "\n" + "-" * len(head))
for name in ("alexnet", "vgg16"):
    path = results / f"{name}.json"
    if not path.is_file():
        print(f"{name:<9} no result (see {name}.log)")
        continue
    r = json.loads(path.read_text())
    n = r["images"]
    rate = lambda key: None if r.get(key) is None else n / r[key]  # noqa: E731
    util = r.get("gpu_util_busy_mean")
    print(f"{name:<9}{n:>7}{fmt(rate('ceiling_s')):>9}{fmt(rate('featx_s')):>9}{fmt(rate('featx_call_s')):>8}"
          f"{fmt(r.get('featx_steady')):>8}{fmt(r.get('decode_all_cores')):>8}{fmt(r.get('featx_vs_bound'), '.2f'):>9}"
          f"{(fmt(util) + '%') if util is not None else 'n/a':>9}{r['max_abs_diff']:>10.1e}")
print("images/s: ceiling = forward pass alone on preloaded tensors (fp16 autocast on CUDA); process = whole "
      "`featx extract` less its torch import; call = extract() in one process; steady = after its first 10% of "
      "rows; decode = decode path on all cores; of bound = best featx rate / min(ceiling, decode) (target 0.8); "
      "GPU util = nvidia-smi mean from the first busy sample; max diff = featx vs naive fp32 loop.")
epochs = list(csv.DictReader(history.open())) if history.is_file() else []
per_epoch = ", ".join(f"{float(e['seconds']):.1f}" for e in epochs) or "n/a"
val = f"{float(epochs[-1]['val_acc']):.3f}" if epochs else "n/a"
print(f"finetune alexnet ({'AMP float16' if device == 'cuda' else 'float32'}): {ft_status}, {len(epochs)} epoch(s), "
      f"seconds per epoch {per_epoch}, last val acc {val}, whole command {ft_wall} s")
EOF
echo "gpu_check.sh: done in $(( $(date +%s) - START )) s; results in $RESULTS"
[ "$FT_STATUS" = ok ]
