"""Meta-World (v3 tasks) for data collection and evaluation: env setup, cameras, instructions, experts.

Facts this file relies on (measured on CPU with llvmpipe, MuJoCo's software renderer):
- `MUJOCO_GL` must be set (egl here) before mujoco is imported, or rendering fails.
- The default render settings (shadows, reflections, 4x MSAA) are ~10x too slow on CPU; `fast_render`
  turns them off on the model before the first render. The scene looks the same.
- Camera frames come out rotated 180° (table at the top); `render` rotates them back.
- `env.reset(seed=...)` is ignored; configurations come from `metaworld.MT1(name, seed).train_tasks`
  (50 fixed configurations per seed, identical across processes) plus `set_task`.
- A renderer bound to a dead env can leave later frames all black; there is one renderer per `MetaWorldEnv`
  and `close()` releases it. Frames are checked for being all black.
"""

from __future__ import annotations

import atexit
import os
import weakref
from dataclasses import dataclass

import numpy as np

from shallowpi.errors import UserError

# One instruction per task (Meta-World ships none). MT10 first; the rest of MT50 after.
MT10 = (
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
)
INSTRUCTIONS: dict[str, str] = {
    "reach-v3": "reach the goal position",
    "push-v3": "push the puck to the goal",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "door-open-v3": "open the door",
    "drawer-open-v3": "open the drawer",
    "drawer-close-v3": "close the drawer",
    "button-press-topdown-v3": "press the button from the top",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "window-open-v3": "slide the window open",
    "window-close-v3": "slide the window closed",
    "assembly-v3": "put the ring onto the peg",
    "basketball-v3": "dunk the ball into the basket",
    "bin-picking-v3": "move the puck from one bin to the other",
    "box-close-v3": "put the lid on the box",
    "button-press-topdown-wall-v3": "press the button from the top behind the wall",
    "button-press-v3": "press the button",
    "button-press-wall-v3": "press the button behind the wall",
    "coffee-button-v3": "press the button on the coffee machine",
    "coffee-pull-v3": "pull the mug from the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "turn the dial",
    "disassemble-v3": "pick the ring off the peg",
    "door-close-v3": "close the door",
    "door-lock-v3": "lock the door by turning the lock",
    "door-unlock-v3": "unlock the door by turning the lock",
    "hand-insert-v3": "put the hand into the hole",
    "faucet-open-v3": "turn the faucet on",
    "faucet-close-v3": "turn the faucet off",
    "hammer-v3": "hammer the nail into the wall",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "pick-place-wall-v3": "pick up the puck and place it at the goal behind the wall",
    "pick-out-of-hole-v3": "pick the puck out of the hole",
    "plate-slide-v3": "slide the plate into the goal",
    "plate-slide-side-v3": "slide the plate into the goal from the side",
    "plate-slide-back-v3": "slide the plate back out of the goal",
    "plate-slide-back-side-v3": "slide the plate back out of the goal from the side",
    "peg-unplug-side-v3": "unplug the peg from the side",
    "soccer-v3": "kick the ball into the goal",
    "stick-push-v3": "grasp the stick and push the box with it",
    "stick-pull-v3": "grasp the stick and pull the box with it",
    "push-wall-v3": "push the puck to the goal behind the wall",
    "push-back-v3": "pull the puck back to the goal",
    "reach-wall-v3": "reach the goal position behind the wall",
    "shelf-place-v3": "pick up the puck and place it on the shelf",
    "sweep-into-v3": "sweep the puck into the hole",
    "sweep-v3": "sweep the puck off the table",
}
MT50 = tuple(INSTRUCTIONS)
CAMERAS = ("corner", "corner2", "corner3", "corner4", "gripperPOV", "behindGripper")
# What the policy's state vector holds, by layout. "hand" is what LeRobot's Meta-World env gives
# (`agent_pos` = obs[:4]); "hand_goal" adds the goal position obs[36:39], which is part of the task (like the
# instruction) and otherwise only a 1-2 pixel marker in the images. The object's position (obs[4:7]) is never
# given: the policy must find the object in its images.
# "hand_task_goal" gives the goal only where it is a free target (GOAL_FREE_TASKS: reach, push, pick-place,
# peg-insert's hole): for door, drawer, button and window tasks Meta-World's goal sits at a fixed offset from
# the object, so giving it would give the object's position away and the images would not matter. There the
# goal is zeros and the last dim (goal_given) is 0.
STATE_LAYOUTS: dict[str, tuple[list[str], list[int]]] = {
    "hand": (["hand_x", "hand_y", "hand_z", "gripper"], [0, 1, 2, 3]),
    "hand_goal": (
        ["hand_x", "hand_y", "hand_z", "gripper", "goal_x", "goal_y", "goal_z"],
        [0, 1, 2, 3, 36, 37, 38],
    ),
    "hand_task_goal": (
        ["hand_x", "hand_y", "hand_z", "gripper", "goal_x", "goal_y", "goal_z", "goal_given"],
        [0, 1, 2, 3, 36, 37, 38],
    ),
}
# Tasks whose goal is sampled apart from the object to move (peg-insert-side: the hole, not the peg).
GOAL_FREE_TASKS = frozenset(
    f"{t}-v3"
    for t in (
        "reach",
        "reach-wall",
        "push",
        "push-wall",
        "push-back",
        "pick-place",
        "pick-place-wall",
        "peg-insert-side",
    )
)
STATE_NAMES = STATE_LAYOUTS["hand"][0]  # obs[0:3] hand position, obs[3] gripper opening
ACTION_NAMES = ["dx", "dy", "dz", "gripper"]
FPS = 80  # Meta-World steps 5 MuJoCo substeps of 2.5 ms: 12.5 ms per env step
MAX_PATH_LENGTH = 500  # Meta-World raises past this many steps in an episode


