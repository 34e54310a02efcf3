"""Language prompts of π0 and π0.5 (openpi `PaligemmaTokenizer.tokenize`, LeRobot's pi0/pi05 processors).

π0:   "<task>\n"                                         (the state goes to the model as a vector)
π0.5: "Task: <task>, State: <b_1 b_2 ... b_S>;\nAction: "  (the normalised state as 256-bin integers)
"""

from __future__ import annotations

import numpy as np
import torch

STATE_BINS = 256


def clean_task(task: str) -> str:
    """openpi's cleaning: strip, '_' -> ' ', newlines -> ' ' (task names like 'pick_up_cube' read as words)."""
    return task.strip().replace("_", " ").replace("\n", " ")


def pi0_prompt(task: str) -> str:
    # LeRobot's Pi0NewLineProcessor appends "\n"; openpi encodes the "\n" separately (same text).
    return clean_task(task) + "\n"


def discretize_state(state: np.ndarray | torch.Tensor, bins: int = STATE_BINS) -> np.ndarray:
    """Normalised state [S] -> integer bins [S] in [-1, bins-1]: bin k covers [-1 + 2k/bins, -1 + 2(k+1)/bins).

    Values below -1 give -1 and values >= 1 - 2/bins give bins-1, exactly like
    `np.digitize(state, np.linspace(-1, 1, bins + 1)[:-1]) - 1` in openpi and LeRobot.
    """
    x = state.detach().cpu().numpy() if isinstance(state, torch.Tensor) else np.asarray(state)
    edges = np.linspace(-1, 1, bins + 1)[:-1]
    return np.digitize(x.astype(np.float64), bins=edges) - 1


def pi05_prompt(task: str, normalized_state: np.ndarray | torch.Tensor) -> str:
    state_str = " ".join(str(int(b)) for b in discretize_state(normalized_state))
    return f"Task: {clean_task(task)}, State: {state_str};\nAction: "
