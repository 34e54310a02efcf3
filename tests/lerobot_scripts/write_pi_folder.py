"""Run by the LeRobot 0.4.4 venv: a π0 / π0.5 pretrained folder written by LeRobot itself, plus what its
pipelines make of one fixed observation and one fixed normalised action chunk.

    python write_pi_folder.py pi05|pi0 OUT TOKENIZER_MODEL IO_OUT

config.json: PI0Config / PI05Config.save_pretrained. Processors: LeRobot's own make_pi0(5)_pre_post_processors
(the tokenizer step gets a local GemmaTokenizer over TOKENIZER_MODEL instead of downloading
google/paligemma-3b-pt-224; it still saves the Hub name, as for a real checkpoint), with a rename map set as
lerobot-train --rename_map sets it, saved with the pipelines' save_pretrained.
"""

import sys
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import transformers
from lerobot.configs.types import FeatureType, PolicyFeature
from safetensors.torch import save_file

variant, out, tok_path, io_out = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
tok = transformers.GemmaTokenizer(
    vocab_file=tok_path, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
)
if variant == "pi05":
    from lerobot.policies.pi05.configuration_pi05 import PI05Config as Config
    from lerobot.policies.pi05.processor_pi05 import make_pi05_pre_post_processors as make
else:
    from lerobot.policies.pi0.configuration_pi0 import PI0Config as Config
    from lerobot.policies.pi0.processor_pi0 import make_pi0_pre_post_processors as make

slots = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
feats = {f"observation.images.{s}": PolicyFeature(type=FeatureType.VISUAL, shape=(3, 56, 56)) for s in slots}
feats["observation.state"] = PolicyFeature(type=FeatureType.STATE, shape=(8,))
cfg = Config(
    input_features=feats,
    output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(7,))},
    chunk_size=10,
    n_action_steps=10,
    tokenizer_max_length=200,
    image_resolution=(56, 56),
    device="cpu",
    push_to_hub=False,
)
cfg.save_pretrained(out)

i8, i7 = np.arange(8, dtype=np.float32), np.arange(7, dtype=np.float32)
stats = {
    "observation.state": {
        "mean": 0.1 * i8,
        "std": 1 + 0.1 * i8,
        "q01": -1 - 0.1 * i8,
        "q99": 1 + 0.3 * i8,
        "min": -2 - i8,
        "max": 2 + i8,
    },
    "action": {
        "mean": -0.2 * i7,
        "std": 0.5 + 0.1 * i7,
        "q01": -0.5 - 0.2 * i7,
        "q99": 0.5 + 0.1 * i7,
        "min": -1 - i7,
        "max": 1 + i7,
    },
}
with mock.patch.object(transformers.AutoTokenizer, "from_pretrained", return_value=tok):
    pre, post = make(cfg, dataset_stats=stats)
pre.steps[0].rename_map = {
    "observation.images.image": "observation.images.base_0_rgb",
    "observation.images.wrist_image": "observation.images.left_wrist_0_rgb",
}
pre.save_pretrained(out)
post.save_pretrained(out)

g = torch.Generator().manual_seed(0)
state = torch.randn(8, generator=g) * 1.5
obs = {
    "observation.images.image": torch.rand(3, 56, 56, generator=g),
    "observation.images.wrist_image": torch.rand(3, 56, 56, generator=g),
    "observation.state": state,
    "task": "pick_up the red cube",
}
batch = pre(obs)
action_norm = torch.randn(1, 10, 7, generator=g)
action = post(action_norm)
save_file(
    {
        "state_raw": state.contiguous(),
        "image": obs["observation.images.image"].contiguous(),
        "wrist": obs["observation.images.wrist_image"].contiguous(),
        "tokens": batch["observation.language.tokens"].contiguous(),
        "token_mask": batch["observation.language.attention_mask"].bool().contiguous(),
        "state_norm": batch["observation.state"].float().contiguous(),
        "action_norm": action_norm.contiguous(),
        "action": action.float().contiguous(),
    },
    io_out,
)
print("ok", sorted(batch))
