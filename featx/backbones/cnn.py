"""``cnn``: the small traditional CNN of the reference study's baseline, trained from scratch."""
from __future__ import annotations

from collections import OrderedDict

from torch import nn
from torchvision.models import VGG16_Weights

from featx.backbones.network import FeatureNet, ForwardStep
from featx.backbones.registry import BackboneConfig, register_backbone


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2))


@register_backbone(
    "cnn", preprocessed_as=VGG16_Weights.IMAGENET1K_V1, imagenet=None,
    taps={"pool5": 256, "fc": 128}, default_tap="fc", min_input_size=16,
    stages=("block1", "block2", "block3", "block4", "fc", "head"),
    default_num_classes=2, classifier_layer="classifier.4",
    description="small traditional CNN: 4 conv-BN-ReLU-maxpool blocks (32-256), GAP, "
                "dropout FC 128, final FC; trained from scratch",
    tap_descriptions={
        "pool5": "global average over the spatial positions of the last max-pool output (block4: "
                 "conv-BN-ReLU-maxpool), 256 channels, non-negative",
        "fc": "penultimate fully connected layer (classifier.1, 256->128) after ReLU (post-ReLU, before "
              "dropout), 128 values, non-negative"})
def build_cnn(config: BackboneConfig, num_classes: int, dropout: float) -> FeatureNet:
    """The small "traditional" CNN (preprocessed as VGG-16's ImageNet weights).

    Layers (input 3 x H x W, any H, W >= 16; 224 by default):

    - ``features.block1..block4``: Conv2d 3x3 (padding 1, no bias) -> BatchNorm2d -> ReLU -> MaxPool2d 2,
      with 32, 64, 128, 256 channels (each block halves the image side);
    - ``avgpool``: global average pool -> tap ``pool5`` (256);
    - ``classifier``: Dropout(p) -> Linear 256->128 -> ReLU (tap ``fc``, the penultimate layer) ->
      Dropout(p) -> Linear 128->num_classes (the classifier layer: logits; softmax is applied by the loss /
      predict_proba).
    """
    widths = (3, 32, 64, 128, 256)
    features = nn.Sequential(OrderedDict(
        (f"block{i + 1}", _conv_block(widths[i], widths[i + 1])) for i in range(4)))
    classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(256, 128), nn.ReLU(inplace=True),
                               nn.Dropout(dropout), nn.Linear(128, num_classes))
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    plan = [ForwardStep("run", f"features.block{i}", f"block{i}") for i in range(1, 5)]
    plan += [ForwardStep("run", "avgpool", "block4"), ForwardStep("flatten", "", "block4", "pool5")]
    plan += [ForwardStep("run", "classifier.0", "fc"), ForwardStep("run", "classifier.1", "fc"),
             ForwardStep("run", "classifier.2", "fc", "fc"),
             ForwardStep("run", "classifier.3", "head"), ForwardStep("run", "classifier.4", "head")]
    return FeatureNet(config, features, nn.AdaptiveAvgPool2d(1), classifier, plan=plan, num_classes=num_classes)
