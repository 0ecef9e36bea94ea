"""``vgg16`` and ``alexnet``: torchvision's own networks, kept under torchvision's names.

Submodules ``features``, ``avgpool`` and ``classifier`` are torchvision's, so ``FeatureNet.state_dict()``
has exactly torchvision's keys: torchvision's weight files load unchanged, and a state dict saved from a
:class:`FeatureNet` loads into ``torchvision.models.vgg16()``/``alexnet()`` (same number of classes) and back.
"""
from __future__ import annotations

from collections.abc import Sequence

import torchvision
from torch import nn
from torchvision.models import AlexNet_Weights, VGG16_Weights

from featx.backbones.network import FeatureNet, ForwardStep
from featx.backbones.registry import BackboneConfig, register_backbone

# torchvision's 7-module classifier: Linear/Dropout/ReLU of fc6, of fc7, then the classifier layer
_FC_STAGES = ("fc6", "fc6", "fc6", "fc7", "fc7", "fc7", "head")


def _fc_steps(stages: Sequence[str], taps: dict[int, str]) -> list[ForwardStep]:
    """Steps running ``classifier.0..n-1``; ``stages[i]`` is the stage of module i, ``taps[i]`` its tap."""
    return [ForwardStep("run", f"classifier.{i}", stage, taps.get(i)) for i, stage in enumerate(stages)]


@register_backbone(
    "vgg16", preprocessed_as=VGG16_Weights.IMAGENET1K_V1, imagenet=VGG16_Weights.IMAGENET1K_V1,
    taps={"pool5": 512, "fc6": 4096, "fc7": 4096}, default_tap="fc7", min_input_size=32,
    stages=("block1", "block2", "block3", "block4", "block5", "fc6", "fc7", "head"),
    default_num_classes=1000, classifier_layer="classifier.6",
    description="VGG-16 (torchvision): 13 conv layers in 5 blocks, 2 dropout FC layers of 4096, final FC",
    tap_descriptions={
        "pool5": "global average over the spatial positions of the last max-pool output (features.30, after "
                 "block5's conv+ReLU layers), 512 channels, non-negative; taken before torchvision's 7x7 "
                 "adaptive average pool",
        "fc6": "output of the fully connected layer fc6 (classifier.0, 25088->4096, on block5's max-pool output "
               "pooled to 7x7) after ReLU (post-ReLU, before dropout), 4096 values, non-negative",
        "fc7": "output of the fully connected layer fc7 (classifier.3, 4096->4096) after ReLU (post-ReLU, before "
               "dropout), 4096 values, non-negative"})
def build_vgg16(config: BackboneConfig, num_classes: int, dropout: float) -> FeatureNet:
    """torchvision's VGG-16 with taps pool5 (global average pool of the last conv block), fc6, fc7."""
    tv = torchvision.models.vgg16(weights=None, num_classes=num_classes, dropout=dropout)
    plan, block = [], 1
    for i, m in enumerate(tv.features):
        plan.append(ForwardStep("run", f"features.{i}", f"block{block}"))
        block += isinstance(m, nn.MaxPool2d)
    plan += [ForwardStep("gap", "", "block5", "pool5"), ForwardStep("run", "avgpool", "block5"),
             ForwardStep("flatten", "", "block5")]
    # classifier: Linear ReLU Dropout | Linear ReLU Dropout | Linear  (fc6 / fc7 taps after the ReLUs)
    plan += _fc_steps(_FC_STAGES, {1: "fc6", 4: "fc7"})
    return FeatureNet(config, tv.features, tv.avgpool, tv.classifier, plan=plan, num_classes=num_classes)


@register_backbone(
    "alexnet", preprocessed_as=AlexNet_Weights.IMAGENET1K_V1, imagenet=AlexNet_Weights.IMAGENET1K_V1,
    taps={"pool5": 256, "fc6": 4096, "fc7": 4096}, default_tap="fc7", min_input_size=63,
    stages=("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "head"),
    default_num_classes=1000, classifier_layer="classifier.6",
    description="AlexNet (torchvision): 5 conv layers, 2 dropout FC layers of 4096, final FC",
    tap_descriptions={
        "pool5": "global average over the spatial positions of the last max-pool output (features.12, after "
                 "conv5+ReLU), 256 channels, non-negative; taken before torchvision's 6x6 adaptive average pool",
        "fc6": "output of the fully connected layer fc6 (classifier.1, 9216->4096, on conv5's max-pool output "
               "pooled to 6x6) after ReLU (post-ReLU, before dropout), 4096 values, non-negative",
        "fc7": "output of the fully connected layer fc7 (classifier.4, 4096->4096) after ReLU (post-ReLU, before "
               "dropout), 4096 values, non-negative"})
def build_alexnet(config: BackboneConfig, num_classes: int, dropout: float) -> FeatureNet:
    """torchvision's AlexNet with taps pool5 (global average pool of conv5), fc6, fc7."""
    tv = torchvision.models.alexnet(weights=None, num_classes=num_classes, dropout=dropout)
    plan, conv = [], 0
    for i, m in enumerate(tv.features):
        conv += isinstance(m, nn.Conv2d)
        plan.append(ForwardStep("run", f"features.{i}", f"conv{conv}"))
    plan += [ForwardStep("gap", "", "conv5", "pool5"), ForwardStep("run", "avgpool", "conv5"),
             ForwardStep("flatten", "", "conv5")]
    # classifier: Dropout Linear ReLU | Dropout Linear ReLU | Linear  (fc6 / fc7 taps after the ReLUs)
    plan += _fc_steps(_FC_STAGES, {2: "fc6", 5: "fc7"})
    return FeatureNet(config, tv.features, tv.avgpool, tv.classifier, plan=plan, num_classes=num_classes)
