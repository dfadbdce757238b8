"""From a validated request body to stream specs: the server's limits, the vocabulary, the seed.

Pydantic has checked types and ranges; here come the checks that need the server's settings
or the model (`--max-length`, `--max-n`, `--max-prompt`, prompt characters x choices against
`max_prompt_total`, characters outside the vocabulary, a `regex` or `ban` no text can keep to,
a `label` the run does not have). Every failure is a 400 naming the parameter and the received value.

Steering (`regex` / `guided_regex`, `ban`) is compiled here, before anything is submitted, into
a `constraints.Steering` shared by the choices that ask for it (the last few compiled are
kept): in completions the generated text must match, in lines mode each line, prompt
included (the text a client gets back matches). Compiling is CPU work: routes plan a steered
request off the event loop (`steers`).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from textgen.errors import ConfigError, TextgenError
from textgen.serve.envelopes import APIError


@dataclass
class Plan:
    """What a route submits: one spec per choice, and what the response needs to know."""

    specs: list
    seed: int
    prompts: list          # the prompt text of each choice (echo, usage)
    prompt_chars: int      # characters of distinct prompts, each with its label's lead (usage.prompt_tokens)


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


def steers(body) -> bool:
    """Whether `body` asks for steering anywhere (then it is planned off the event loop)."""
    parts = [body, *(getattr(body, "samples", None) or [])]
    return any(getattr(p, "regex", None) is not None or getattr(p, "guided_regex", None) is not None
               or getattr(p, "ban", None) for p in parts) or getattr(body, "lines", None) is not None


@functools.lru_cache(maxsize=32)
def _compiled(chars: tuple, regex, ban: tuple, end, includes_prime: bool):
    from textgen.generation.constraints import steering

    return steering(chars, regex, ban, end=end, includes_prime=includes_prime)


_RECEIVED = re.compile(r"Received: ([A-Za-z_][A-Za-z0-9_.\[\]]*)=")


def _steering_error(error: ConfigError, prefix: str, field: str) -> APIError:
    """A constraint the library refused, in the server's words: fields, not options. `field`:
    where the request gave its pattern (regex or guided_regex), else ban."""
    message = str(error).replace("--regex", field).replace("--ban", "ban")
    message = message.replace("The prime", "The prompt").replace("the prime", "the prompt")
    message = message.replace("Received: length=", "Received: max_tokens=").replace("Received: regex=", f"Received: {field}=")
    found = _RECEIVED.search(message)
    name = found.group(1).removeprefix(prefix) if found else ("prompt" if "prompt" in message else field)
    return APIError(400, message, param=name if name == "prompt" else prefix + name, code="invalid_value")


def steering_for(served, steer, prompt: str, length: int, stops, prefix: str = "", lines: bool = False):
    """The Steering of one choice's `regex` / `guided_regex` / `ban` (None without them), checked
    against its prompt and length; `lines`: per line, the prompt beginning each line."""
    from textgen.generation.lines import BOUNDARY

    try:
        regex = steer.pattern(prefix)
        ban = tuple(steer.ban or ())
        if regex is None and not ban:
            return None
        if regex is not None and stops:
            raise _bad(prefix + "stop", "stop does not combine with regex: the pattern decides where a text ends.",
                       list(stops))
        chars = tuple(served.info["vocab"])
        steered = _compiled(chars, regex, ban, BOUNDARY if lines else None, lines)
        index = {c: i for i, c in enumerate(chars)}
        steered.cursor([index[c] for c in (BOUNDARY + prompt if lines else prompt)], length)
    except ConfigError as e:
        field = "regex" if steer.regex is not None else "guided_regex" if steer.guided_regex is not None else "ban"
        raise _steering_error(e, prefix, field) from None
    return steered


def label_ids(served, label: str | None, param: str = "label") -> tuple:
    """The ids fed before a choice's prompt for `label` (`tables.label_lead`, as textgen sample
    --label; () without one): a run without labels, or a label it does not know, is a 400 in the
    CLI's words (the unknown label's lists the labels the run knows)."""
    from textgen.tables import label_lead

    try:
        return tuple(label_lead(served.info, served.info["vocab"], label, option="label", received=param))
    except ConfigError as e:
        raise APIError(400, str(e), param=param, code="invalid_value") from None


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
    steered = steering_for(served, body, "", max_tokens, body.stop or [])
    lead = label_ids(served, getattr(body, "label", None))
    seed = new_seed() if body.seed is None else body.seed
    top_p = None if body.top_p is None or body.top_p >= 1 else body.top_p
    temperature = 1.0 if body.temperature is None else body.temperature
    specs, texts = [], []
    for prompt in prompts:
        for _ in range(body.n):
            specs.append(StreamSpec(prime=prompt, length=max_tokens, temperature=temperature, top_k=body.top_k,
                                    top_p=top_p, stops=list(body.stop or []), seed=seed, index=len(specs),
                                    logprobs=logprobs, prime_logprobs=bool(echo and logprobs is not None),
                                    steering=steered, lead=lead))
            texts.append(prompt)
    for spec in specs:
        spec.validate()
    return Plan(specs, seed, texts, sum(len(lead) + len(p) for p in dict.fromkeys(prompts)))


def plan_native(body, served, settings) -> Plan:
    """Specs for the native endpoint: each sample its own temperature, length, stops and seed."""
    from textgen.generation.session import StreamSpec

    if body.samples is None:
        raise APIError(400, "Missing required parameter: 'samples' (it may be left out only with lines).",
                       param="samples", code="missing_required_parameter")
    for name in ("novel", "unique", "must_include"):
        if getattr(body, name):
            raise _bad(name, f"{name} picks among sampled lines: give lines too.", getattr(body, name))
    check_choices(len(body.samples), settings, param="samples")
    check_prompt(body.prompt, served, settings)
    check_prompt_total([body.prompt] * len(body.samples), settings)
    seed = new_seed() if body.seed is None else body.seed
    specs, leads = [], {None: label_ids(served, body.label)}
    for index, sample in enumerate(body.samples):
        check_length(sample.max_tokens, settings, param=f"samples[{index}].max_tokens")
        steered = steering_for(served, sample, body.prompt, sample.max_tokens, sample.stop or [], f"samples[{index}].")
        if sample.label not in leads:
            leads[sample.label] = label_ids(served, sample.label, f"samples[{index}].label")
        specs.append(StreamSpec(prime=body.prompt, length=sample.max_tokens, temperature=sample.temperature,
                                top_k=sample.top_k, top_p=sample.top_p, stops=list(sample.stop or []),
                                seed=seed if sample.seed is None else sample.seed, index=index,
                                logprobs=body.logprobs, steering=steered, lead=leads[sample.label]).validate())
    read = sum(len(lead) + len(body.prompt) for lead in dict.fromkeys(spec.lead for spec in specs))
    return Plan(specs, seed, [body.prompt] * len(specs), read)


@dataclass
class LinesPlan:
    """Lines mode of the native endpoint: who picks the lines, and every line's settings."""

    picker: object  # textgen.generation.lines.LinePicker
    sample: object  # the SampleSpec of every line
    seed: int


