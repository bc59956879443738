"""When a sample ends, with vLLM's rules and precedence.

After each new token: an eos id (unless ``ignore_eos``) ends it with "stop"; then one of ``stop_token_ids`` ends it
with "stop" and that id as the stop reason; then a stop string found in the newly decoded text ends it with "stop"
and the string as the reason (checked before the length cap, as vLLM's detokenizer does); then reaching
``max_tokens`` or the context length ends it with "length". The token that triggered a stop stays in the tokens.

Stop strings need text: :class:`IncrementalDetokenizer` decodes only the tail of the sequence each step and holds
back output while the last bytes do not yet form a whole character (byte-level BPE splits characters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from transformers import PreTrainedTokenizerBase

from ring_async.engines.generation.types import FinishReason, SamplingParams

# Tokens decoded again each step to let a character that spans tokens resolve (vLLM uses a similar look-back).
_LOOKBACK_TOKENS = 6
_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Text of a growing token sequence, decoded a few tokens at a time."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self._tokenizer = tokenizer
        self.tokens: list[int] = []
        self.text = ""
        self._prefix_offset = 0  # start of the window decoded each step
        self._read_offset = 0  # tokens before this are already in ``text``

    def _decode(self, tokens: Sequence[int]) -> str:
        return self._tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def add(self, token: int) -> str:
        """Append one token; returns the text it completed (empty while a character is still partial)."""
        self.tokens.append(token)
        window = self.tokens[self._prefix_offset :]
        already = self._decode(self.tokens[self._prefix_offset : self._read_offset])
        full = self._decode(window)
        if len(full) <= len(already) or full.endswith(_REPLACEMENT):
            return ""
        delta = full[len(already) :]
        self.text += delta
        self._read_offset = len(self.tokens)
        self._prefix_offset = max(0, self._read_offset - _LOOKBACK_TOKENS)
        return delta


@dataclass
class StopDecision:
    reason: FinishReason
    stop_reason: int | str | None
    text: str | None


class StopChecker:
    """Decides, token by token, whether one sample is finished."""

    def __init__(
        self,
        params: SamplingParams,
        eos_token_ids: frozenset[int],
        max_new_tokens: int,
        tokenizer: PreTrainedTokenizerBase | None,
    ):
        self._eos = frozenset() if params.ignore_eos else eos_token_ids
        self._stop_ids = frozenset(params.stop_token_ids)
        self._stop_strings = params.stop
        self._include_stop = params.include_stop_str_in_output
        self._max_new = max_new_tokens
        self._longest_stop = max((len(s) for s in params.stop), default=0)
        self.detokenizer = IncrementalDetokenizer(tokenizer) if (params.stop and tokenizer is not None) else None
        self.count = 0

    def add(self, token: int) -> StopDecision | None:
        self.count += 1
        delta = self.detokenizer.add(token) if self.detokenizer is not None else ""
        if token in self._eos:
            return StopDecision("stop", None, self._text())
        if token in self._stop_ids:
            return StopDecision("stop", token, self._text())
        if delta:
            hit = self._find_stop(delta)
            if hit is not None:
                return hit
        if self.count >= self._max_new:
            return StopDecision("length", None, self._text())
        return None

    def _text(self) -> str | None:
        return self.detokenizer.text if self.detokenizer is not None else None

    def _find_stop(self, delta: str) -> StopDecision | None:
        text = self.detokenizer.text
        # A stop string can only end inside the new text, so search from just before it.
        start = max(0, len(text) - len(delta) - self._longest_stop + 1)
        best: tuple[int, str] | None = None
        for stop in self._stop_strings:
            at = text.find(stop, start)
            if at >= 0 and (best is None or at < best[0]):
                best = (at, stop)
        if best is None:
            return None
        at, stop = best
        return StopDecision("stop", stop, text[: at + len(stop)] if self._include_stop else text[:at])
