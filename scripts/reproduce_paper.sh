#!/usr/bin/env bash
# Reproduce the reference study's Table 2 with featx: the traditional CNN (from scratch), AlexNet and
# VGG-16 fine-tuned with --preset paper (224x224, ImageNet weights, SGD lr 1e-5, 15 epochs, dropout,
# softmax cross-entropy), then the study's numbers printed next to featx's.
#
#   scripts/reproduce_paper.sh DATA [options] [-- extra `featx finetune` options]
#
# Options (each also settable by the environment variable in brackets):
#   --out DIR          run folders go to DIR/{cnn,alexnet,vgg16}            [OUT, default runs/paper]
#   --val V            validation: subject (default; subject-grouped holdout, the honest protocol),
#                      image (image-level holdout, as the study split its images), fold_2, prelim   [VAL]
#   --models LIST      comma-separated subset of cnn,alexnet,vgg16                         [MODELS]
#   --small            demo data: --image-size 64 --epochs 3 (SHRINKS the protocol; says so)
#   --image-size N     override the preset's 224 (SHRINKS the protocol; says so)     [IMAGE_SIZE]
#   --epochs N         override the preset's 15 (SHRINKS the protocol; says so)          [EPOCHS]
#   --weights W        starting weights of alexnet and vgg16 (default imagenet, the study's; `none`
#                      trains from scratch when torchvision's files are not cached)    [WEIGHTS]
#   --device D         auto, cpu, cuda                                                  [DEVICE]
# Re-running the same command resumes unfinished runs (featx finetune --resume) and re-prints the table.
# Environment: FEATX (the featx command) and PYTHON: by default those on PATH, else the repository's .venv
# (the one `make demo` / `make test` creates), so the script works without `source .venv/bin/activate`.
set -uo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }

DATA=""
OUT=${OUT:-runs/paper}
VAL=${VAL:-subject}
MODELS=${MODELS:-cnn,alexnet,vgg16}
IMAGE_SIZE=${IMAGE_SIZE:-}
EPOCHS=${EPOCHS:-}
WEIGHTS=${WEIGHTS:-}
DEVICE=${DEVICE:-auto}
venv_bin="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin"
if [ -z "${FEATX:-}" ]; then
  if command -v featx >/dev/null; then FEATX=featx
  elif [ -x "$venv_bin/featx" ]; then FEATX="$venv_bin/featx"
  else echo "error: featx is not on PATH and $venv_bin/featx does not exist; run \`make install\` (or" \
            "\`source .venv/bin/activate\`) first, or set FEATX" >&2; exit 1
  fi
fi
if [ -z "${PYTHON:-}" ]; then
  if [ "$FEATX" = "$venv_bin/featx" ]; then PYTHON="$venv_bin/python"; else PYTHON=python; fi
fi
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --out) OUT=$2; shift 2 ;;
    --val) VAL=$2; shift 2 ;;
    --models) MODELS=$2; shift 2 ;;
    --small) IMAGE_SIZE=${IMAGE_SIZE:-64}; EPOCHS=${EPOCHS:-3}; shift ;;
    --image-size) IMAGE_SIZE=$2; shift 2 ;;
    --epochs) EPOCHS=$2; shift 2 ;;
    --weights) WEIGHTS=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    -*) echo "reproduce_paper.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) if [ -z "$DATA" ]; then DATA=$1; shift; else echo "reproduce_paper.sh: one DATA folder only" >&2; exit 2; fi ;;
  esac
done
if [ -z "$DATA" ]; then usage >&2; exit 2; fi

SHRINK=()
[ -n "$IMAGE_SIZE" ] && SHRINK+=(--image-size "$IMAGE_SIZE")
[ -n "$EPOCHS" ] && SHRINK+=(--epochs "$EPOCHS")
if [ ${#SHRINK[@]} -gt 0 ]; then
  echo "NOTE: shrinking the study's protocol: ${SHRINK[*]} (the study: 224 px, 15 epochs)."
  echo "      These numbers show the pipeline works; they are not comparable with the study's."
fi
case "$VAL" in
  image) echo "NOTE: --val image holds out images, not patients, as the study did: cells of one subject sit on both sides, so scores are optimistic." ;;
  subject) echo "validation: a subject-grouped holdout (no patient on both sides; the study split images, which scores higher)" ;;
esac

failed=()
IFS=, read -r -a models <<< "$MODELS"
for model in "${models[@]}"; do
  args=("$DATA" --backbone "$model" --preset paper --out "$OUT/$model" --val "$VAL" --device "$DEVICE")
  # the traditional CNN has no ImageNet weights: the preset trains it from scratch, as the study did
  if [ "$model" != cnn ] && [ -n "$WEIGHTS" ]; then args+=(--weights "$WEIGHTS"); fi
  # continue a run in progress (last.pt); a finished one (results.json; last.pt removed by --keep best) is reported
  { [ -f "$OUT/$model/last.pt" ] || [ -f "$OUT/$model/results.json" ]; } && args+=(--resume)
  echo
  echo "== $FEATX finetune ${args[*]} ${SHRINK[*]} ${EXTRA[*]}"
  if ! "$FEATX" finetune "${args[@]}" "${SHRINK[@]}" "${EXTRA[@]}"; then
    echo "!! $model failed (see the message above); the table shows the others" >&2
    failed+=("$model")
  fi
done

echo
"$PYTHON" - "$OUT" "$MODELS" <<'PY'
import json
import sys
from pathlib import Path

out, models = Path(sys.argv[1]), sys.argv[2].split(",")
# the reference study's Table 2 (ALL vs HEM, C-NMC 2019), in percent
study = {"cnn": ("traditional CNN", 91.65, 92.5, 91.5, 91.75),
         "alexnet": ("AlexNet", 94.6, 94.5, 94.5, 94.5),
         "vgg16": ("VGG-16", 97.44, 97.5, 97.5, 97.5)}


def pct(v):
    return "-" if v is None or v != v else f"{100 * v:.2f}"


head = ["model", "study acc", "prec", "rec", "F1", "| featx acc", "prec", "rec", "F1", "wF1", "val protocol / settings"]
rows = []
for m in models:
    name, *numbers = study[m]
    path = out / m / "results.json"
    if not path.is_file():
        rows.append([name, *[f"{v:g}" for v in numbers], "| (no run)", "", "", "", "", ""])
        continue
    data = json.loads(path.read_text())
    r = (data["rows"] if isinstance(data, dict) else data)[0]
    s = r.get("settings", {})
    setup = (f"{r.get('protocol_label', r.get('protocol'))}; n_val {r.get('n_test')}; {s.get('image_size')}px, "
             f"{s.get('epochs')} ep, {s.get('optimizer')} lr {s.get('lr')}, weights {s.get('weights')}")
    rows.append([name, *[f"{v:g}" for v in numbers], "| " + pct(r.get("accuracy")), pct(r.get("precision")),
                 pct(r.get("recall")), pct(r.get("f1")), pct(r.get("f1_weighted")), setup])
widths = [max(len(str(x[i])) for x in [head, *rows]) for i in range(len(head))]
print("Table 2 of the study next to featx (percent)")
for line in [head, *rows]:
    print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip())
print("featx: precision/recall/F1 of the positive class (all); wF1 = weighted F1, the challenge's metric.")
print("The study's precision/recall/F1 are probably class-weighted averages; it split images, not patients.")
PY

if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