def plan_lines(body, served, settings) -> LinesPlan:
    """`lines` complete lines: the checks of textgen sample --lines, as 400s naming the field."""
    from textgen.generation.lines import BOUNDARY, LinePicker, check_lines_run, training_lines
    from textgen.generation.writers import check_words
    from textgen.serve.schemas import SampleSpec

    for name, given in (("logprobs", body.logprobs is not None), ("samples", len(body.samples or []) > 1)):
        if given:
            received = f"{len(body.samples)} entries" if name == "samples" else getattr(body, name)
            raise APIError(400, "Lines mode takes one entry of samples at most (every line's settings) and no "
                           f"logprobs. Received: {name}={received}", param=name, code="invalid_value")
    sample = body.samples[0] if body.samples else SampleSpec()
    prefix = "samples[0]." if body.samples else ""
    if body.label is not None or sample.label is not None:
        name = "label" if body.label is not None else prefix + "label"
        raise _bad(name, "label writes records, lines mode lines: give one of them.",
                   body.label if body.label is not None else sample.label)
    if sample.stop:
        raise _bad(prefix + "stop", "Lines mode ends each line at its line end: leave stop out.", sample.stop)
    check_choices(body.lines, settings, param="lines")
    check_prompt(body.prompt, served, settings)
    check_prompt_total([body.prompt] * body.lines, settings)
    check_length(sample.max_tokens, settings, param=prefix + "max_tokens")
    try:
        check_lines_run(served.info, "")
    except ConfigError as e:
        raise APIError(400, str(e).replace("--lines needs", "lines needs"), param="lines",
                       code="invalid_value") from None
    if BOUNDARY in body.prompt:
        raise _bad("prompt", "In lines mode the prompt starts every line, so it cannot hold a line end.", body.prompt)
    steered = steering_for(served, sample, body.prompt, sample.max_tokens, (), prefix, lines=True)
    seen = None
    if body.novel:
        try:
            seen = training_lines(served.info)
        except TextgenError as e:
            raise APIError(400, str(e).replace("--novel", "novel"), param="novel", code="invalid_value") from None
    try:
        words = check_words(body.must_include or [], served.info["vocab"], body.prompt, sample.max_tokens, 1,
                            steered, lines=True)
    except ConfigError as e:
        message = str(e).replace("--must-include", "must_include").replace("--length", prefix + "max_tokens")
        message = message.replace("--regex", "regex").replace("--lines", "lines mode")
        raise APIError(400, message, param="must_include", code="invalid_value") from None
    picker = LinePicker(body.prompt, body.lines, seen, body.unique, steered, words)
    seed = new_seed() if body.seed is None else body.seed
    if sample.seed is not None:
        seed = sample.seed
    return LinesPlan(picker, sample, seed)
