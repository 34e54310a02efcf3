"""The shipped test-bed tokenizer: PaliGemma's special ids, small vocab, lossless text, rebuildable."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from shallowpi.data.tokenizer import TESTBED_TOKENIZER, TESTBED_VOCAB_SIZE, Tokenizer, load_tokenizer

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build_tokenizer.py"


def test_special_ids_and_vocab_match_paligemma_convention():
    tok = load_tokenizer()
    assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.unk_id) == (0, 1, 2, 3)
    assert tok.vocab_size == TESTBED_VOCAB_SIZE
    assert TESTBED_TOKENIZER.stat().st_size < 300_000


@pytest.mark.parametrize(
    "text",
    [
        "pick up the puck and place it at the goal\n",
        "Task: open drawer, State: 0 17 255 128;\nAction: ",
        "déjà vu ☃ 3.14",
    ],
)
def test_encode_decode_is_lossless_and_in_vocab(text):
    tok = load_tokenizer()
    ids = tok.encode(text, add_bos=True)
    assert ids[0] == tok.bos_id and max(ids) < tok.vocab_size and tok.unk_id not in ids  # byte fallback
    assert tok.decode(ids) == text


def test_tokenize_pads_right_and_truncates():
    tok = load_tokenizer()
    ids, mask = tok.tokenize("close the drawer", 16)
    n = len(tok.encode("close the drawer", add_bos=True))
    assert ids.shape == mask.shape == (16,)
    assert mask.tolist() == [True] * n + [False] * (16 - n) and ids[n:].eq(0).all()
    ids, mask = tok.tokenize("close the drawer " * 20, 8)
    assert mask.all() and ids.shape == (8,)


def test_user_model_file_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer model not found"):
        Tokenizer(tmp_path / "missing.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        Tokenizer(bad)


def test_build_script_reproduces_the_shipped_file(tmp_path):
    spec = importlib.util.spec_from_file_location("build_tokenizer", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "t.model"
    mod.build(out)
    assert out.read_bytes() == TESTBED_TOKENIZER.read_bytes()
