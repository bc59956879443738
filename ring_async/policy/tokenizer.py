"""The embedded tokenizer: byte-level BPE trained offline, with `tokenizers`, on the synthetic task corpus.

Byte-level means every string round-trips exactly (any byte is a token), whatever a user or the policy writes.
Each digit is its own piece (an optional leading space may join the first digit), as in the Qwen/Llama tokenizers:
arithmetic is learnable only if numbers are spelled digit by digit the same way everywhere. Merges are learnt on the
task prompts and teacher responses, so the fixed instruction and Python keywords cost few tokens.

Special tokens follow the Qwen chat convention, so vLLM and `apply_chat_template` treat the folder like any Qwen
checkpoint: ``<|im_start|>``/``<|im_end|>`` delimit turns (``<|im_end|>`` is the end of a response, i.e. eos),
``<|endoftext|>`` pads. ``<think>`` and ``</think>`` are single, non-special tokens: they stay in decoded text, where
the verifiers and the reader expect them.
"""

from __future__ import annotations

import random
from typing import Iterable, Iterator

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from ring_async.tasks.code_tasks import CODE_LEVELS, code_task
from ring_async.tasks.math_tasks import MATH_LEVELS, math_task

PAD = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
THINK = "<think>"
THINK_END = "</think>"
SPECIAL_TOKENS = (PAD, IM_START, IM_END)
REASONING_TOKENS = (THINK, THINK_END)

# Pieces before BPE: a word with its leading space, one digit (optionally after a space), a run of punctuation with
# its leading space, line breaks, and runs of spaces (indentation stays one piece).
PIECES = r" ?\p{L}+| ?\p{N}| ?[^\s\p{L}\p{N}]+|\n+| +(?! )| +"

# The prompt template (Jinja, Qwen chat format). The generation prompt opens the assistant turn; the policy writes
# "<think>...</think>" and the answer, then <|im_end|>.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def tokenizer_corpus(samples_per_level: int = 2000, seed: int = 0) -> Iterator[str]:
    """Task text of every difficulty level, generated with a fixed seed (the tokenizer must not depend on run.seed:
    policies of different runs share it)."""
    rng = random.Random(f"tokenizer-corpus:{seed}")
    for level in MATH_LEVELS:
        for _ in range(samples_per_level):
            task = math_task(rng, level, linear_fraction=0.3)
            yield task.prompt
            yield task.response or ""
    for level in CODE_LEVELS:
        for _ in range(samples_per_level):
            task = code_task(rng, level)
            yield task.prompt
            yield task.response or ""
    yield "\n".join(f"{IM_START}{role}\n" for role in ("system", "user", "assistant"))


def build_tokenizer(vocab_size: int, corpus: Iterable[str] | None = None, model_max_length: int = 2048) -> PreTrainedTokenizerFast:
    """Train the byte-level BPE and wrap it as a transformers fast tokenizer with the chat template."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PIECES), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(REASONING_TOKENS),
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )

    def without_reasoning_tags(texts: Iterable[str]) -> Iterator[str]:
        # They become single added tokens below; merges spent on their letters would be wasted.
        for text in texts:
            for tag in REASONING_TOKENS:
                text = text.replace(tag, "")
            yield text

    tokenizer.train_from_iterator(without_reasoning_tags(corpus if corpus is not None else tokenizer_corpus()), trainer)
    tokenizer.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in REASONING_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=IM_END,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=model_max_length,
        padding_side="left",  # generation batches prompts; the SFT collator pads on its own
    )


def format_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
    """The text the policy is conditioned on for a task prompt: the chat template's user turn and the opened
    assistant turn; a checkpoint without a chat template sees the raw prompt and a newline."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
    return prompt + "\n"


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Token ids of :func:`format_prompt`: what SFT trains on and what generators must feed the policy."""
    return tokenizer.encode(format_prompt(tokenizer, prompt), add_special_tokens=False)


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids that end a response: eos, and the end-of-turn marker when the tokenizer has one."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for token in (IM_END, PAD):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id >= 0:
            ids.add(token_id)
    return sorted(ids)
