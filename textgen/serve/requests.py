"""From a validated request body to stream specs: the server's limits, the vocabulary, the seed.

Pydantic has checked types and ranges; here come the checks that need the server's settings
or the model (`--max-length`, `--max-n`, `--max-prompt`, prompt characters x choices against
`max_prompt_total`, characters outside the vocabulary). Every failure is a 400 naming the
parameter and the received value.
"""

from __future__ import annotations

from dataclasses import dataclass

from textgen.serve.envelopes import APIError


@dataclass
class Plan:
    """What a route submits: one spec per choice, and what the response needs to know."""

    specs: list
    seed: int
    prompts: list          # the prompt text of each choice (echo, usage)
    prompt_chars: int      # characters of distinct prompts (usage.prompt_tokens)


def _bad(param: str, message: str, received) -> APIError:
    text = repr(received)
    if len(text) > 120:
        text = text[:117] + "..."
    return APIError(400, f"{message} Received: {param}={text}", param=param, code="invalid_value")


def check_prompt(prompt: str, served, settings, param: str = "prompt") -> None:
    if len(prompt) > settings.max_prompt:
        raise _bad(param, f"The prompt may have at most {settings.max_prompt} characters (--max-prompt); "
                   f"it has {len(prompt)}.", prompt)
    missing = sorted({c for c in prompt if c not in served.chars})
    if missing:
        shown = ", ".join(repr(c) for c in missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise _bad(param, f"The prompt has characters outside the vocabulary of model {served.name!r}: {shown}.", prompt)


def check_prompt_total(prompts: list[str], settings, param: str = "prompt") -> None:
    """`prompts`: the prompt of every choice. Each choice counts its prompt's characters: an echoed
    prompt is written once per choice, whatever sharing saves on the engine."""
    total = sum(len(p) for p in prompts)
    if total > settings.max_prompt_total:
        raise _bad(param, f"A request's prompt characters times its choices may total at most "
                   f"{settings.max_prompt_total} (max_prompt_total); this one has {total} over {len(prompts)} "
                   "choices.", prompts[0] if len(set(prompts)) == 1 else prompts)


def check_length(value: int, settings, param: str = "max_tokens") -> int:
    if value > settings.max_length:
        raise _bad(param, f"{param} may be at most {settings.max_length} characters (--max-length).", value)
    return value


def check_choices(count: int, settings, param: str = "n") -> None:
    if count > settings.max_n:
        raise _bad(param, f"A request may ask for at most {settings.max_n} choices in all (--max-n; "
                   "prompts x n).", count)


def new_seed() -> int:
    from textgen.generation.session import random_seed

    return random_seed()


def plan_completion(body, served, settings, prompts: list[str], max_tokens: int, logprobs: int | None,
                    echo: bool = False) -> Plan:
    """Specs for OpenAI completions (and chat, whose one prompt is the rendered template)."""
    from textgen.generation.session import StreamSpec

    if getattr(body, "best_of", None) not in (None, 1, body.n):
        raise _bad("best_of", "best_of is not supported by a character model (only 1 or equal to n).", body.best_of)
    check_choices(len(prompts) * body.n, settings)
    check_length(max_tokens, settings)
    for prompt in dict.fromkeys(prompts):
        check_prompt(prompt, served, settings)
    check_prompt_total([p for p in prompts for _ in range(body.n)], settings)
    seed = new_seed() if body.seed is None else body.seed
    top_p = None if body.top_p is None or body.top_p >= 1 else body.top_p
    temperature = 1.0 if body.temperature is None else body.temperature
    specs, texts = [], []
    for prompt in prompts:
        for _ in range(body.n):
            specs.append(StreamSpec(prime=prompt, length=max_tokens, temperature=temperature, top_k=body.top_k,
                                    top_p=top_p, stops=list(body.stop or []), seed=seed, index=len(specs),
                                    logprobs=logprobs, prime_logprobs=bool(echo and logprobs is not None)))
            texts.append(prompt)
    for spec in specs:
        spec.validate()
    return Plan(specs, seed, texts, sum(len(p) for p in dict.fromkeys(prompts)))


def plan_native(body, served, settings) -> Plan:
    """Specs for the native endpoint: each sample its own temperature, length, stops and seed."""
    from textgen.generation.session import StreamSpec

    check_choices(len(body.samples), settings, param="samples")
    check_prompt(body.prompt, served, settings)
    check_prompt_total([body.prompt] * len(body.samples), settings)
    seed = new_seed() if body.seed is None else body.seed
    specs = []
    for index, sample in enumerate(body.samples):
        check_length(sample.max_tokens, settings, param=f"samples[{index}].max_tokens")
        specs.append(StreamSpec(prime=body.prompt, length=sample.max_tokens, temperature=sample.temperature,
                                top_k=sample.top_k, top_p=sample.top_p, stops=list(sample.stop or []),
                                seed=seed if sample.seed is None else sample.seed, index=index,
                                logprobs=body.logprobs).validate())
    return Plan(specs, seed, [body.prompt] * len(specs), len(body.prompt))
