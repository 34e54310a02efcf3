"""`shallowpi to-lerobot`: a policy folder LeRobot runs with the `lerobot_policy_shallowpi` plugin.

    shallowpi to-lerobot --policy out/l6/checkpoints/last/pretrained_model --out out/l6_lerobot \
        [--camera-map observation.image=observation.images.base_0_rgb] [--n-action-steps 10]
    pip install -e plugins/lerobot_policy_shallowpi        # in the LeRobot environment
    lerobot-eval --policy.path=out/l6_lerobot --env.type=metaworld --env.task=reach-v3 ...

The folder keeps the weights as they are and rewrites config.json ("type": "shallowpi") and the processor
files (see shallowpi/lerobot_export.py); shallowpi's own commands read it as well.
"""

from __future__ import annotations

import argparse

from shallowpi.commands.options import camera_map, check_input_file, positive_int

# also a Hugging Face hub id org/name[@revision] (cli.resolve_hub_ids)
HUB_IDS = {"policy": "policy"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True, help="shallowpi or LeRobot pretrained folder")
    p.add_argument("--out", required=True, help="folder to write (LeRobot pretrained_model layout)")
    p.add_argument(
        "--camera-map",
        type=camera_map,
        default=None,
        help="replace the camera map: CAMERA_KEY=MODEL_SLOT,... (e.g. observation.image=observation.images.base_0_rgb)",
    )
    p.add_argument("--n-action-steps", type=positive_int, default=None, help="actions LeRobot runs per chunk")
    p.add_argument("--tokenizer", default=None, help="SentencePiece file for folders that ship none")
    p.add_argument("--overwrite", action="store_true")


def run(args: argparse.Namespace) -> int:
    from shallowpi.lerobot_export import export_lerobot

    check_input_file(args.tokenizer, "--tokenizer")  # given, it must exist (read only for LeRobot folders)
    out = export_lerobot(
        args.policy,
        args.out,
        camera_map=args.camera_map,
        n_action_steps=args.n_action_steps,
        tokenizer=args.tokenizer,
        overwrite=args.overwrite,
    )
    print(f"wrote {out} (LeRobot: --policy.path={out}, with lerobot_policy_shallowpi installed)")
    return 0
