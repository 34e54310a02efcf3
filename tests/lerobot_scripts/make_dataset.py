"""Run by the LeRobot venv: a tiny LeRobotDataset written by LeRobot 0.4.4 itself (images in parquet, no
video: this venv's torchvision has no video decoder and torchcodec has no build for its torch).

    python make_dataset.py ROOT
2 episodes x 16 frames, camera observation.image 56x56, state 4, action 4, tasks "reach the goal" / "push".
"""

import sys

import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset

root = sys.argv[1]
features = {
    "observation.image": {"dtype": "image", "shape": (56, 56, 3), "names": ["height", "width", "channels"]},
    "observation.state": {"dtype": "float32", "shape": (4,), "names": [f"s{i}" for i in range(4)]},
    "action": {"dtype": "float32", "shape": (4,), "names": [f"a{i}" for i in range(4)]},
}
ds = LeRobotDataset.create("local/shallowpi_tiny", fps=10, features=features, root=root, use_videos=False)
rng = np.random.default_rng(0)
for ep, task in enumerate(("reach the goal", "push the puck")):
    for _ in range(16):
        ds.add_frame(
            {
                "observation.image": rng.integers(0, 255, (56, 56, 3), dtype=np.uint8),
                "observation.state": (rng.standard_normal(4) + ep).astype(np.float32),
                "action": np.tanh(rng.standard_normal(4)).astype(np.float32),
                "task": task,
            }
        )
    ds.save_episode()
ds.finalize()
print("ok", ds.meta.total_frames)