def resolve_tasks(spec: str) -> list[str]:
    """'mt10' | 'mt50' | comma-separated task names (with or without the -v3 suffix)."""
    if spec.lower() == "mt10":
        return list(MT10)
    if spec.lower() == "mt50":
        return list(MT50)
    names = []
    for raw in spec.split(","):
        name = raw.strip()
        name = name if name.endswith("-v3") else f"{name}-v3"
        if name not in INSTRUCTIONS:
            raise UserError(
                f"unknown Meta-World task {raw.strip()!r}; known: mt10, mt50 or {', '.join(MT50)}"
            )
        names.append(name)
    return names


def check_cameras(cameras: list[str]) -> list[str]:
    for cam in cameras:
        if cam not in CAMERAS:
            raise UserError(f"unknown Meta-World camera {cam!r}; choose from {', '.join(CAMERAS)}")
    return cameras


def check_state_layout(layout: str) -> str:
    if layout not in STATE_LAYOUTS:
        raise UserError(f"unknown Meta-World state layout {layout!r}; choose from {', '.join(STATE_LAYOUTS)}")
    return layout


def state_layout_for_dim(dim: int) -> str:
    """The layout a policy with a `dim`-dimensional state was collected with."""
    for name, (names, _) in STATE_LAYOUTS.items():
        if len(names) == dim:
            return name
    known = ", ".join(f"{n} ({len(v[0])})" for n, v in STATE_LAYOUTS.items())
    raise UserError(f"no Meta-World state layout has {dim} dims; known: {known}")


def camera_key(camera: str) -> str:
    """Dataset feature name of a camera."""
    return f"observation.images.{camera}"


