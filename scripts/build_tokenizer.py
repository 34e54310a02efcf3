"""Build the test-bed SentencePiece tokenizer shipped in src/shallowpi/assets/tokenizer/ (deterministic).

    python3 scripts/build_tokenizer.py [--out src/shallowpi/assets/tokenizer/testbed_1024.model]

A 1024-piece BPE model with PaliGemma's special ids (pad 0, eos 1, bos 2, unk 3), byte fallback (any text
encodes, "\\n" included) and split digits (as Gemma's tokenizer), trained on a fixed corpus: the Meta-World
instructions, LeRobot/LIBERO-style manipulation phrases and π0.5 prompts with discretised states. Same
inputs and one training thread give a byte-identical model file.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
from pathlib import Path

import numpy as np
import sentencepiece as spm

from shallowpi.data.prompt import pi05_prompt
from shallowpi.sim.metaworld_env import INSTRUCTIONS

VOCAB_SIZE = 1024
VERBS = [
    "pick up",
    "put",
    "place",
    "push",
    "pull",
    "open",
    "close",
    "turn on",
    "turn off",
    "move",
    "slide",
    "press",
    "lift",
    "stack",
    "insert",
    "grasp",
    "rotate",
    "wipe",
    "pour",
    "drop",
    "fold",
    "hang",
    "take",
]
OBJECTS = [
    "bowl",
    "plate",
    "cube",
    "block",
    "mug",
    "cup",
    "drawer",
    "door",
    "window",
    "button",
    "peg",
    "puck",
    "ketchup",
    "basket",
    "stove",
    "microwave",
    "cabinet",
    "book",
    "caddy",
    "bottle",
    "soup",
    "cheese",
    "butter",
    "milk",
    "box",
    "lid",
    "sponge",
    "towel",
    "spoon",
    "fork",
    "knife",
    "pan",
    "pot",
    "faucet",
    "lever",
    "handle",
    "dial",
    "ball",
    "ring",
    "stick",
    "shelf",
    "bin",
    "tray",
    "can",
    "jar",
    "cloth",
]
COLORS = ["red", "green", "blue", "yellow", "black", "white", "orange", "purple", "brown", "wooden", "metal"]
PLACES = [
    "on the plate",
    "in the basket",
    "into the drawer",
    "on top of the cabinet",
    "on the stove",
    "next to the bowl",
    "in front of the mug",
    "to the left of the box",
    "to the right of the plate",
    "at the goal",
    "on the shelf",
    "in the sink",
    "under the faucet",
    "between the plate and the ramekin",
]
ADJECTIVES = [
    "small",
    "large",
    "left",
    "right",
    "top",
    "bottom",
    "middle",
    "front",
    "back",
    "upper",
    "lower",
    "near",
    "far",
    "empty",
    "full",
    "tall",
    "short",
    "round",
    "square",
    "heavy",
    "light",
    "clean",
]
EXTRA = [
    "robot",
    "arm",
    "gripper",
    "table",
    "kitchen",
    "counter",
    "carefully",
    "slowly",
    "then",
    "and",
    "first",
    "after",
    "before",
    "until",
    "while",
    "hold",
    "release",
    "rack",
    "oven",
    "fridge",
    "chair",
    "laptop",
    "phone",
    "pencil",
    "marker",
    "scissors",
    "tape",
    "banana",
    "apple",
    "lemon",
    "carrot",
    "potato",
    "tomato",
    "onion",
    "bread",
    "egg",
    "chocolate pudding",
    "alphabet soup",
    "cream cheese",
    "tomato sauce",
    "salad dressing",
    "bbq sauce",
    "orange juice",
    "ramekin",
    "moka pot",
    "wine bottle",
    "flat stove",
    "wine rack",
    "storage",
    "object",
    "target",
    "position",
    "location",
    "success",
]


def corpus() -> list[str]:
    lines = list(INSTRUCTIONS.values())
    for a, o, e in itertools.product(ADJECTIVES, OBJECTS, EXTRA):
        lines.append(f"the {a} {o} and the {e}")
    for v, c, o, p in itertools.product(VERBS, COLORS, OBJECTS, PLACES[:4]):
        lines.append(f"{v} the {c} {o} {p}")
    rng = np.random.default_rng(0)
    for i, text in enumerate(sorted(set(lines))[:4000]):
        dims = int(rng.integers(2, 33))
        state = rng.uniform(-1.1, 1.1, size=dims)
        lines.append(pi05_prompt(text, state) if i % 2 == 0 else text.capitalize() + ".")
    return lines


def build(out: Path) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    # Sentences from an iterator and the model into memory: no temp paths end up in the stored trainer spec.
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([line.replace("\n", " ") for line in corpus()]),
        model_writer=model,
        vocab_size=VOCAB_SIZE,
        model_type="bpe",
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        byte_fallback=True,
        split_digits=True,
        character_coverage=1.0,
        num_threads=1,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        minloglevel=2,
    )
    data = model.getvalue()
    tmp_out = out.with_suffix(".tmp")
    tmp_out.write_bytes(data)
    tmp_out.replace(out)
    return hashlib.sha256(data).hexdigest()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[1] / "src/shallowpi/assets/tokenizer/testbed_1024.model"
    p.add_argument("--out", type=Path, default=default)
    a = p.parse_args()
    print(f"wrote {a.out} sha256={build(a.out)}")
