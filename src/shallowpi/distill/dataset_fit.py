"""Does this dataset fit this model? Teacher/model ↔ dataset checks, and the processor that trains the model
(and travels with it).

Everything here runs before training starts, so a mismatch (action dim, cameras, missing stats) fails in
seconds with one error that names it, instead of hours later or silently.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from shallowpi.errors import UserError
from shallowpi.model import PiConfig


class DatasetMismatchError(UserError):
    """The dataset cannot feed this model (names every mismatch found)."""


def _fail(problems: list[str]) -> None:
    if problems:
        raise DatasetMismatchError("model/dataset mismatch:\n  - " + "\n  - ".join(problems))


def _feature_shape(config: PiConfig, group: str, key: str) -> list[int] | None:
    feat = (config.lerobot.get(group) or {}).get(key)
    return list(feat["shape"]) if isinstance(feat, dict) and "shape" in feat else None


def build_preprocessor(
    config: PiConfig,
    dataset,
    *,
    processor_dir: str | Path | None = None,
    tokenizer: str | Path | None = None,
    camera_map: dict[str, str] | None = None,
    dataset_stats: bool = False,
):
    """The Preprocessor for training `config` on `dataset`, after checking they fit.

    A teacher (or checkpoint) folder that carries a processor decides normalisation stats, tokenizer and
    camera map: the student must see inputs exactly as the teacher did. Otherwise the dataset's stats are
    used, dataset cameras go to the model's slots in order (or per `camera_map`), and the tokenizer is
    `tokenizer` (None = the shipped test-bed tokenizer).

    `dataset_stats` (fine-tuning on a new dataset, as LeRobot's fine-tuning does): keep the folder's camera
    map, tokenizer and prompt settings but normalise with the dataset's stats and its state/action dims.
    """
    from shallowpi.data.processor_files import has_processor
    from shallowpi.data.tokenizer import load_tokenizer
    from shallowpi.pretrained import load_processor, processor_config

    if processor_dir is not None and has_processor(processor_dir):
        try:  # shallowpi's processor files or LeRobot's own (a teacher as LeRobot saved it)
            pre, _ = load_processor(processor_dir, tokenizer=tokenizer)
        except ValueError as e:
            raise DatasetMismatchError(f"the processor saved in {processor_dir} is unusable: {e}") from e
        if dataset_stats:
            pcfg = dataclasses.replace(
                pre.config,
                state_dim=dataset.state_dim,
                action_dim=dataset.action_dim,
                state_key=dataset.state_key,
                action_key=dataset.action_key,
            )
            pre = _preprocessor(pcfg, dataset, pre.tokenizer)
    else:
        cams = list(dataset.camera_keys)
        if camera_map is None:
            if len(cams) > len(config.cameras):
                _fail(
                    [
                        f"cameras: the dataset has {len(cams)} cameras {cams} but the model has "
                        f"{len(config.cameras)} slots {list(config.cameras)}"
                    ]
                )
            camera_map = dict(zip(cams, config.cameras[: len(cams)], strict=True))
        pcfg = processor_config(
            config,
            camera_map=camera_map,
            state_dim=dataset.state_dim,
            action_dim=dataset.action_dim,
            state_key=dataset.state_key,
            action_key=dataset.action_key,
        )
        pre = _preprocessor(pcfg, dataset, load_tokenizer(tokenizer))
    check_dataset_fits(config, pre, dataset)
    return pre


def _preprocessor(pcfg, dataset, tokenizer):
    from shallowpi.data.processor import Preprocessor

    try:
        stats = dataset.stats()
    except FileNotFoundError as e:
        raise DatasetMismatchError(f"missing stats: {e}") from e
    try:
        return Preprocessor(pcfg, stats, tokenizer)
    except ValueError as e:  # the processor names the missing / wrongly sized stat
        raise DatasetMismatchError(f"missing stats: {e}") from e


def check_dataset_fits(config: PiConfig, pre, dataset) -> None:
    """Every way the model, its processor and the dataset can disagree, reported together."""
    p = pre.config
    problems: list[str] = []
    if not dataset.has_actions:
        problems.append(f"the dataset has no {dataset.action_key!r} feature to train on")
    elif pre.action_dim != dataset.action_dim:
        problems.append(
            f"action dim: the model's processor expects {pre.action_dim}, the dataset has "
            f"{dataset.action_dim}"
        )
    want = _feature_shape(config, "output_features", "action")
    # A shape equal to max_action_dim is the padded default (base checkpoints), not a dataset's action dim.
    if (
        want is not None
        and want[-1] != config.max_action_dim
        and dataset.has_actions
        and want[-1] != dataset.action_dim
    ):
        problems.append(
            f"action dim: the model was trained with action dim {want[-1]}, the dataset has "
            f"{dataset.action_dim}"
        )
    if dataset.has_actions and dataset.action_dim > config.max_action_dim:
        problems.append(
            f"action dim {dataset.action_dim} is above the model's max_action_dim {config.max_action_dim}"
        )
    if pre.state_dim != dataset.state_dim:
        problems.append(
            f"state dim: the model's processor expects {pre.state_dim}, the dataset has {dataset.state_dim}"
        )
    if dataset.state_dim > config.max_state_dim:
        problems.append(
            f"state dim {dataset.state_dim} is above the model's max_state_dim {config.max_state_dim}"
        )
    cams = list(dataset.camera_keys)
    missing = [c for c in p.camera_map if c not in cams]
    if missing:
        problems.append(
            f"cameras: the model reads {missing}, which the dataset lacks (dataset cameras: {cams})"
        )
    unmapped = [c for c in cams if c not in p.camera_map]
    if unmapped:
        problems.append(f"cameras: dataset cameras {unmapped} map to no model slot (map: {p.camera_map})")
    if tuple(p.cameras) != tuple(config.cameras):
        problems.append(f"camera slots: processor {list(p.cameras)} vs model {list(config.cameras)}")
    for name, a, b in (
        ("chunk size", p.chunk_size, config.chunk_size),
        ("image size", p.image_size, config.vision.image_size),
        ("tokenizer max length", p.tokenizer_max_length, config.tokenizer_max_length),
        ("variant", p.variant, config.variant),
    ):
        if a != b:
            problems.append(f"{name}: processor {a} vs model {b}")
    if pre.tokenizer.vocab_size > config.vocab_size:
        problems.append(
            f"tokenizer vocabulary {pre.tokenizer.vocab_size} is larger than the model's "
            f"vocab_size {config.vocab_size}"
        )
    _fail(problems)
