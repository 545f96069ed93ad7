"""The from-scratch pieces of ``causal-lm``: a byte-level BPE tokenizer trained on the data and a small GPT-2.

Both are plain Hugging Face objects (``tokenizers`` + ``transformers.GPT2LMHeadModel``), so a scratch model
is saved as the same HF-style directory as an imported one and the generation runtime serves it unchanged.
Imports transformers (and torch): only the trainer imports this module.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

END_OF_TEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [END_OF_TEXT, IM_START, IM_END]

# ChatML, the template SmolLM2 and Qwen use: a scratch model trained on chat records answers in it, and a
# scratch model trained on plain text can still be called through /v1/chat/completions.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (lossless on any UTF-8 text) with the ChatML special tokens."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS)
    return wrap_tokenizer(bpe._tokenizer)


def wrap_tokenizer(tokenizer: object) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        bos_token=END_OF_TEXT,
        eos_token=IM_END,  # as SmolLM2: a chat turn and a text both end with it, so generation stops there
        unk_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        chat_template=CHAT_TEMPLATE,
    )


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids that end a generation: the tokenizer's end of sequence, and the ChatML end of turn and end
    of text when the vocabulary has them as single tokens."""
    vocabulary = tokenizer.get_vocab()
    ids = [tokenizer.eos_token_id, *(vocabulary.get(token) for token in (IM_END, END_OF_TEXT))]
    found: list[int] = []
    for token_id in ids:
        if isinstance(token_id, int) and token_id not in found:
            found.append(token_id)
    return found


def build_gpt(
    tokenizer: PreTrainedTokenizerBase, *, block_size: int, n_layer: int, n_head: int, n_embd: int
) -> GPT2LMHeadModel:
    """A small GPT-2 with no dropout: tiny models on tiny data don't need it, and a run without random
    masks resumes from a checkpoint to exactly the weights of an uninterrupted one."""
    stops = stop_token_ids(tokenizer)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=block_size,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=stops[0],
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, directory: Path) -> None:
    """``tokenizer.json`` and ``tokenizer_config.json`` with the chat template inside the latter, the file
    every loader reads (newer transformers also write it to ``chat_template.jinja``; folded back here)."""
    tokenizer.save_pretrained(str(directory))
    jinja = directory / "chat_template.jinja"
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if jinja.exists():
        config["chat_template"] = jinja.read_text(encoding="utf-8")
        jinja.unlink()
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
