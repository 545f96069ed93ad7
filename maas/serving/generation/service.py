"""Causal-LM serving: each model version loaded once per process (whichever tenants call it), one engine each.

torch and transformers are imported only here, when the first causal-lm request arrives (``_load``): the API
process serves every other family without them.

A tenant's own chat template is a program: it renders in a worker process with a time budget
(:mod:`~maas.serving.generation.template_worker`, ``GenerationService.templates``). The platform's templates,
published by the admin, render in this process (``chat_prompt``): about 0.1 ms for a chat turn with SmolLM2's.

Prompt bounds are checked before anything is queued: a prompt that does not fit the model's context is
**rejected** (400 ``context_length_exceeded``), never truncated, since a silently cut conversation gets a
reply to something the caller did not send; ``max_tokens`` may not reach past the context either.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from maas.errors import InvalidInput
from maas.registry.catalog import ResolvedModel, materialize
from maas.serving.generation.params import DEFAULT_MAX_TOKENS, SamplingParams
from maas.serving.generation.template_worker import ChatTemplate, ChatTemplateFailed, TemplateWorkers
from maas.singleflight import SingleFlight
from maas.storage import ArtifactStore

if TYPE_CHECKING:
    from maas.serving.generation.engine import GenerationEngine
    from maas.serving.generation.loader import CausalLM
    from maas.serving.generation.stream import GenerationStream


class PromptTooLong(ValueError):
    """The prompt (or prompt + max_tokens) does not fit the model's context."""

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message)
        self.param = param


class NoChatTemplate(ValueError):
    pass


