"""Language prompts of π0 and π0.5 (openpi `PaligemmaTokenizer.tokenize`, LeRobot's pi0/pi05 processors).

π0:   "<task>\n"                                         (the state goes to the model as a vector)
π0.5: "Task: <task>, State: <b_1 b_2 ... b_S>;\nAction: "  (the normalised state as 256-bin integers)

The rules are written once, torch-free, in `shallowpi.data.processor_spec` (the ONNX runner uses them too);
this module names them for the torch side.
"""

from __future__ import annotations

from shallowpi.data.processor_spec import STATE_BINS, clean_task, discretize_state, pi0_prompt, pi05_prompt

__all__ = ["STATE_BINS", "clean_task", "discretize_state", "pi0_prompt", "pi05_prompt"]
