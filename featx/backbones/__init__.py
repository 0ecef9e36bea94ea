"""The backbones: ``vgg16``, ``alexnet`` and ``cnn``, their weights and their named taps.

One registry knows every network (as timm's does): :func:`list_backbones`, :func:`get_config` and
:func:`create_backbone`. Each builder registers its :class:`BackboneConfig` beside itself
(:mod:`featx.backbones.torchvision_models`, :mod:`featx.backbones.cnn`): taps in forward order and the
default tap, preprocessing taken from torchvision's weights enums (the image side a network computes at:
:func:`input_size`, the one input-size rule), stages for freezing, the default number
of classes and the name of the classifier layer. Weight files and featx checkpoints:
:mod:`featx.backbones.weights` (:class:`WeightsSpec`: the weights asked for, parsed once). Every network is a
:class:`TappedNetwork` (:mod:`featx.backbones.tapped`): :class:`FeatureNet` runs a plan of
:class:`ForwardStep`s, :class:`GraphNet` wraps any classification model.

Any other torchvision classification model resolves by name on first use
(:mod:`featx.backbones.torchvision_any`, networks :class:`~featx.backbones.generic.GraphNet` with tap ``pool``
and graph-node taps), and timm models as ``timm:NAME`` (:mod:`featx.backbones.timm_models`, optional);
:mod:`featx.backbones.catalog` gives the rows of ``featx backbones``.
"""
# Importing the builders registers them.
from featx.backbones import cnn, timm_models, torchvision_any, torchvision_models  # noqa: F401
from featx.backbones.factory import create_backbone
from featx.backbones.generic import GraphNet
from featx.backbones.network import FeatureNet, ForwardStep
from featx.backbones.registry import (
    MAX_INPUT_SIZE,
    BackboneConfig,
    check_image_size,
    check_input_size,
    get_config,
    input_size,
    list_backbones,
    register_backbone,
)
from featx.backbones.tapped import TappedNetwork
from featx.backbones.weights import (
    CHECKPOINT_VERSION,
    DOWNLOAD_TIMEOUT_S,
    OFFLINE_ENV,
    WeightsInfo,
    WeightsSpec,
    origin_of,
)

__all__ = [
    "CHECKPOINT_VERSION", "DOWNLOAD_TIMEOUT_S", "MAX_INPUT_SIZE", "OFFLINE_ENV", "BackboneConfig", "FeatureNet",
    "ForwardStep", "GraphNet", "TappedNetwork", "WeightsInfo", "WeightsSpec", "origin_of",
    "check_image_size", "check_input_size", "create_backbone", "get_config", "input_size", "list_backbones",
    "register_backbone",
]