def setup_rendering() -> None:
    """Headless GL defaults; must run before mujoco is imported."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    os.environ.setdefault("LP_NUM_THREADS", "1")  # llvmpipe threads: 1 per process scales best with workers


def fast_render(model) -> None:
    """Shadows, reflections and MSAA off: much faster offscreen rendering on llvmpipe, same-looking scene."""
    model.light_castshadow[:] = 0
    model.mat_reflectance[:] = 0
    model.vis.quality.offsamples = 0


@dataclass
class Step:
    state: np.ndarray  # [state dim] float32
    images: dict[str, np.ndarray]  # camera -> uint8 [H, W, 3]


class MetaWorldEnv:
    """One Meta-World task with deterministic configurations and its own offscreen renderer."""

    def __init__(
        self,
        task: str,
        *,
        seed: int = 0,
        image_size: int = 128,
        cameras: list[str] | tuple = ("corner4",),
        state_layout: str = "hand",
    ):
        setup_rendering()
        import metaworld
        import mujoco

        if task not in INSTRUCTIONS:
            raise UserError(f"unknown Meta-World task {task!r}")
        self.task, self.seed, self.image_size = task, seed, image_size
        self.cameras = check_cameras(list(cameras))
        self.state_layout = check_state_layout(state_layout)
        self._state_index = STATE_LAYOUTS[state_layout][1]
        self._goal_given = task in GOAL_FREE_TASKS  # used by "hand_task_goal"
        self.instruction = INSTRUCTIONS[task]
        self._benchmarks: dict[int, list] = {}
        self.env = metaworld.MT1(task, seed=seed).train_classes[task]()
        self.env.set_task(self.configurations(seed)[0])
        fast_render(self.env.model)
        self.renderer = (
            mujoco.Renderer(self.env.model, height=image_size, width=image_size) if self.cameras else None
        )
        # A renderer still open at interpreter exit would be freed after EGL's module is torn down (a noisy
        # traceback on every run's last line): close it at exit, or with the env, whichever comes first.
        # weakref.finalize's own exit hook is registered once per process, possibly before EGL's (pytest
        # makes one early) and so run after EGL's shutdown; an atexit hook registered now runs before it.
        self._close_renderer = weakref.finalize(self, self.renderer.close) if self.renderer else None
        if self._close_renderer is not None:
            atexit.register(self._close_renderer)

    def configurations(self, seed: int) -> list:
        """The 50 fixed configurations of `MT1(task, seed)`."""
        if seed not in self._benchmarks:
            import metaworld

            self._benchmarks[seed] = metaworld.MT1(self.task, seed=seed).train_tasks
        return self._benchmarks[seed]

    def reset(self, episode: int) -> np.ndarray:
        """Reset to configuration `episode`: seed + episode // 50, index episode % 50. Returns the raw obs [39]."""
        self.env.set_task(self.configurations(self.seed + episode // 50)[episode % 50])
        obs, _ = self.env.reset()
        return obs

    def step(self, action: np.ndarray) -> tuple[np.ndarray, bool]:
        obs, _, _, _, info = self.env.step(action)
        return obs, bool(info["success"])

    def state(self, obs: np.ndarray) -> np.ndarray:
        state = np.asarray(obs[self._state_index], dtype=np.float32)  # see STATE_LAYOUTS
        if self.state_layout == "hand_task_goal":
            goal = state[4:7] if self._goal_given else np.zeros(3, np.float32)
            state = np.concatenate([state[:4], goal, [float(self._goal_given)]]).astype(np.float32)
        return state  # [state dim]

    def render(self) -> dict[str, np.ndarray]:
        frames = {}
        for cam in self.cameras:
            self.renderer.update_scene(self.env.data, camera=cam)
            img = self.renderer.render()[::-1, ::-1].copy()  # [H, W, 3]; undo the 180° rotation
            if img.max() == 0:
                raise RuntimeError(
                    f"camera {cam!r} of {self.task} rendered an all-black frame: the GL context is broken "
                    "(MUJOCO_GL unset, or a renderer of a closed env still alive in this process)"
                )
            frames[cam] = img
        return frames

    def expert(self):
        """Meta-World's scripted policy for this task: `.get_action(obs) -> [4]`."""
        from metaworld.policies import ENV_POLICY_MAP

        return ENV_POLICY_MAP[self.task]()

    def close(self) -> None:
        if self._close_renderer is not None:
            self._close_renderer()  # idempotent
            self.renderer = None
        self.env.close()
