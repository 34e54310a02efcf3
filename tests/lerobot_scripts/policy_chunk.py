"""Run by the LeRobot venv: load a policy folder the way lerobot-eval does (plugins registered, config from
config.json, policy class and processors from LeRobot's factory), run one fixed observation through it.

    python policy_chunk.py FOLDER IO_IN IO_OUT [RESAVE]

IO_IN (safetensors): image [3,H,W] float in [0,1], state [S], noise [1, chunk, max_action_dim], and the task
in FOLDER/../task.txt. IO_OUT: chunk [1, chunk, A] (postprocessed) and first_action [1, A] from select_action;
chunk_im_inside / chunk_im_outside: the policy loaded again inside torch.inference_mode (its weights then
inference tensors), its chunk sampled inside it, then outside it (no_grad).
With rtc_prev [T, A] (normalised) in IO_IN: also chunk_rtc, predict_action_chunk with LeRobot's default
RTCConfig, inference delay 2 and that left-over, and supports_rtc (LeRobot's RTC rollout check); and
chunk_rtc_past / chunk_rtc_padded, the left-over zero-padded to 16 rows with execution horizon 16 (what
lerobot-rollout passes when the horizon is past the chunk) / to the chunk with the default horizon.
With RESAVE (a folder): the policy's save_pretrained there, loaded back as above, and its chunk as
chunk_resaved (what a lerobot-train checkpoint of the policy would sample).
"""

import sys
from pathlib import Path

import torch
from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.factory import get_policy_class, make_pre_post_processors
from lerobot.utils.import_utils import register_third_party_plugins
from safetensors.torch import load_file, save_file

register_third_party_plugins()
folder, io_in, io_out = sys.argv[1], sys.argv[2], sys.argv[3]
resave = sys.argv[4] if len(sys.argv) > 4 else None
io = load_file(io_in)
task = (Path(io_in).parent / "task.txt").read_text()


def load_policy(path):
    cfg = PreTrainedConfig.from_pretrained(path)
    cfg.pretrained_path = path
    return cfg, get_policy_class(cfg.type).from_pretrained(path, config=cfg)


cfg, policy = load_policy(folder)
pre, post = make_pre_post_processors(
    cfg,
    pretrained_path=folder,
    preprocessor_overrides={
        "device_processor": {"device": "cpu"},
        "rename_observations_processor": {"rename_map": {}},
    },
)
obs = {"observation.image": io["image"][None], "observation.state": io["state"][None], "task": [task]}
batch = pre(obs)
with torch.inference_mode():
    chunk = post(policy.predict_action_chunk(batch, noise=io["noise"]))
    policy.reset()
    first = post(policy.select_action(batch, noise=io["noise"]))
out = {"chunk": chunk.contiguous(), "first_action": first.contiguous()}
with torch.inference_mode():  # how users often load and run a policy
    frozen = load_policy(folder)[1]
    out["chunk_im_inside"] = post(frozen.predict_action_chunk(batch, noise=io["noise"]))
with torch.no_grad():
    out["chunk_im_outside"] = post(frozen.predict_action_chunk(batch, noise=io["noise"]))
if resave:
    policy.save_pretrained(resave)
    reloaded = load_policy(resave)[1]  # outside inference mode: its weights must stay normal tensors
    with torch.inference_mode():
        out["chunk_resaved"] = post(reloaded.predict_action_chunk(batch, noise=io["noise"]))
if "rtc_prev" in io:
    from lerobot.policies.rtc.configuration_rtc import RTCConfig
    from lerobot.rollout.inference.rtc import supports_rtc_inference

    policy.config.rtc_config = RTCConfig()
    with torch.no_grad():
        kw = {"inference_delay": 2, "prev_chunk_left_over": io["rtc_prev"]}
        out["chunk_rtc"] = post(policy.predict_action_chunk(batch, noise=io["noise"], **kw)).contiguous()
        for name, rows in (("padded", cfg.chunk_size), ("past", 16)):
            policy.config.rtc_config = RTCConfig(execution_horizon=max(rows, 10))
            prev = torch.nn.functional.pad(io["rtc_prev"], (0, 0, 0, rows - len(io["rtc_prev"])))
            kw = {"inference_delay": 2, "prev_chunk_left_over": prev}
            chunk_rtc = post(policy.predict_action_chunk(batch, noise=io["noise"], **kw))
            out[f"chunk_rtc_{name}"] = chunk_rtc.contiguous()
    out["supports_rtc"] = torch.tensor([supports_rtc_inference(policy)])
save_file(out, io_out)
print("ok", type(policy).__name__, tuple(chunk.shape))
