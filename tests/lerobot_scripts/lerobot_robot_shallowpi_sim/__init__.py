"""A test double of a robot for `lerobot-rollout` (no hardware): LeRobot 0.6.1's third-party robot API, loaded
with `--robot.discover_packages_path=lerobot_robot_shallowpi_sim` from a folder on PYTHONPATH.

`--robot.type=shallowpi_sim` has `joints` joint positions (`joint<i>.pos`, the state and the action) and one
RGB camera `camera` (a fixed random image). Each joint follows the last command it was sent (a kinematic
stand-in), and every action sent is appended to `action_log` as a JSON line, which is what the tests read.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lerobot.robots import Robot, RobotConfig

ROBOT_TYPE = "shallowpi_sim"


@RobotConfig.register_subclass(ROBOT_TYPE)
@dataclass(kw_only=True)
class ShallowPiSimConfig(RobotConfig):
    joints: int = 4
    camera: str = "front"
    image_size: int = 64  # H = W of the camera image
    action_log: str = ""  # JSON lines {"t": seconds, "action": {key: value}}; "" records nothing


class ShallowPiSim(Robot):
    """Found by LeRobot's `make_device_from_device_class` (the config's class name without "Config")."""

    config_class = ShallowPiSimConfig
    name = ROBOT_TYPE

    def __init__(self, config: ShallowPiSimConfig):
        super().__init__(config)
        self.config = config
        self._joints = [f"joint{i}.pos" for i in range(config.joints)]
        self._position = dict.fromkeys(self._joints, 0.0)
        s = config.image_size
        self._image = np.random.default_rng(0).integers(0, 256, (s, s, 3), dtype=np.uint8)
        self._connected = False

    @property
    def observation_features(self) -> dict[str, Any]:
        s = self.config.image_size
        return dict.fromkeys(self._joints, float) | {self.config.camera: (s, s, 3)}

    @property
    def action_features(self) -> dict[str, Any]:
        return dict.fromkeys(self._joints, float)

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def is_calibrated(self) -> bool:
        return True

    def connect(self, calibrate: bool = True) -> None:
        self._connected = True

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def get_observation(self) -> dict[str, Any]:
        if not self._connected:
            raise ConnectionError(f"{self} is not connected")
        return dict(self._position) | {self.config.camera: self._image.copy()}

    def send_action(self, action: dict[str, Any]) -> dict[str, Any]:
        if not self._connected:
            raise ConnectionError(f"{self} is not connected")
        if set(action) != set(self._joints):
            raise ValueError(f"action keys {sorted(action)} != {self._joints}")
        sent = {k: float(v) for k, v in action.items()}
        self._position.update(sent)
        if self.config.action_log:
            with Path(self.config.action_log).open("a") as f:
                f.write(json.dumps({"t": time.monotonic(), "action": sent}) + "\n")
        return sent

    def disconnect(self) -> None:
        self._connected = False
