"""Token ids to text, one token at a time, without splitting a character or a stop string.

Byte-level BPE models emit one multi-byte character (an emoji, an accented letter) over several tokens;
decoding each token alone gives U+FFFD. We decode a short window that ends at the new token and emit only
text that is complete (the technique of TGI and vLLM). A few prompt tokens lead the window so tokenizers
that drop a word's leading space at the start of a decode (SentencePiece) get it right.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

_LEAD_TOKENS = 4

Decode = Callable[[Sequence[int]], str]


class IncrementalDetokenizer:
    def __init__(self, decode: Decode, prompt_ids: Sequence[int]) -> None:
        self._decode = decode
        self._ids: list[int] = list(prompt_ids[-_LEAD_TOKENS:])
        self._prefix = 0
        self._read = len(self._ids)

    def add(self, token_id: int) -> str:
        """The new text this token completes ("" while a character is still partial)."""
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """Whatever is left at the end, even a partial character (as U+FFFD, like a full decode)."""
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return after[len(before) :] if after.startswith(before) else ""


class StopStrings:
    """Holds back text that may be the start of a stop string; cuts the text at the first stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._longest = max((len(s) for s in self._stops), default=0)
        self._text = ""
        self._emitted = 0
        self.stopped = False

    def add(self, delta: str) -> str:
        """Text safe to emit now; after a stop string is found, ``stopped`` is set and the rest is dropped."""
        if self.stopped or not delta:
            return ""
        if not self._stops:
            return delta
        self._text += delta
        start = max(0, self._emitted - self._longest + 1)
        cuts = [i for i in (self._text.find(s, start) for s in self._stops) if i >= 0]
        if cuts:
            self.stopped = True
            return self._take(min(cuts))
        return self._take(len(self._text) - self._held_back())

    def flush(self) -> str:
        return "" if self.stopped else self._take(len(self._text))

    def _held_back(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of a stop string."""
        for size in range(min(self._longest - 1, len(self._text)), 0, -1):
            tail = self._text[-size:]
            if any(stop.startswith(tail) for stop in self._stops):
                return size
        return 0

    def _take(self, end: int) -> str:
        end = max(end, self._emitted)
        piece = self._text[self._emitted : end]
        self._emitted = end
        return piece
