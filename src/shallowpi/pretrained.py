"""A pretrained_model folder's processor, in either layout: shallowpi's own files or LeRobot's.

LeRobot's processor files do not record the model's input geometry (camera slots, image size, padded dims,
chunk, prompt length); its config.json does. Reading both puts this module above data/ (the processors) and
model/ (config.json), so data/ never imports the model (docs/architecture.md).
"""

from __future__ import annotations

from pathlib import Path

from shallowpi.data.lerobot_processor import is_lerobot_layout, read_lerobot_processor
from shallowpi.data.processor import Postprocessor, Preprocessor, ProcessorConfig
from shallowpi.data.processor_files import PROCESSOR_CONFIG, read_shallowpi_processor
from shallowpi.hub import resolve_policy
from shallowpi.model.checkpoint import read_config
from shallowpi.model.config import PiConfig


def processor_config(model: PiConfig, **fields) -> ProcessorConfig:
    """The processor settings `model` fixes (variant, camera slots, image size, padded dims, chunk size,
    prompt length), plus `fields` (camera map, norm modes, real dims, ...)."""
    return ProcessorConfig(
        variant=model.variant,
        cameras=tuple(model.cameras),
        image_size=model.vision.image_size,
        max_state_dim=model.max_state_dim,
        max_action_dim=model.max_action_dim,
        chunk_size=model.chunk_size,
        tokenizer_max_length=model.tokenizer_max_length,
        **fields,
    )


def load_processor(
    directory: str | Path, *, tokenizer: str | Path | None = None
) -> tuple[Preprocessor, Postprocessor]:
    """The processors saved in a pretrained folder: shallowpi's (`save_processor`), or LeRobot's own
    policy_preprocessor.json / policy_postprocessor.json (0.4.4, 0.5+, or the shallowpi plugin's), read for
    the model in the folder's config.json. `tokenizer`: the SentencePiece file for LeRobot folders, which ship
    none (their tokenizer step names a Hub id). `directory` may be a hub id, as for `load_model`."""
    d = resolve_policy(directory)
    if not (d / PROCESSOR_CONFIG).is_file() and is_lerobot_layout(d):
        return read_lerobot_processor(d, processor_config(read_config(d)), tokenizer=tokenizer)
    return read_shallowpi_processor(d)
