"""The maps featx draws, by name (no torch here: the CLI's help lists them without loading a network)."""
from __future__ import annotations

#: the methods featx draws, in the order of the sheet's columns
METHODS = ("gradcam", "occlusion")
METHOD_TITLES = {"gradcam": "Grad-CAM", "occlusion": "occlusion"}
