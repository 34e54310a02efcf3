"""Installed into the test venv (with a .pth line): with $SHALLOWPI_FAST_RENDER set, gymnasium's MuJoCo
offscreen viewer turns shadows, reflections and MSAA off before its first frame (shallowpi's fast-render
recipe, shallowpi.sim.metaworld_env.fast_render: ~10x faster on llvmpipe, same scene). It only makes
lerobot-eval's renders cheap enough for CI on 2 CPU cores; nothing of LeRobot's evaluation loop changes."""

import importlib.abc
import importlib.machinery
import os
import sys

TARGET = "gymnasium.envs.mujoco.mujoco_rendering"


def _patch(module) -> None:
    base = module.BaseRender
    original = base.__init__

    def __init__(self, model, data, *args, **kwargs):
        model.light_castshadow[:] = 0
        model.mat_reflectance[:] = 0
        model.vis.quality.offsamples = 0
        original(self, model, data, *args, **kwargs)

    base.__init__ = __init__


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def patched_exec(module):
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = patched_exec
        return spec


if os.environ.get("SHALLOWPI_FAST_RENDER"):
    sys.meta_path.insert(0, _Finder())
