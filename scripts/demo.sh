#!/usr/bin/env bash
# The demo behind `make demo`: synthetic C-NMC data -> extract (4 backbones) -> compare -> finetune -> hybrid -> table
# -> report -> pictures of the cells (error gallery, class-activation maps, feature map).
# Sizes are shrunk so that it ends in a few minutes on a 2-core CPU; every shrink is printed.
set -euo pipefail
OUT=${1:-demo}
mkdir -p "$OUT"
[ -t 1 ] || export COLUMNS=${COLUMNS:-132}  # wide tables in logs too
say() { printf '\n\033[1m== %s\033[0m  (%ss elapsed)\n' "$*" "$SECONDS"; }

# ImageNet weights are used when torchvision's files are already in the cache; otherwise random weights.
cache=$(python -c 'import torch, pathlib; print(pathlib.Path(torch.hub.get_dir()) / "checkpoints")')
weights_for() {  # $1 = torchvision file name
  if [ -f "$cache/$1" ]; then echo imagenet; else echo none; fi
}
W_ALEX=$(weights_for alexnet-owt-7be5be79.pth)
W_VGG=$(weights_for vgg16-397923af.pth)
W_RES=$(weights_for resnet18-f37072fd.pth)  # any torchvision model works by name; resnet18 joins the grid
if [ "$W_ALEX" = none ] || [ "$W_VGG" = none ]; then
  say "No ImageNet weights in $cache: the demo uses seeded random weights (--weights none)."
  echo "   Put alexnet-owt-7be5be79.pth / vgg16-397923af.pth / resnet18-f37072fd.pth there to run it with ImageNet weights."
fi

say "1. synthetic C-NMC data, featx synth's defaults (shrunk: 30 ALL + 15 HEM training subjects x 4 cells at 64 px,
   enough for 3 subjects of each class in every subject-grouped test fold; the real set has 73 subjects, 450 px)"
# the final phase is written last: when it is there, the tree is complete
[ -d "$OUT/data/C-NMC_test_final_phase_data" ] || featx synth "$OUT/data" --masks

say "2. extract features (AlexNet at its 224 px; shrunk: cnn at 96 px, VGG-16 and ResNet-18 at 112 px instead of 224 px)"
featx extract "$OUT/data" --backbone cnn --weights none --image-size 96 --out "$OUT/feats/cnn.h5"
featx extract "$OUT/data" --backbone alexnet --weights "$W_ALEX" --out "$OUT/feats/alexnet-$W_ALEX.h5"
featx extract "$OUT/data" --backbone vgg16 --weights "$W_VGG" --image-size 112 --out "$OUT/feats/vgg16-$W_VGG.h5"
echo "any torchvision classification model by name (featx backbones lists them); resnet18's default tap is pool"
featx backbones resnet18
featx extract "$OUT/data" --backbone resnet18 --weights "$W_RES" --image-size 112 \
  --out "$OUT/feats/resnet18-$W_RES.h5"

# The demo owns $OUT: a second run whose grid changed (ImageNet files appeared, so the store names did) replaces
# its own tables; featx otherwise refuses to write over another grid's results.
FORCE=--force
say "3. compare heads on the cached features: subject-grouped vs IMAGE-LEVEL 5-fold CV"
featx compare "$OUT/feats/cnn.h5" "$OUT/feats/alexnet-$W_ALEX.h5" "$OUT/feats/vgg16-$W_VGG.h5" \
  "$OUT/feats/resnet18-$W_RES.h5" --heads softmax,logistic,svm,xgboost --cv subject,image --out "$OUT/results" $FORCE
echo "honest selection: the best store x head chosen by an inner subject-grouped CV inside each outer fold,"
echo "scored as its own 'selected' row; the per-row scores it chose among are marked as not corrected for it"
featx compare "$OUT/feats/cnn.h5" "$OUT/feats/alexnet-$W_ALEX.h5" "$OUT/feats/vgg16-$W_VGG.h5" \
  --heads knn,svm --cv subject --select f1_weighted --out "$OUT/results-select" --no-plots $FORCE

echo "save the VGG-16 + SVM model and predict the unlabelled final phase"
featx classify "$OUT/feats/vgg16-$W_VGG.h5" --head svm --save --out "$OUT/results-vgg16" --no-plots $FORCE
featx predict "$OUT/results-vgg16/models/vgg16-fc7-svm.skops" "$OUT/data" --split final \
  --store "$OUT/feats/vgg16-$W_VGG.h5" --out "$OUT/predictions.csv"
echo "$(($(wc -l < "$OUT/predictions.csv") - 1)) predictions in $OUT/predictions.csv:"; head -4 "$OUT/predictions.csv"

say "4. fine-tune the cnn end to end (shrunk: 64 px, 5 epochs instead of 224 px, 15 epochs)"
resume=""
# a run in progress (last.pt) is continued; a finished one (results.json) is reported again, not retrained
{ [ -f "$OUT/runs/cnn/last.pt" ] || [ -f "$OUT/runs/cnn/results.json" ]; } && resume="--resume"
featx finetune "$OUT/data" --backbone cnn --weights none --image-size 64 --epochs 5 --batch-size 8 \
  --out "$OUT/runs/cnn" $resume
echo "hybrid mode: the tuned network's features feed any head, tested only on the subjects it never saw"
featx extract "$OUT/data" --backbone cnn --weights "$OUT/runs/cnn/best.pt" --quiet --out "$OUT/feats/cnn-tuned.h5"
featx classify "$OUT/feats/cnn-tuned.h5" --head svm --out "$OUT/results-tuned" --no-plots $FORCE

say "5. featx hybrid: per outer subject fold, fine-tune the cnn on the training subjects, extract, fit heads, test on
   the held-out subjects (shrunk: 3 folds, 64 px, 3 epochs instead of 5 folds, 224 px, 15 epochs)"
featx hybrid "$OUT/data" --backbone cnn --weights none --image-size 64 --epochs 3 --batch-size 8 --folds 3 \
  --heads logistic,svm --out "$OUT/runs/hybrid-cnn" --no-plots

say "6. one table: frozen backbones + heads, tuned cnn + SVM, featx hybrid and the fine-tuned cnn"
featx table "$OUT/results" "$OUT/results-tuned" "$OUT/runs/hybrid-cnn" "$OUT/runs/cnn" \
  --title "featx demo (synthetic C-NMC)" --out "$OUT/summary" $FORCE
echo "the same rows with every figure in one HTML file, the thing to mail to a colleague:"
featx report "$OUT/results" "$OUT/results-tuned" "$OUT/runs/hybrid-cnn" "$OUT/runs/cnn" \
  --title "featx demo (synthetic C-NMC)" --out "$OUT/report.html"
echo "run folder: $(ls "$OUT/runs/cnn" | tr '\n' ' ')"

say "7. look at the cells: which ones the heads get wrong, what the fine-tuned cnn looks at, and the feature space
   by subject (why image-level splits score higher)"
featx gallery "$OUT/results" --out "$OUT/gallery" -q $FORCE
echo "$(ls "$OUT/gallery"/*.png | wc -l) error-gallery sheets in $OUT/gallery/, e.g. $(ls "$OUT/gallery"/*.png | head -1)"
featx explain "$OUT/runs/cnn" "$OUT/data" --images 8 --out "$OUT/explain" $FORCE
featx map "$OUT/feats/cnn.h5" --out "$OUT/map-cnn.png" $FORCE
echo "demo finished in ${SECONDS}s; everything is under $OUT/"
