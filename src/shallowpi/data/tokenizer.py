"""SentencePiece tokenizer behind one interface: PaliGemma's model file for real checkpoints, or the small
test-bed model shipped in `shallowpi/assets/tokenizer/` (built by scripts/build_tokenizer.py).

Both use PaliGemma's special ids: pad 0, eos 1, bos 2, unk 3. Prompts are tokenized with BOS, right-padded
with pad (mask False) and truncated to `max_length`, as openpi's `PaligemmaTokenizer` and LeRobot's
TokenizerProcessorStep(padding="max_length", padding_side="right", truncation=True) do.
"""

from __future__ import annotations

import functools
from pathlib import Path

import sentencepiece as spm
import torch

from shallowpi.errors import MissingFileError, UserError

TESTBED_TOKENIZER = Path(__file__).resolve().parent.parent / "assets" / "tokenizer" / "testbed_1024.model"
TESTBED_VOCAB_SIZE = 1024


class Tokenizer:
    def __init__(self, model_file: str | Path):
        self.path = Path(model_file)
        if not self.path.is_file():
            raise MissingFileError(f"tokenizer model not found: {self.path}")
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(self.path))
        except (RuntimeError, OSError) as e:
            raise UserError(f"not a SentencePiece model: {self.path}: {e}") from e
        self.vocab_size = self.sp.get_piece_size()
        self.pad_id = self.sp.pad_id() if self.sp.pad_id() >= 0 else 0
        self.bos_id, self.eos_id, self.unk_id = self.sp.bos_id(), self.sp.eos_id(), self.sp.unk_id()

    @functools.cached_property
    def max_piece_chars(self) -> int:
        """The most characters one token can stand for: bounds the text a prompt of L tokens can hold."""
        return max(len(self.sp.id_to_piece(i)) for i in range(self.vocab_size))

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        return self.sp.encode(text, add_bos=add_bos, add_eos=add_eos)

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.sp.decode([i for i in ids if i != self.pad_id])

    def tokenize(
        self, text: str, max_length: int, *, add_bos: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """text -> (ids LongTensor [max_length], mask BoolTensor [max_length]); right-padded, truncated."""
        return self.pad(self.encode(text, add_bos=add_bos)[:max_length], max_length)

    def pad(self, ids: list[int], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (at most max_length) -> (ids LongTensor [max_length], mask BoolTensor [max_length])."""
        n = len(ids)
        tokens = torch.full((max_length,), self.pad_id, dtype=torch.long)  # [L]
        tokens[:n] = torch.tensor(ids, dtype=torch.long)
        mask = torch.zeros(max_length, dtype=torch.bool)  # [L]
        mask[:n] = True
        return tokens, mask


def load_tokenizer(path: str | Path | None = None) -> Tokenizer:
    """`path` to a SentencePiece model (e.g. PaliGemma's tokenizer.model); None gives the shipped test-bed one."""
    return Tokenizer(TESTBED_TOKENIZER if path is None else path)
