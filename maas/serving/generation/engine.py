"""The decode loop: one thread per loaded model runs a continuous batch over a KV cache.

Between two decode steps the scheduler admits waiting requests (each prompt is prefilled alone, then its
rows join the batch) and drops finished or cancelled sequences, so a new request never waits for the batch
to drain and a client that hangs up frees its slot at the next step.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import inspect
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from maas.serving.generation.detokenize import IncrementalDetokenizer, StopStrings
from maas.serving.generation.kvcache import BatchCache, mergeable
from maas.serving.generation.loader import CausalLM
from maas.serving.generation.params import SamplingParams
from maas.serving.generation.sampling import TokenSampler, choose_tokens
from maas.serving.generation.stream import ChoiceDelta, GenerationStream

log = logging.getLogger("maas.serving.generation")

_STOP = object()


@dataclass
class _Sequence:
    stream: GenerationStream
    choice: int
    sampler: TokenSampler
    detokenizer: IncrementalDetokenizer
    stops: StopStrings
    remaining: int
    last_token: int = -1
    produced: int = 0
    done: bool = False


@dataclass
class EngineStats:
    active_sequences: int = 0
    waiting_requests: int = 0
    steps: int = 0
    tokens: int = 0
    batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=256))


class GenerationEngine:
    def __init__(self, lm: CausalLM, *, max_batch_sequences: int = 32, threads: int | None = None) -> None:
        self.lm = lm
        self.max_batch_sequences = max_batch_sequences
        self._threads = threads
        self._intake: queue.SimpleQueue[GenerationStream | object] = queue.SimpleQueue()
        self._waiting: deque[GenerationStream] = deque()
        self._batch = BatchCache()
        self._sequences: list[_Sequence] = []
        self._batchable: bool | None = None  # known after the first prefill
        parameters = inspect.signature(lm.model.forward).parameters
        self._cache_arg = "cache" if "cache" in parameters else "past_key_values"
        self.stats = EngineStats()
        self._thread = threading.Thread(target=self._run, name="maas-generation", daemon=True)
        self._thread.start()
        # A decode thread still alive when the interpreter exits aborts it (torch's thread pool is torn down
        # under it): stop it first, also when the server's shutdown did not.
        atexit.register(self.close)

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> GenerationStream:
        """Queue a request; its stream yields deltas on the caller's event loop."""
        stream = GenerationStream(asyncio.get_running_loop(), prompt_ids, params)
        self._intake.put(stream)
        return stream

    def close(self) -> None:
        if self._thread.is_alive():
            self._intake.put(_STOP)
            self._thread.join(timeout=10)
        atexit.unregister(self.close)

    # --- the engine thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        if self._threads:
            torch.set_num_threads(self._threads)
        with torch.inference_mode():
            while True:
                if not self._take_intake(block=not self._sequences and not self._waiting):
                    break
                try:
                    self._admit()
                    if self._sequences:
                        self._decode_step()
                except Exception as exc:  # a failing step fails its requests, never the engine
                    log.exception("generation step failed")
                    self._fail_all(exc)
        self._fail_all(RuntimeError("the generation engine stopped"))

    def _take_intake(self, *, block: bool) -> bool:
        """Move submitted requests to the waiting line; False once the engine is asked to stop."""
        try:
            item = self._intake.get(block=block)
            while True:
                if item is _STOP:
                    return False
                assert isinstance(item, GenerationStream)
                self._waiting.append(item)
                item = self._intake.get_nowait()
        except queue.Empty:
            pass
        finally:
            self.stats.waiting_requests = len(self._waiting)
        return True

    def _admit(self) -> None:
        while self._waiting:
            stream = self._waiting[0]
            if stream.cancelled:
                self._waiting.popleft()
                continue
            if self._sequences and (
                len(self._sequences) + stream.params.n > self.max_batch_sequences or self._batchable is False
            ):
                return
            self._waiting.popleft()
            try:
                self._prefill(stream)
            except Exception as exc:
                log.exception("prefill failed")
                stream.fail(exc)
        self.stats.waiting_requests = len(self._waiting)
        self.stats.active_sequences = len(self._sequences)

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any) -> Any:
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": mask,
            "position_ids": positions,
            self._cache_arg: cache,
            "use_cache": True,
        }
        if self.lm.accepts_logits_to_keep:
            kwargs["logits_to_keep"] = 1
        output = self.lm.model(**kwargs)
        return output

    def _prefill(self, stream: GenerationStream) -> None:
        prompt = stream.prompt_ids
        length = len(prompt)
        output = self._forward(
            torch.tensor([prompt], dtype=torch.long),
            torch.ones((1, length), dtype=torch.long),
            torch.arange(length, dtype=torch.long).unsqueeze(0),
            None,
        )
        cache = output.cache if self._cache_arg == "cache" else output.past_key_values
        if self._batchable is None:  # the first prefill
            self._batchable = mergeable(cache)
            self.lm.refresh_rss()
        logits = output.logits[:, -1, :].float()
        params = stream.params
        fresh = [self._new_sequence(stream, choice) for choice in range(params.n)]
        tokens = choose_tokens(logits.expand(params.n, -1), [s.sampler for s in fresh])
        stream.mark_first_token(time.perf_counter())
        self._batch.add(cache, length, params.n)
        self._sequences.extend(fresh)
        self._after_tokens(tokens, first=len(self._sequences) - params.n)

    def _new_sequence(self, stream: GenerationStream, choice: int) -> _Sequence:
        tokenizer = self.lm.tokenizer

        def decode(ids: Any) -> str:
            return str(tokenizer.decode(ids, skip_special_tokens=True))

        return _Sequence(
            stream=stream,
            choice=choice,
            sampler=TokenSampler(stream.params, choice),
            detokenizer=IncrementalDetokenizer(decode, stream.prompt_ids),
            stops=StopStrings(stream.params.stop),
            remaining=stream.params.max_tokens,
        )

    def _decode_step(self) -> None:
        input_ids = torch.tensor([[s.last_token] for s in self._sequences], dtype=torch.long)
        mask, positions = self._batch.step_inputs()
        output = self._forward(input_ids, mask, positions, self._batch.cache)
        logits = output.logits[:, -1, :].float()
        tokens = choose_tokens(logits, [s.sampler for s in self._sequences])
        self.stats.batch_sizes.append(len(self._sequences))
        self._after_tokens(tokens, first=0)

    def _after_tokens(self, tokens: list[int], first: int) -> None:
        """Record each row's new token (rows from ``first`` on), emit text, and retire finished rows."""
        self.stats.steps += 1
        self.stats.tokens += len(tokens)
        touched: dict[int, GenerationStream] = {}
        for sequence, token in zip(self._sequences[first:], tokens, strict=True):
            self._advance(sequence, token)
            touched[id(sequence.stream)] = sequence.stream
        keep = [i for i, s in enumerate(self._sequences) if not s.done and not s.stream.cancelled]
        if len(keep) != len(self._sequences):
            self._sequences = [self._sequences[i] for i in keep]
            self._batch.keep(keep)
        self.stats.active_sequences = len(self._sequences)
        # Published after the finished rows are retired: a caller woken by its last token sees its slot free.
        for stream in touched.values():
            stream.publish()

    def _advance(self, sequence: _Sequence, token: int) -> None:
        sequence.last_token = token
        sequence.produced += 1
        sequence.remaining -= 1
        finish: str | None = None
        if token in self.lm.eos_token_ids:
            text, finish = sequence.stops.add(sequence.detokenizer.flush()) + sequence.stops.flush(), "stop"
        else:
            text = sequence.stops.add(sequence.detokenizer.add(token))
            if sequence.stops.stopped:
                finish = "stop"
            elif sequence.remaining <= 0:
                text += sequence.stops.add(sequence.detokenizer.flush()) + sequence.stops.flush()
                finish = "length"
        # The EOS token is not part of the reply, but it was generated: usage counts it, as OpenAI does.
        sequence.stream.push(ChoiceDelta(sequence.choice, text, finish, sequence.produced, token))
        sequence.done = finish is not None

    def _fail_all(self, exc: BaseException) -> None:
        for stream in {id(s.stream): s.stream for s in self._sequences}.values():
            stream.fail(exc)
        while self._waiting:
            self._waiting.popleft().fail(exc)
        with contextlib.suppress(queue.Empty):
            while True:
                item = self._intake.get_nowait()
                if isinstance(item, GenerationStream):
                    item.fail(exc)
        self._sequences = []
        self._batch = BatchCache()
        self.stats.active_sequences = 0
        self.stats.waiting_requests = 0
