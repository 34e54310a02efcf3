"""SentencePiece tokenizer behind one interface: PaliGemma's model file for real checkpoints, or the small
test-bed model shipped in `shallowpi/assets/tokenizer/` (built by scripts/build_tokenizer.py).

Both use PaliGemma's special ids: pad 0, eos 1, bos 2, unk 3. Prompts are tokenized with BOS, right-padded
with pad (mask False) and truncated to `max_length`, as openpi's `PaligemmaTokenizer` and LeRobot's
TokenizerProcessorStep(padding="max_length", padding_side="right", truncation=True) do.

The model itself (`SentencePieceTokenizer`) is torch-free and lives in `processor_spec`, which the ONNX
runner shares; `Tokenizer` adds torch tensors in and out.
"""

from __future__ import annotations

from pathlib import Path

import torch

from shallowpi.data.processor_spec import SentencePieceTokenizer, pad_ids

TESTBED_TOKENIZER = Path(__file__).resolve().parent.parent / "assets" / "tokenizer" / "testbed_1024.model"
TESTBED_VOCAB_SIZE = 1024


class Tokenizer(SentencePieceTokenizer):
    def decode(self, ids: list[int] | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return super().decode(ids)

    def tokenize(
        self, text: str, max_length: int, *, add_bos: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """text -> (ids LongTensor [max_length], mask BoolTensor [max_length]); right-padded, truncated."""
        return self.pad(self.encode(text, add_bos=add_bos)[:max_length], max_length)

    def pad(self, ids: list[int], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (at most max_length) -> (ids LongTensor [max_length], mask BoolTensor [max_length])."""
        tokens, mask = pad_ids(ids, max_length, self.pad_id)
        return torch.from_numpy(tokens), torch.from_numpy(mask)


def load_tokenizer(path: str | Path | None = None) -> Tokenizer:
    """`path` to a SentencePiece model (e.g. PaliGemma's tokenizer.model); None gives the shipped test-bed one."""
    return Tokenizer(TESTBED_TOKENIZER if path is None else path)