@dataclass
class LoadedGenerator:
    """One loaded model version, shared by every caller of the same files (tenants who imported the same
    weights, or the platform's): ``name`` is whoever loaded it first, so answers name the caller's
    ``model_name`` instead, never another tenant's name for it."""

    name: str
    lm: CausalLM
    engine: GenerationEngine
    files_key: str = ""  # the digest of its files: what tells apart two loaded models of the same name
    _template: ChatTemplate | None = field(default=None, repr=False)
    # The most characters one token stands for: a text longer than this times the context cannot fit, and is
    # refused without tokenizing it (2.5 MB of chat took 15 s of CPU to tokenize only to be refused).
    longest_token_chars: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.longest_token_chars = max((len(token) for token in self.lm.tokenizer.get_vocab()), default=1)

    @property
    def context_length(self) -> int:
        return self.lm.context_length

    def chat_template(self, model_name: str) -> ChatTemplate:
        """The model's chat template with the variables ``apply_chat_template`` renders it with (its special
        tokens), for a worker process to render (:meth:`GenerationService.render_chat`)."""
        if not self.lm.has_chat_template:
            raise NoChatTemplate(f"model '{model_name}' has no chat template; use /v1/completions with a plain prompt")
        if self._template is None:
            tokenizer = self.lm.tokenizer
            try:
                source = tokenizer.get_chat_template()
            except ValueError as exc:  # several named templates and none called 'default'
                raise ChatTemplateFailed(f"the chat template of model '{model_name}' cannot be chosen: {exc}") from exc
            self._template = ChatTemplate(str(source), dict(tokenizer.special_tokens_map))
        return self._template

    def refuse_past_context(self, text: str, *, param: str, model_name: str) -> None:
        """PromptTooLong, without tokenizing, for a text more tokens long than the context whatever its tokens."""
        if len(text) > self.context_length * self.longest_token_chars:
            raise PromptTooLong(
                f"the prompt is {len(text):,} characters, more than the {self.context_length} tokens of model "
                f"'{model_name}' can hold (none of its tokens is longer than {self.longest_token_chars} "
                "characters): shorten the prompt (it is not truncated)",
                param=param,
            )

    def encode_rendered(self, text: str, *, model_name: str) -> list[int]:
        """Token ids of a rendered conversation: the template already wrote the special tokens (BOS, role
        markers), so none are added."""
        self.refuse_past_context(text, param="messages", model_name=model_name)
        ids: list[int] = self.lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def chat_prompt(self, messages: list[dict[str, Any]], model_name: str) -> list[int]:
        """Token ids of the conversation rendered in this process by the model's own chat template: for the
        platform's models only (a tenant's template renders in a worker, see :meth:`GenerationService.render_chat`)."""
        if not self.lm.has_chat_template:
            raise NoChatTemplate(f"model '{model_name}' has no chat template; use /v1/completions with a plain prompt")
        try:
            text = str(self.lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        except Exception as exc:
            # A template is the model's own Jinja program: any error it raises (jinja2's TemplateError from
            # ``raise_exception`` or the sandbox, a TypeError of a template bug) is about this conversation or
            # this model, not the server: it was a 500.
            raise ChatTemplateFailed(
                f"the chat template of model '{model_name}' could not render this conversation: {exc}"
            ) from exc
        return self.encode_rendered(text, model_name=model_name)

    def text_prompt(self, prompt: str | Sequence[int], *, model_name: str) -> list[int]:
        if isinstance(prompt, str):
            self.refuse_past_context(prompt, param="prompt", model_name=model_name)
            ids: list[int] = self.lm.tokenizer(prompt)["input_ids"]
            return ids
        return list(prompt)

    @property
    def vocab_size(self) -> int:
        return len(self.lm.tokenizer)

    def bounded_max_tokens(
        self, prompt_tokens: int, max_tokens: int | None, *, prompt_param: str, model_name: str
    ) -> int:
        context = self.context_length
        if prompt_tokens >= context:
            raise PromptTooLong(
                f"the prompt is {prompt_tokens} tokens; model '{model_name}' has a context of {context} tokens "
                "(prompt + reply): shorten the prompt (it is not truncated)",
                param=prompt_param,
            )
        room = context - prompt_tokens
        if max_tokens is None:
            return min(room, DEFAULT_MAX_TOKENS)
        if max_tokens > room:
            raise PromptTooLong(
                f"max_tokens is {max_tokens} but the prompt already uses {prompt_tokens} of the {context} tokens of "
                f"model '{model_name}': ask for at most {room}",
                param="max_tokens",
            )
        return max_tokens

    def generate(self, prompt_ids: list[int], params: SamplingParams) -> GenerationStream:
        return self.engine.submit(prompt_ids, params)


def _files_key(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()


class GenerationService:
    def __init__(
        self,
        store: ArtifactStore,
        cache_dir: Path,
        *,
        max_batch_sequences: int = 32,
        threads: int | None = None,
        template_workers: int = 2,
        template_budget_s: float = 2.0,
    ) -> None:
        # No process starts here: the first tenant's template to render starts the workers.
        self.templates = TemplateWorkers(workers=template_workers, budget_s=template_budget_s)
        self._store = store
        self._cache_dir = cache_dir
        self._max_batch_sequences = max_batch_sequences
        self._threads = threads
        self._models: dict[str, LoadedGenerator] = {}
        self._loads: SingleFlight[LoadedGenerator] = SingleFlight()
        self._unloadable: dict[str, str] = {}  # files key -> why they do not load

    async def get(self, resolved: ResolvedModel) -> LoadedGenerator:
        """The loaded model for a version's files; the first call loads it (concurrent first calls share it)."""
        key = _files_key(resolved.files)
        loaded = self._models.get(key)
        if loaded is not None:
            return loaded
        refused = self._unloadable.get(key)
        if refused is not None:
            raise InvalidInput(refused)

        async def load() -> LoadedGenerator:
            try:
                model = await asyncio.to_thread(self._load, resolved)
            except InvalidInput as exc:
                # Files are content-addressed: files that do not load now never will. Remembered, so each call
                # to a broken model does not read it again and retry the load under the process-wide load lock.
                self._unloadable[key] = exc.detail
                raise
            self._models[key] = model
            return model

        return await self._loads.run(key, load)

    def _load(self, resolved: ResolvedModel) -> LoadedGenerator:
        # Imported here, not at the top: these pull in torch and transformers (seconds, ~1 GB), which the API
        # process needs only once someone calls a causal-lm.
        from maas.serving.generation.engine import GenerationEngine
        from maas.serving.generation.loader import load_causal_lm

        directory = materialize(self._store, resolved.files, self._cache_dir)
        lm = load_causal_lm(directory)
        engine = GenerationEngine(lm, max_batch_sequences=self._max_batch_sequences, threads=self._threads)
        return LoadedGenerator(name=resolved.model_name, lm=lm, engine=engine, files_key=_files_key(resolved.files))

    async def render_chat(
        self, model: LoadedGenerator, messages: list[dict[str, Any]], *, model_name: str, tenant: str
    ) -> str:
        """The conversation rendered by the model's chat template in a worker process, within the budget.

        Raises NoChatTemplate, ChatTemplateFailed, or ChatTemplateTimedOut (the render was stopped). Cancelling
        the call (the client left) stops the render too."""
        template = model.chat_template(model_name)
        try:
            return await self.templates.render(template, messages, tenant=tenant)
        except ChatTemplateFailed as exc:
            raise ChatTemplateFailed(
                f"the chat template of model '{model_name}' could not render this conversation: {exc}"
            ) from exc

    def loaded(self) -> list[LoadedGenerator]:
        return list(self._models.values())

    def close(self) -> None:
        """Blocking (the engines' threads are joined): called in a thread at shutdown."""
        self.templates.kill_all()
        for model in self._models.values():
            model.engine.close()
        self._models.clear()


class GenerationCollector(Collector):
    """Engine gauges for /metrics: sequences decoding now, requests waiting, and each model's RSS."""

    def __init__(self, service: GenerationService) -> None:
        self._service = service

    def collect(self) -> Iterator[GaugeMetricFamily]:
        # Two loaded models may share a name (a tenant's model shadowing the platform's, two tenants' own):
        # ``files`` keeps their series apart, where one label gave duplicate series Prometheus drops.
        labels = ["model", "files"]
        active = GaugeMetricFamily("maas_generation_active_sequences", "Sequences in the decode batch", labels=labels)
        waiting = GaugeMetricFamily("maas_generation_waiting_requests", "Requests waiting to join", labels=labels)
        rss = GaugeMetricFamily("maas_generation_model_rss_bytes", "Resident memory the model added", labels=labels)
        for model in self._service.loaded():
            values = [model.name, model.files_key[:12]]
            active.add_metric(values, model.engine.stats.active_sequences)
            waiting.add_metric(values, model.engine.stats.waiting_requests)
            rss.add_metric(values, model.lm.rss_bytes)
        yield active
        yield waiting
        yield rss
