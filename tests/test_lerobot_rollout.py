"""`lerobot-rollout` (LeRobot 0.6.1's deployment CLI) drives a robot with a shallowpi student through the
`lerobot_policy_shallowpi` plugin, with real-time chunking (`--inference.type=rtc`: chunks sampled in a
background thread, each guided toward the previous chunk's left-over) and without (`sync`). There is no robot
here: `--robot.type=shallowpi_sim` is a test double (tests/lerobot_scripts/lerobot_robot_shallowpi_sim: one
camera and 4 joints), loaded the way LeRobot loads any third-party robot, that writes down every action it is
sent."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from lerobot_helpers import SCRIPTS, save_tiny_student
from shallowpi.lerobot_export import export_lerobot

CHUNK = 10  # save_tiny_student's chunk size
JOINTS = [f"joint{i}.pos" for i in range(4)]  # the double's state and action: the student's 4 dims
CAMERA = "observation.images.front"  # the double's camera "front", as LeRobot names it for the policy
RTC_LINE = "real-time chunking: chunk guided toward the previous chunk's"  # the plugin's first guided chunk
INFERENCE = {
    # a new chunk once 5 actions are left: LeRobot's default (30) is past the chunk, and a chunk this fast
    # would then be resampled at every loop, each time dropping its first row as if executed
    "rtc": ["--inference.type=rtc", "--inference.queue_threshold=5"],
    "sync": ["--inference.type=sync"],
}


def read_actions(log: Path) -> list[dict[str, float]]:
    return [json.loads(line)["action"] for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.parametrize("inference", ["rtc", "sync"])
def test_lerobot_rollout_runs_a_student(inference, tmp_path, lerobot061):
    """3 s at 10 fps: the rollout exits 0, the robot was sent more than a chunk of actions (so at least two
    chunks were sampled), each with the robot's 4 joints and finite. With RTC the plugin guided a chunk with
    the left-over LeRobot's RTC engine passes from the second chunk on (its log says so); sync never does."""
    student = save_tiny_student(tmp_path / "student", camera=CAMERA)
    folder = export_lerobot(student, tmp_path / "lerobot")
    plugins = tmp_path / "robot_plugins"  # the double alone on the path, not the other scripts beside it
    shutil.copytree(SCRIPTS / "lerobot_robot_shallowpi_sim", plugins / "lerobot_robot_shallowpi_sim")
    log = tmp_path / "actions.jsonl"
    args = [
        "--robot.discover_packages_path=lerobot_robot_shallowpi_sim",
        "--robot.type=shallowpi_sim",
        f"--robot.action_log={log}",
        f"--robot.calibration_dir={tmp_path / 'calibration'}",
        f"--policy.path={folder}",
        *INFERENCE[inference],
        "--task=Reach the goal position",
        "--fps=10",
        "--duration=3",
        "--return_to_initial_position=false",  # else its 3 s glide home adds actions the policy never chose
    ]
    out = lerobot061.run(args, script="lerobot-rollout", timeout=300, pythonpath=[plugins])
    text = out.stdout + out.stderr

    assert f"Creating inference engine: {inference}" in text
    assert "Rollout finished" in text
    assert "RTC inference error" not in text and "Traceback" not in text, text[-4000:]
    actions = read_actions(log)
    assert len(actions) > CHUNK, (len(actions), text[-4000:])
    for a in actions:
        assert sorted(a) == JOINTS and all(math.isfinite(v) for v in a.values()), a
    assert (RTC_LINE in text) == (inference == "rtc"), text[-4000:]
