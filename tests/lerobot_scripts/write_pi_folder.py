"""Run by a LeRobot venv (0.4.4 or 0.6.1): a π0 / π0.5 pretrained folder written by LeRobot itself, plus what
its pipelines (and, with --sizes, its policy) make of one fixed observation.

    python write_pi_folder.py pi05|pi0 OUT TOKENIZER_MODEL IO_OUT [--sizes SIZES_JSON] [--finetune N]
                              [--metaworld]

config.json: PI0Config / PI05Config.save_pretrained. Processors: LeRobot's own make_pi0(5)_pre_post_processors
(the tokenizer step gets a local tokenizer over TOKENIZER_MODEL instead of downloading
google/paligemma-3b-pt-224; it still saves the Hub name, as for a real checkpoint), with a rename map set as
lerobot-train --rename_map sets it, saved with the pipelines' save_pretrained.

--sizes (LeRobot 0.6.1, `pi` extra): LeRobot builds its own PI0Policy / PI05Policy at the tiny sizes of
SIZES_JSON (shallowpi's "shallowpi" config object; its size-less config cannot say them, so get_gemma_config
and the PaliGemma / Gemma constructors are patched during construction, forward code untouched) and saves it
with policy.save_pretrained; IO_OUT then also holds the chunk of its predict_action_chunk for fixed noise.
--finetune N: N AdamW steps of the policy's own forward on that observation, saved as OUT_ft (policy and
pipelines); the fine-tuned folder is loaded back with LeRobot's from_pretrained and sampled again.
--metaworld: Meta-World's shapes (one camera observation.images.corner4, state 4, action 4, prompt 48).
--rtc (with --sizes): IO_OUT also holds the chunks of predict_action_chunk with LeRobot's real-time chunking
(RTCConfig per schedule, execution horizon 6) for the fixed noise, a normalised left-over rtc_prev [7, A]
(2-D, as LeRobot's RTC rollout passes it) and inference delay 2.
"""

import argparse
import json
from pathlib import Path
from unittest import mock

import numpy as np
import sentencepiece
import torch
import transformers
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot_sizes import sized_construction  # this script's folder is on sys.path
from safetensors.torch import load_file, save_file

p = argparse.ArgumentParser()
p.add_argument("variant", choices=["pi0", "pi05"])
p.add_argument("out", type=Path)
p.add_argument("tokenizer")
p.add_argument("io_out")
p.add_argument("--sizes", default=None)
p.add_argument("--finetune", type=int, default=0)
p.add_argument("--metaworld", action="store_true")
p.add_argument("--rtc", action="store_true")
args = p.parse_args()


def make_tokenizer(path: str):
    """An HF tokenizer over a SentencePiece file giving exactly [BOS] + SentencePiece's ids. Under transformers
    5, GemmaTokenizer(vocab_file=...) silently ignores the file (every prompt becomes one <unk>); the
    SentencePiece backend class takes it."""
    special = dict(bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    if int(transformers.__version__.split(".")[0]) >= 5:
        from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

        tok = SentencePieceBackend(vocab_file=path, special_tokens_pattern="bos", **special)
    else:
        tok = transformers.GemmaTokenizer(vocab_file=path, **special)
    sp = sentencepiece.SentencePieceProcessor(model_file=path)
    probe = "pick_up the red cube\n"
    assert tok(probe).input_ids == [sp.bos_id(), *sp.encode(probe)], "the tokenizer ignores the model file"
    return tok


if args.variant == "pi05":
    from lerobot.policies.pi05.configuration_pi05 import PI05Config as Config
    from lerobot.policies.pi05.processor_pi05 import make_pi05_pre_post_processors as make
else:
    from lerobot.policies.pi0.configuration_pi0 import PI0Config as Config
    from lerobot.policies.pi0.processor_pi0 import make_pi0_pre_post_processors as make


tok = make_tokenizer(args.tokenizer)
slots = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
state_dim, action_dim = (4, 4) if args.metaworld else (8, 7)
size = json.loads(Path(args.sizes).read_text())["vision"]["image_size"] if args.sizes else 56
feats = {
    f"observation.images.{s}": PolicyFeature(type=FeatureType.VISUAL, shape=(3, size, size)) for s in slots
}
feats["observation.state"] = PolicyFeature(type=FeatureType.STATE, shape=(state_dim,))
cfg = Config(
    input_features=feats,
    output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(action_dim,))},
    chunk_size=10,
    n_action_steps=10,
    tokenizer_max_length=48 if args.metaworld else 200,
    image_resolution=(size, size),
    device="cpu",
    push_to_hub=False,
)

