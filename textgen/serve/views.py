"""Turn a job's updates into response bodies: OpenAI completions, chat, and the native shape.

A `View` follows one request: it gathers each choice's text (and log-probabilities, with
offsets that continue across chunks) and writes either the whole response at the end or
one chunk per choice per flush while streaming. An echoed prompt's log-probabilities are
built once per prompt and shared by the choices that echo it (n choices, one prompt run).
"""

from __future__ import annotations

import time
import uuid


def _top(entry, k: int) -> dict:
    return {char: logprob for char, logprob in entry.top[:k]}


class View:
    """One request's output in the shape of `kind`: "text" (completions), "chat" or "native"."""

    def __init__(self, kind: str, model: str, plan, checkpoint_step=None, echo: bool = False,
                 logprobs: int | None = None, include_usage: bool = False):
        prefix = {"text": "cmpl", "chat": "chatcmpl", "native": "gen"}[kind]
        self.kind, self.model, self.plan = kind, model, plan
        self.id = f"{prefix}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.echo, self.logprobs, self.include_usage = echo, logprobs, include_usage
        count = len(plan.specs)
        self.texts = [""] * count
        self.offsets = [0] * count
        self.generated = [0] * count
        self.finish = [None] * count
        self.entries: list = [[] for _ in range(count)]
        self.step = checkpoint_step
        self._echoed: dict = {}  # (prompt, id of its scores) -> its logprobs in the completions shape

    # ----------------------------------------------------------------------------- gathering

    def add(self, update) -> None:
        i = update.index
        self.texts[i] += update.text
        self.generated[i] += len(update.text)
        if update.logprobs:
            self.entries[i].extend(update.logprobs)
        if update.finished:
            self.finish[i] = update.finish_reason

    def usage(self) -> dict:
        completion = sum(self.generated)
        return {"prompt_tokens": self.plan.prompt_chars, "completion_tokens": completion,
                "total_tokens": self.plan.prompt_chars + completion}

    # ----------------------------------------------------------------------------- log-probabilities

    def _completion_logprobs(self, entries: list, start: int) -> dict:
        """OpenAI's legacy shape; a prompt's first character has no logprob (None)."""
        tokens, values, tops, offsets = [], [], [], []
        at = start
        for char, entry in entries:
            tokens.append(char)
            values.append(None if entry is None else entry.logprob)
            tops.append(None if entry is None else _top(entry, self.logprobs))
            offsets.append(at)
            at += len(char)
        return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}

    def _chat_logprobs(self, entries: list) -> dict:
        def one(char, logprob):
            return {"token": char, "logprob": logprob, "bytes": list(char.encode("utf-8"))}

        return {"content": [{**one(e.char, e.logprob), "top_logprobs": [one(c, lp) for c, lp in e.top[: self.logprobs]]}
                            for _, e in entries]}

    def _echo_logprobs(self, i: int, prime_logprobs: list) -> dict:
        """Choice i's echoed prompt in the completions logprobs shape (shared by equal prompts)."""
        prompt = self.plan.prompts[i]
        scored = prime_logprobs[i] if prime_logprobs else None
        key = (prompt, id(scored))
        if key not in self._echoed:
            entries = scored if scored else [None] * len(prompt)
            self._echoed[key] = self._completion_logprobs(list(zip(prompt, entries)), 0)
        return self._echoed[key]

    # ----------------------------------------------------------------------------- whole responses

    def response(self, prime_logprobs: list) -> dict:
        if self.kind == "chat":
            choices = [{"index": i, "message": {"role": "assistant", "content": text},
                        "logprobs": self._chat_logprobs(list(zip(text, self.entries[i])))
                        if self.logprobs is not None else None, "finish_reason": self.finish[i]}
                       for i, text in enumerate(self.texts)]
            return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                    "seed": self.plan.seed, "choices": choices, "usage": self.usage()}
        choices = []
        for i, text in enumerate(self.texts):
            start = len(self.plan.prompts[i]) if self.echo else 0
            logprobs = None
            if self.logprobs is not None:
                logprobs = self._completion_logprobs(list(zip(text, self.entries[i])), start)
                if self.echo:
                    echoed = self._echo_logprobs(i, prime_logprobs)
                    logprobs = {key: echoed[key] + logprobs[key] for key in logprobs}
            if self.echo:
                text = self.plan.prompts[i] + text
            choice = {"index": i, "text": text, "logprobs": logprobs, "finish_reason": self.finish[i]}
            if self.kind == "native":
                choice = {**choice, "seed": self.plan.specs[i].seed}
            choices.append(choice)
        if self.kind == "native":
            return {"id": self.id, "model": self.model, "checkpoint_step": self.step, "samples": choices,
                    "usage": self.usage()}
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "seed": self.plan.seed, "choices": choices, "usage": self.usage()}

    # ----------------------------------------------------------------------------- streaming

    def _chunk(self, choices: list) -> dict:
        if self.kind == "native":
            return {"id": self.id, "samples": choices}
        body = {"id": self.id, "object": "chat.completion.chunk" if self.kind == "chat" else "text_completion",
                "created": self.created, "model": self.model, "seed": self.plan.seed, "choices": choices}
        if self.include_usage:
            body["usage"] = None
        return body

    def opening(self, prime_logprobs: list) -> list[dict]:
        """Chunks before any generated text: the assistant role (chat), the prompt (echo)."""
        if self.kind == "chat":
            return [self._chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                  "finish_reason": None} for i in range(len(self.texts))])]
        if not self.echo:
            return []
        chunks = []
        for i, prompt in enumerate(self.plan.prompts):
            choice = {"index": i, "text": prompt, "logprobs": None, "finish_reason": None}
            if self.logprobs is not None:
                choice["logprobs"] = self._echo_logprobs(i, prime_logprobs)
            self.offsets[i] = len(prompt)
            chunks.append(self._chunk([choice]))
        return chunks

    def chunks(self, updates: list) -> list[dict]:
        """One chunk per choice with news in `updates` (their texts merged)."""
        merged: dict = {}
        for update in updates:
            self.add(update)
            text, entries, finish = merged.get(update.index, ("", [], None))
            merged[update.index] = (text + update.text, entries + list(update.logprobs or []),
                                    update.finish_reason if update.finished else finish)
        out = []
        for i, (text, entries, finish) in sorted(merged.items()):
            if finish == "shutdown":
                finish = None
            if not text and finish is None:
                continue
            if self.kind == "chat":
                choice = {"index": i, "delta": {"content": text} if text else {}, "logprobs": None,
                          "finish_reason": finish}
                if self.logprobs is not None and text:
                    choice["logprobs"] = self._chat_logprobs(list(zip(text, entries)))
            else:
                choice = {"index": i, "text": text, "logprobs": None, "finish_reason": finish}
                if self.logprobs is not None:
                    choice["logprobs"] = self._completion_logprobs(list(zip(text, entries)), self.offsets[i])
                if self.kind == "native":
                    choice["seed"] = self.plan.specs[i].seed
            self.offsets[i] += len(text)
            out.append(self._chunk([choice]))
        return out

    def closing(self) -> list[dict]:
        """The usage chunk (OpenAI's stream_options.include_usage; always for native)."""
        if self.kind == "native":
            return [{"id": self.id, "checkpoint_step": self.step, "usage": self.usage()}]
        if not self.include_usage:
            return []
        body = self._chunk([])
        body["usage"] = self.usage()
        return [body]
