"""A LeRobotDataset (folder or hub id) as the trainer's example source, with its processor fitted to a model.

    data = dataset_source("data/mt10", teacher.config, processor="path/to/teacher")
    train(student, data, cfg, DistillLossConfig(), teacher=teacher, write_extra=data.save_processor)

The one place the command line (`train`, `distill`) and Python users turn a dataset into training examples:
the processor is the model's own (its camera map, prompt and normalisation, from `processor`) or a new one
with the dataset's statistics, and every task's prompt is checked at start-up, not at the first batch that
holds it.
"""

from __future__ import annotations

from pathlib import Path

from shallowpi.distill.data import ProcessedSource
from shallowpi.distill.dataset_fit import build_preprocessor
from shallowpi.model import PiConfig


class DatasetSource(ProcessedSource):
    """Training examples of a dataset + `save_processor(folder)`, which every saved model gets (stats and
    tokenizer travel with the weights)."""

    def save_processor(self, directory: Path) -> None:
        from shallowpi.data.processor_files import save_processor

        pre = self.preprocessor
        save_processor(directory, pre.config, pre.raw_stats, pre.tokenizer)


def dataset_source(
    dataset: str | Path,
    config: PiConfig,
    *,
    processor: str | Path | None = None,
    tokenizer: str | Path | None = None,
    camera_map: dict[str, str] | None = None,
    dataset_stats: bool = False,
    truncate_prompt: bool = False,
) -> DatasetSource:
    """`dataset`: a LeRobotDataset folder or hub id. `processor`: a pretrained folder whose processor to
    keep (a student keeps its teacher's); None builds one from the dataset. `dataset_stats`: with
    `processor`, normalise with the dataset's statistics instead. `truncate_prompt`: cut prompts that do not
    fit instead of refusing them (saved with the processor)."""
    from shallowpi.data.lerobot_dataset import LeRobotDataset
    from shallowpi.hub import resolve_dataset

    data = LeRobotDataset(resolve_dataset(dataset), chunk_size=config.chunk_size)
    pre = build_preprocessor(
        config,
        data,
        processor_dir=processor,
        tokenizer=tokenizer,
        camera_map=camera_map,
        dataset_stats=dataset_stats,
    )
    if truncate_prompt:
        pre.config.truncate_prompt = True
    for task in sorted(set(data.tasks.values())):
        pre.check_prompt(task)
    return DatasetSource(data, pre)


__all__ = ["DatasetSource", "dataset_source"]
