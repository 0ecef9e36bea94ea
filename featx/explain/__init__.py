"""Class-activation maps of fine-tuned networks: what in a cell drives the network's decision.

:func:`explain` maps chosen cells with Grad-CAM and occlusion (both through Captum) and writes a sheet and a CSV;
:func:`plot_explanations` draws a small sheet for a report; :func:`featx.explain.layers.resolve_layer` is the rule
that picks the mapped layer (the last convolutional stage) of any backbone featx fine-tunes.
"""
from featx.explain.core import ExplainResult, ImageExplanation, compute, explain, plot_explanations
from featx.explain.layers import MapLayer, map_layers, resolve_layer
from featx.explain.maps import METHODS

__all__ = ["METHODS", "ExplainResult", "ImageExplanation", "MapLayer", "compute", "explain", "map_layers",
           "plot_explanations", "resolve_layer"]
