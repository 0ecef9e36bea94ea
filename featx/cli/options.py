"""Options shared by several commands, declared once as ``Annotated`` types.

Extract, finetune, hybrid, classify, compare and predict take their common options from here, so one option
has one name, one help text and one meaning everywhere.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

CV_HELP = ("Protocol: subject (k-fold grouped by subject; the default when subjects are known), image "
           "(plain k-fold, IMAGE-LEVEL: leaks subjects), fold (the data's fold_0/1/2), or auto. On a store "
           "of fine-tuned weights, auto is tuned-holdout (test only rows the network never saw).")

# ---- images and networks (extract, finetune, hybrid, predict)
Images = Annotated[Path, typer.Argument(help="Image root: C-NMC (TCIA or Kaggle layout), ROOT/<class>/..., or a "
                                             "CSV manifest path,label[,subject][,split].")]
Backbone = Annotated[str, typer.Option(help="Backbone: vgg16, alexnet, cnn, any torchvision classification model "
                                             "(resnet50, efficientnet_b0, vit_b_16, ...) or timm:NAME; "
                                             "`featx backbones` lists them.")]
StartWeights = Annotated[str | None, typer.Option(
    help="Starting weights: imagenet, none (seeded random) or a state dict / featx checkpoint "
         "(default: imagenet, none for cnn).")]
ImageSize = Annotated[int | None, typer.Option(
    help="Square input size (default: the backbone's, 224; AlexNet needs at least 63).")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
Workers = Annotated[int | None, typer.Option(help="Decode worker processes (default: cores - 1; at most 8 when "
                                                    "extracting, 4 when training).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
Positive = Annotated[str | None, typer.Option(
    help="Positive class for precision/recall/F1/ROC (default: all when present).")]

# ---- fine-tuning (finetune, hybrid)
Preset = Annotated[str | None, typer.Option(
    help="paper: the reference study (224x224, ImageNet, SGD lr 1e-5 momentum 0, 15 epochs, dropout 0.5, "
         "softmax cross-entropy). Any option given explicitly overrides the preset.")]
Epochs = Annotated[int | None, typer.Option(help="Training epochs (default 10; paper 15).")]
LearningRate = Annotated[float | None, typer.Option(
    help="Learning rate (default 1e-4 pretrained / 1e-3 from scratch; paper 1e-5).")]
TrainBatch = Annotated[int | None, typer.Option(help="Images per training step (default 32).")]
Optimizer = Annotated[str | None, typer.Option(help="sgd or adamw (default adamw; paper sgd).")]
Momentum = Annotated[float | None, typer.Option(help="SGD momentum (default 0.9; paper 0, Keras' SGD default).")]
WeightDecay = Annotated[float | None, typer.Option(help="Weight decay (default 0.01 for AdamW; paper 0).")]
Schedule = Annotated[str | None, typer.Option(
    help="Learning-rate schedule per epoch: cosine, step (x0.1 every third of the run) or none "
         "(default cosine; paper none).")]
Dropout = Annotated[float | None, typer.Option(help="Dropout rate on the fully connected layers (default 0.5).")]
Freeze = Annotated[str | None, typer.Option(
    help="head: train only the network's classifier layer; a stage name (e.g. fc6): freeze every stage "
         "before it.")]
Augment = Annotated[bool | None, typer.Option(
    "--augment/--no-augment",
    help="Flips, 90-degree rotations and a small affine on training images (default on; paper off).")]
ColorJitter = Annotated[bool | None, typer.Option(
    "--color-jitter/--no-color-jitter", help="Also jitter brightness/contrast/saturation/hue.")]
EarlyStopping = Annotated[str | None, typer.Option(
    help="Stop when this validation metric stops improving: loss, accuracy, f1, f1_weighted, balanced_accuracy, "
         "roc_auc (best.pt is the best epoch by it; by loss otherwise).")]
Patience = Annotated[int, typer.Option(help="Epochs without improvement before early stopping.")]

# ---- heads and evaluation (classify, compare, hybrid)
Folds = Annotated[int, typer.Option(help="Number of folds (subject-grouped unless --cv image).")]
Seed = Annotated[int, typer.Option(help="Seed of everything random: folds, initialisation, shuffling, heads, "
                                        "bootstrap.")]
Jobs = Annotated[int, typer.Option(help="Heads x folds fitted in parallel (joblib processes; -1 = all cores).")]
Boot = Annotated[int, typer.Option(help="Bootstrap resamples (over subjects) for the 95% intervals.")]
Preprocess = Annotated[str, typer.Option(help="Head preprocessing: standard, none, l2 or pca:N, joined with + "
                                              "(e.g. standard+pca:128).")]
Param = Annotated[list[str] | None, typer.Option(
    help="Head parameter (repeat): key=value for every head that takes it (C=10, hidden=256), or "
         "head.key=value for one (svm.C=10). A comma list searches it (C=0.1,1,10; svm.gamma=scale,0.01) and "
         "low:high a log-uniform range (C=1e-3:1e3, with --search random), nested inside each outer fold.")]
SearchMethod = Annotated[str | None, typer.Option(
    "--search", help="Nested parameter search inside each outer fold: grid or random (default grid when a "
                     "--param has a list or range, or with --tune). Inner folds are grouped by subject.")]
NIter = Annotated[int, typer.Option(help="Random search: parameter draws per outer fold.")]
Tune = Annotated[bool, typer.Option("--tune", help="Search the default space of each head (merged with the "
                                                   "--param lists given).")]
InnerFolds = Annotated[int, typer.Option(help="Inner folds of the nested search (subject-grouped).")]
SearchMetric = Annotated[str, typer.Option(help="Metric the nested search maximises (f1_weighted is the "
                                                "challenge's): accuracy, f1_weighted, f1_macro, "
                                                "balanced_accuracy, roc_auc, precision, recall, f1.")]
ClassWeight = Annotated[str | None, typer.Option(help="Heads: balanced weights classes inversely to their "
                                                         "frequency (the 2:1 ALL/HEM imbalance).")]
Select = Annotated[str | None, typer.Option(
    help="Also report a 'selected' row per protocol: the best store x tap x head by this metric (e.g. "
         "f1_weighted), chosen by an inner CV inside each outer fold; the other rows are marked as not "
         "corrected for selection.")]
NoPlots = Annotated[bool, typer.Option("--no-plots", help="Skip the PNG plots.")]
Optimistic = Annotated[bool, typer.Option(
    "--optimistic", help="Allow --cv (or --eval) over rows a fine-tuned network trained on; the row is marked "
                         "OPTIMISTIC (features tuned on test subjects) in every output.")]
AllowPartial = Annotated[bool, typer.Option(
    "--allow-partial", help="Use a store whose extraction is not finished; every output row then says how many "
                            "rows it used.")]
DropUnknownSubjects = Annotated[bool, typer.Option(
    "--drop-unknown-subjects", help="Leave out rows whose file name gives no subject id (each output row says "
                                    "how many), instead of refusing subject-grouped CV.")]
Out = Annotated[Path, typer.Option("--out", "-o", help="Folder for results.csv/.json/.md, plots and models.")]
