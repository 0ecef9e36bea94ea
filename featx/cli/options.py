"""Options shared by several commands, declared once as ``Annotated`` types.

Extract, finetune, hybrid, classify, compare and predict take their common options from here, so one option
has one name, one help text and one meaning everywhere.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

# Help panels: `featx COMMAND --help` groups its options under these titles.
DATA = "Data"
NETWORK = "Network"
TRAINING = "Training"
AUGMENTATION = "Augmentation"
EVALUATION = "Evaluation"
TUNING = "Tuning (nested search)"
OUTPUT = "Output"
RUN = "Run"

CV_HELP = ("subject (k-fold grouped by subject; the default when subjects are known), image (plain k-fold, "
           "IMAGE-LEVEL: leaks subjects), fold (the data's fold_0/1/2) or auto (on fine-tuned features: "
           "tuned-holdout, only rows the network never saw).")

# ---- images and networks (extract, finetune, hybrid, predict)
Images = Annotated[Path, typer.Argument(help="Image root: C-NMC (TCIA or Kaggle layout), ROOT/<class>/..., or a "
                                             "CSV manifest path,label[,subject][,split].")]
Backbone = Annotated[str, typer.Option(help="vgg16, alexnet, cnn, any torchvision classification model "
                                             "(resnet50, vit_b_16, ...) or timm:NAME; `featx backbones` lists them.",
                                        rich_help_panel=NETWORK)]
StartWeights = Annotated[str | None, typer.Option(
    help="imagenet, none (seeded random) or a state dict / featx checkpoint (default imagenet; none for cnn).",
    rich_help_panel=NETWORK)]
WeightsNeverSawImages = Annotated[bool, typer.Option(
    "--weights-never-saw-images", help="State that --weights PATH (of unknown provenance: a plain state dict or "
                                       "another tool's checkpoint) never saw these images; recorded, and result "
                                       "rows say 'weights stated unseen by the user' instead of 'weights of "
                                       "unknown provenance'.", rich_help_panel=NETWORK)]
ImageSize = Annotated[int | None, typer.Option(
    help="Square input size in px, 1 to 4096 (default: the backbone's, 224; AlexNet needs 63 or more).",
    rich_help_panel=NETWORK)]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.", rich_help_panel=RUN)]
Workers = Annotated[int | None, typer.Option(help="Decode worker processes; 0: the main thread decodes. Default "
                                                    "when extracting: threads on the CPU (they decode while the "
                                                    "network waits), every core but one (at most 32; under torchrun, "
                                                    "of the rank's share) on CUDA; when "
                                                    "training: cores - 1, at most 4.", rich_help_panel=RUN)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no progress lines: results and "
                                                         "warnings only.", rich_help_panel=OUTPUT)]
Positive = Annotated[str | None, typer.Option(
    help="Positive class of precision, recall, F1 and ROC (default: all, when present).",
    rich_help_panel=EVALUATION)]
Taps = Annotated[str | None, typer.Option(
    "--taps", "--tap", help="Comma-separated taps, each possibly fused: fc7,pool5,fc7+pool5 (default: the "
                            "backbone's, fc7; fc for cnn).", rich_help_panel=DATA)]

# ---- fine-tuning (finetune, hybrid)
Preset = Annotated[str | None, typer.Option(
    help="paper: the reference study (224 px, ImageNet, SGD lr 1e-5, momentum 0, 15 epochs, dropout 0.5). "
         "Options given explicitly override it.", rich_help_panel=TRAINING)]
Epochs = Annotated[int | None, typer.Option(help="Training epochs (default 10; paper 15).", rich_help_panel=TRAINING)]
LearningRate = Annotated[float | None, typer.Option(
    help="Learning rate (default 1e-4 pretrained, 1e-3 from scratch; paper 1e-5).", rich_help_panel=TRAINING)]
TrainBatch = Annotated[int | None, typer.Option(help="Images per training step (default 32).",
                                                rich_help_panel=TRAINING)]
Optimizer = Annotated[str | None, typer.Option(help="sgd or adamw (default adamw; paper sgd).",
                                               rich_help_panel=TRAINING)]
Momentum = Annotated[float | None, typer.Option(help="SGD momentum (default 0.9; paper 0, Keras' default).",
                                                rich_help_panel=TRAINING)]
WeightDecay = Annotated[float | None, typer.Option(help="Weight decay (default 0.01 for AdamW; paper 0).",
                                                   rich_help_panel=TRAINING)]
Schedule = Annotated[str | None, typer.Option(
    help="Learning rate per epoch: cosine, step (x0.1 every third of the run) or none (default cosine; paper "
         "none).", rich_help_panel=TRAINING)]
Dropout = Annotated[float | None, typer.Option(help="Dropout on the fully connected layers (default 0.5).",
                                               rich_help_panel=TRAINING)]
Freeze = Annotated[str | None, typer.Option(
    help="head: train only the classifier layer; a stage (e.g. fc6): freeze every stage before it.",
    rich_help_panel=TRAINING)]
Augment = Annotated[bool | None, typer.Option(
    "--augment/--no-augment", help="Flips, 90-degree turns and a small affine (default on; paper off).",
    rich_help_panel=AUGMENTATION)]
ColorJitter = Annotated[bool | None, typer.Option(
    "--color-jitter/--no-color-jitter", help="Also jitter brightness, contrast, saturation and hue.",
    rich_help_panel=AUGMENTATION)]
EarlyStopping = Annotated[str | None, typer.Option(
    help="Stop when this validation metric stops improving: loss, accuracy, f1, f1_weighted, balanced_accuracy "
         "or roc_auc (best.pt is then the best epoch by it, else by loss).", rich_help_panel=TRAINING)]
Patience = Annotated[int, typer.Option(help="Epochs without improvement before early stopping.",
                                       rich_help_panel=TRAINING)]

# ---- heads and evaluation (classify, compare, hybrid)
Folds = Annotated[int, typer.Option(help="Number of folds (subject-grouped unless --cv image).",
                                    rich_help_panel=EVALUATION)]
Seed = Annotated[int, typer.Option(help="Seed of everything random: folds, initialisation, shuffling, heads.",
                                    rich_help_panel=RUN)]
Jobs = Annotated[int | None, typer.Option(
    help="Heads x folds fitted in parallel (processes; -1: all cores). Default: one per core, fewer when memory "
         "would not hold them, one for small feature sets.", rich_help_panel=RUN)]
Backend = Annotated[str, typer.Option(
    help="Where heads x folds run: loky (processes here), dask or ray (a local cluster of --jobs workers, or "
         "--scheduler's; pip install 'featx\\[dask]' / 'featx\\[ray]'). Same results on each.",
    rich_help_panel=RUN)]
Scheduler = Annotated[str | None, typer.Option(
    help="Run on this cluster: tcp://host:8786 (dask), ray://host:10001 or auto (ray). Default: a local one.",
    rich_help_panel=RUN)]
Preprocess = Annotated[str, typer.Option(help="Head preprocessing: standard, none, l2 or pca:N, joined with + "
                                              "(e.g. standard+pca:128).", rich_help_panel=EVALUATION)]
Param = Annotated[list[str] | None, typer.Option(
    metavar="KEY=VALUE",
    help="Head parameter (repeat): key=value for every head that takes it (C=10), head.key=value for one "
         "(svm.C=10). A list searches it (C=0.1,1,10), low:high a log-uniform range (C=1e-3:1e3, with "
         "--search random), nested inside each outer fold.", rich_help_panel=TUNING)]
SearchMethod = Annotated[str | None, typer.Option(
    "--search", help="grid or random (default grid when a --param has a list or range, or with --tune); "
                     "inner folds grouped by subject.", rich_help_panel=TUNING)]
NIter = Annotated[int, typer.Option(help="Random search: draws per outer fold.", rich_help_panel=TUNING)]
Tune = Annotated[bool, typer.Option("--tune", help="Search each head's default space (merged with the --param "
                                                   "lists given).", rich_help_panel=TUNING)]
InnerFolds = Annotated[int, typer.Option(help="Inner folds of the search (subject-grouped).",
                                         rich_help_panel=TUNING)]
SearchMetric = Annotated[str, typer.Option(help="Metric the search maximises: f1_weighted (the challenge's), "
                                                "accuracy, f1_macro, balanced_accuracy, roc_auc, precision, "
                                                "recall or f1.", rich_help_panel=TUNING)]
ClassWeight = Annotated[str | None, typer.Option(help="balanced: weight classes inversely to their frequency "
                                                         "(the 2:1 ALL/HEM imbalance).",
                                                 rich_help_panel=EVALUATION)]
Select = Annotated[str | None, typer.Option(
    help="Add a 'selected' row per protocol: the best store x tap x head by this metric (e.g. f1_weighted), "
         "chosen by inner CV in each outer fold; the other rows are marked as not corrected for selection.",
    rich_help_panel=TUNING)]
SortBy = Annotated[str, typer.Option(
    "--sort-by", help="Metric each row is compared on with its protocol's best row (paired difference, 95% CI, "
                      "p-value; rows not distinguishable from the best are marked ≈ best).",
    rich_help_panel=EVALUATION)]
Versus = Annotated[str | None, typer.Option(
    "--vs", help="Compare every row with this row (its name as the table prints it) instead of its protocol's "
                 "best.", rich_help_panel=EVALUATION)]
NoPlots = Annotated[bool, typer.Option("--no-plots", help="Skip the PNG plots.", rich_help_panel=OUTPUT)]
Optimistic = Annotated[bool, typer.Option(
    "--optimistic", help="Allow --cv or --eval over rows a fine-tuned network trained on; rows marked "
                         "OPTIMISTIC everywhere.", rich_help_panel=DATA)]
AllowPartial = Annotated[bool, typer.Option(
    "--allow-partial", help="Use an unfinished store; each row says how many rows it used.", rich_help_panel=DATA)]
DropUnknownSubjects = Annotated[bool, typer.Option(
    "--drop-unknown-subjects", help="Leave out rows whose file name gives no subject (each row says how many) "
                                    "instead of refusing subject-grouped CV.", rich_help_panel=DATA)]
Out = Annotated[Path | None, typer.Option("--out", "-o", help="Folder for results.csv/.json/.md, plots and "
                                                           "models (default: a classify-... folder under results/).",
                                          rich_help_panel=OUTPUT)]
Force = Annotated[bool, typer.Option("--force", help="Replace the results in --out even when another command or "
                                                     "grid wrote them.", rich_help_panel=OUTPUT)]

# classify and compare fit in memory and write their results at the end: an interrupt keeps nothing to resume
NOTHING_KEPT = ("{command} keeps nothing of an unfinished run (it writes its results once every model is fitted); "
                "run the same command again to start over")