i_s, i_a = np.arange(state_dim, dtype=np.float32), np.arange(action_dim, dtype=np.float32)
stats = {
    "observation.state": {
        "mean": 0.1 * i_s,
        "std": 1 + 0.1 * i_s,
        "q01": -1 - 0.1 * i_s,
        "q99": 1 + 0.3 * i_s,
        "min": -2 - i_s,
        "max": 2 + i_s,
    },
    "action": {
        "mean": -0.2 * i_a,
        "std": 0.5 + 0.1 * i_a,
        "q01": -0.5 - 0.2 * i_a,
        "q99": 0.5 + 0.1 * i_a,
        "min": -1 - i_a,
        "max": 1 + i_a,
    },
}
with mock.patch.object(transformers.AutoTokenizer, "from_pretrained", return_value=tok):
    pre, post = make(cfg, dataset_stats=stats)
if args.metaworld:
    pre.steps[0].rename_map = {"observation.images.corner4": "observation.images.base_0_rgb"}
else:
    pre.steps[0].rename_map = {
        "observation.images.image": "observation.images.base_0_rgb",
        "observation.images.wrist_image": "observation.images.left_wrist_0_rgb",
    }

g = torch.Generator().manual_seed(0)
state = torch.randn(state_dim, generator=g) * 1.5
if args.metaworld:
    images = {"observation.images.corner4": torch.rand(3, size, size, generator=g)}
else:
    images = {
        "observation.images.image": torch.rand(3, size, size, generator=g),
        "observation.images.wrist_image": torch.rand(3, size, size, generator=g),
    }
task = "pick_up the red cube"
obs = {**images, "observation.state": state, "task": task}
batch = pre(obs)
action_norm = torch.randn(1, 10, action_dim, generator=g)
action = post(action_norm)
NOISE_SEED = 11  # shallowpi's ActionPredictor.noise(11): the same draw
noise = torch.randn((1, 10, 32), generator=torch.Generator().manual_seed(NOISE_SEED))
io = {
    "state_raw": state.contiguous(),
    **{k.removeprefix("observation.images."): v.contiguous() for k, v in images.items()},
    "tokens": batch["observation.language.tokens"].contiguous(),
    "token_mask": batch["observation.language.attention_mask"].bool().contiguous(),
    "state_norm": batch["observation.state"].float().contiguous(),
    "action_norm": action_norm.contiguous(),
    "action": action.float().contiguous(),
    "noise": noise.contiguous(),
}


def save_pipelines(d: Path) -> None:
    pre.save_pretrained(d)
    post.save_pretrained(d)


def chunk_of(policy) -> torch.Tensor:
    with torch.inference_mode():
        return post(policy.predict_action_chunk(pre(obs), noise=noise.clone())).float().contiguous()


if args.sizes is None:
    cfg.save_pretrained(args.out)
    save_pipelines(args.out)
else:
    from lerobot.policies.factory import get_policy_class

    patches = sized_construction(args.variant, json.loads(Path(args.sizes).read_text()))
    for patch in patches:
        patch.start()
    torch.manual_seed(0)
    policy_cls = get_policy_class(args.variant)
    policy = policy_cls(cfg).eval()
    policy.save_pretrained(args.out)
    save_pipelines(args.out)
    io["chunk"] = chunk_of(policy)
    if args.rtc:
        from lerobot.configs.types import RTCAttentionSchedule
        from lerobot.policies.rtc.configuration_rtc import RTCConfig

        prev = torch.randn(7, action_dim, generator=g)
        io["rtc_prev"] = prev.contiguous()
        for schedule in RTCAttentionSchedule:
            policy.config.rtc_config = RTCConfig(prefix_attention_schedule=schedule, execution_horizon=6)
            policy.init_rtc_processor()
            with torch.no_grad():  # its guidance runs autograd: no inference mode
                out = policy.predict_action_chunk(
                    pre(obs), noise=noise.clone(), inference_delay=2, prev_chunk_left_over=prev
                )
            io[f"chunk_rtc_{schedule.value}"] = post(out).float().contiguous()
        policy.config.rtc_config = None
        policy.init_rtc_processor()
    if args.finetune:
        ft = args.out.parent / f"{args.out.name}_ft"
        optim = torch.optim.AdamW(policy.get_optim_params(), lr=1e-3)
        train_batch = pre({**obs, "action": action})  # [1, chunk, dim]: already a batch
        policy.train()
        for _ in range(args.finetune):
            loss, _ = policy.forward(train_batch)
            optim.zero_grad()
            loss.backward()
            optim.step()
        policy.eval()
        policy.save_pretrained(ft)
        save_pipelines(ft)
        io["chunk_ft"] = chunk_of(policy)
        weights = load_file(str(ft / "model.safetensors"))
        head = weights["model.paligemma_with_expert.paligemma.lm_head.weight"]
        embed = weights["model.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"]
        io["embed_head_max_diff"] = (head - embed).abs().max().reshape(1)
        reloaded = policy_cls.from_pretrained(ft).eval()  # what LeRobot makes of its fine-tuned folder
        io["chunk_ft_reloaded"] = chunk_of(reloaded)
save_file(io, args.io_out)
print("ok", sorted(batch), {k: tuple(v.shape) for k, v in io.items() if k.startswith("chunk")})
