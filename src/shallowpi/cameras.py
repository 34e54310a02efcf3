"""Camera slot names that the model config and the processor config share (the bottom layer: no imports)."""

from __future__ import annotations

# openpi / LeRobot camera slots of the base checkpoints, in the order the prefix is built.
DEFAULT_CAMERAS = (
    "observation.images.base_0_rgb",
    "observation.images.left_wrist_0_rgb",
    "observation.images.right_wrist_0_rgb",
)
