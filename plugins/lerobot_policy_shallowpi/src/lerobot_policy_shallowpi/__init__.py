"""LeRobot plugin: shallowpi students (π0 / π0.5 of any depth) as `--policy.type=shallowpi`.

Importing the package registers the config type (LeRobot's factory then finds `ShallowPiPolicy` in
`modeling_shallowpi` and `make_shallowpi_pre_post_processors` in `processor_shallowpi` by name) and the two
processor steps that saved pipelines name.
"""

from lerobot_policy_shallowpi.configuration_shallowpi import ShallowPiConfig
from lerobot_policy_shallowpi.processor_shallowpi import (
    ShallowPiPostprocessorStep,
    ShallowPiPreprocessorStep,
    make_shallowpi_pre_post_processors,
)

__all__ = [
    "ShallowPiConfig",
    "ShallowPiPostprocessorStep",
    "ShallowPiPreprocessorStep",
    "make_shallowpi_pre_post_processors",
]
