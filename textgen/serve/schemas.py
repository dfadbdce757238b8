"""Request and response bodies (Pydantic): they validate requests and document `/docs`.

One token is one character: `max_tokens`, `usage` and `logprobs` count characters.
Parameters a character model cannot honour (penalties, `logit_bias`, `best_of`, `suffix`)
are accepted only at their neutral value, so nothing is silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

from textgen.serve.settings import MAX_BAN_LENGTH, MAX_BANS, MAX_REGEX_LENGTH, MAX_STOP_LENGTH, MAX_STOPS

MAX_SEED = 2**63 - 1
MAX_LABEL_LENGTH = 1000
LABEL = ("A run trained on a table with --label-field/--label-column: write a new record of this label, as "
         "textgen sample --label (the label is read before the prompt and not returned; an unknown one is a "
         "400 listing the labels the run knows).")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _stops(value):
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else list(value)
    if len(stops) > MAX_STOPS:
        raise ValueError(f"at most {MAX_STOPS} stop strings are allowed; got {len(stops)}")
    if any(s == "" for s in stops):
        raise ValueError("a stop string must not be empty")
    longest = max((len(s) for s in stops), default=0)
    if longest > MAX_STOP_LENGTH:
        raise ValueError(f"a stop string may have at most {MAX_STOP_LENGTH} characters; the longest has {longest}")
    return stops


def _unsupported(value, name, what_to_do):
    if value:
        raise ValueError(f"{name} is not supported by a character model; {what_to_do}")
    return value


def _neutral(value, neutral, name):
    if value is not None and value != neutral:
        raise ValueError(f"{name} is not supported by a character model; leave it at {neutral!r}")
    return value


def _words(value, what: str = "a banned word"):
    if value is None:
        return []
    if any(not word for word in value):
        raise ValueError(f"{what} must not be empty")
    longest = max((len(word) for word in value), default=0)
    if longest > MAX_BAN_LENGTH:
        raise ValueError(f"{what} may have at most {MAX_BAN_LENGTH} characters; the longest has {longest}")
    return value


class Steered(_Body):
    """Steering, exact at every character: a mask over the vocabulary before each draw."""

    regex: Optional[str] = Field(None, max_length=MAX_REGEX_LENGTH, description=(
        "Extension, as vLLM's guided_regex: the generated text (in lines mode each line, prompt included) "
        "matches this regular expression in full (Python syntax; no anchors, lookarounds or backreferences). "
        "The text ends at max_tokens or once it is a complete match nothing can extend. Does not combine "
        "with stop. A pattern no text over the model's characters can match is a 400 before anything runs."))
    guided_regex: Optional[str] = Field(None, max_length=MAX_REGEX_LENGTH, description="vLLM's name for regex.")
    ban: Optional[list[str]] = Field(None, max_length=MAX_BANS, description=(
        f"Extension: up to {MAX_BANS} words (of up to {MAX_BAN_LENGTH} characters) that are never completed "
        "(their last character is masked)."))

    _ban_list = field_validator("ban")(lambda cls, v: _words(v))

    def pattern(self, prefix: str = "") -> Optional[str]:
        """`regex` or its alias `guided_regex` (given both, they must agree; `prefix` names the field)."""
        if self.regex is not None and self.guided_regex is not None and self.regex != self.guided_regex:
            from textgen.errors import ConfigError

            raise ConfigError("regex and guided_regex name one pattern: give one, or the same in both. "
                              f"Received: {prefix}guided_regex={self.guided_regex!r}")
        return self.regex if self.regex is not None else self.guided_regex


class StreamOptions(_Body):
    include_usage: bool = Field(False, description="Send a last chunk with `usage` before `data: [DONE]`.")


class Sampling(Steered):
    """What every text request shares: how to draw characters, what to keep to, and when to stop."""

    model: str = Field(description="A served run's name (see GET /v1/models).", max_length=1000)
    temperature: Optional[float] = Field(1.0, ge=0, le=2, description="0 = greedy; higher = more diverse.")
    top_p: Optional[float] = Field(1.0, gt=0, le=1, description="Nucleus sampling: keep the most likely characters up to this mass.")
    top_k: Optional[int] = Field(None, ge=1, description="Extra field: keep only the k most likely characters.")
    n: int = Field(1, ge=1, description="Choices per prompt (capped by the server's --max-n).")
    stop: Union[str, list[str], None] = Field(None, description=f"Up to {MAX_STOPS} strings of up to {MAX_STOP_LENGTH} "
                                              "characters; generation ends before the first one.")
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED, description="Choice i draws from (seed, i) only. Omitted: the server picks one and returns it.")
    stream: bool = Field(False, description="Server-sent events, ending in `data: [DONE]`.")
    stream_options: Optional[StreamOptions] = None
    user: Optional[str] = Field(None, max_length=1000, description="Accepted and ignored.")
    presence_penalty: Optional[float] = Field(None, description="Only 0 is accepted.")
    frequency_penalty: Optional[float] = Field(None, description="Only 0 is accepted.")
    logit_bias: Optional[dict[str, float]] = Field(None, description="Only an empty map is accepted.")
    label: Optional[StrictStr] = Field(None, max_length=MAX_LABEL_LENGTH, description="Extension: " + LABEL)

    _stop_list = field_validator("stop")(lambda cls, v: _stops(v))

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, v, info):
        return _neutral(v, 0, info.field_name)

    _no_bias = field_validator("logit_bias")(lambda cls, v: _unsupported(v, "logit_bias", "leave it empty"))


class CompletionRequest(Sampling):
    """POST /v1/completions."""

    prompt: Union[str, list[str]] = Field("", description="Text to continue, or a list of texts (choices for each).")
    max_tokens: Optional[int] = Field(16, ge=1, description="Characters to generate per choice (capped by --max-length).")
    logprobs: Optional[int] = Field(None, ge=0, le=5, description="Each character's log-probability and this many top alternatives.")
    echo: bool = Field(False, description="Return the prompt before the completion (with its log-probabilities when asked).")
    best_of: Optional[int] = Field(None, description="Only 1 (or equal to n) is accepted.")
    suffix: Optional[str] = Field(None, description="Not supported; must be null.")

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("give at least one prompt")
        return v

    _no_suffix = field_validator("suffix")(lambda cls, v: _unsupported(v, "suffix", "leave it null"))


class ContentPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[ContentPart], None] = None
    name: Optional[str] = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(Sampling):
    """POST /v1/chat/completions: the messages go through the server's chat template."""

    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far.")
    max_tokens: Optional[int] = Field(None, ge=1, description="Characters to generate (default 16, capped by --max-length).")
    max_completion_tokens: Optional[int] = Field(None, ge=1, description="Same as max_tokens.")
    logprobs: bool = Field(False, description="Return each character's log-probability.")
    top_logprobs: Optional[int] = Field(None, ge=0, le=5, description="With logprobs: this many top alternatives.")


class SampleSpec(Steered):
    """One choice of a native request, with its own settings (in lines mode: every line's)."""

    temperature: float = Field(1.0, ge=0, le=10)
    top_k: Optional[int] = Field(None, ge=1)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    max_tokens: int = Field(16, ge=1)
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED, description="Default: the request's seed.")
    label: Optional[StrictStr] = Field(None, max_length=MAX_LABEL_LENGTH, description="Default: the request's label.")

    _stop_list = field_validator("stop")(lambda cls, v: _stops(v))


class NativeRequest(_Body):
    """POST /v1/textgen/generate: what the OpenAI API cannot say, e.g. per-choice temperatures."""

    model: str = Field(max_length=1000)
    prompt: str = ""
    samples: Optional[list[SampleSpec]] = Field(None, min_length=1, description=(
        "One entry per choice; choice i draws from (its seed, i). Required, except in lines mode, where at "
        "most one entry gives every line's settings."))
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED)
    label: Optional[StrictStr] = Field(None, max_length=MAX_LABEL_LENGTH, description=LABEL + " A sample's own "
                                       "label takes its place. Not in lines mode.")
    logprobs: Optional[int] = Field(None, ge=0, le=5)
    stream: bool = False
    lines: Optional[StrictInt] = Field(None, ge=1, description=(
        "Lines mode, for a run trained with --lines: this many complete lines (an integer, at most --max-n), "
        "each begun from the start of a line with the prompt (no line end in it) as its start; max_tokens "
        "caps a line. Line i draws from (seed, i): the lines of textgen sample --lines for the same seed. "
        "Streamed: each round's kept lines as soon as they are judged, then `lines` and `usage`. Fewer kept "
        "than asked: 200 with the kept lines and `lines.report`; none kept: 422 (streamed: an error event)."))
    novel: StrictBool = Field(False, description="Lines mode: drop lines of the training text (whitespace stripped).")
    unique: StrictBool = Field(False, description="Lines mode: drop repeated lines (whitespace stripped).")
    must_include: Optional[list[str]] = Field(None, max_length=MAX_BANS, description=(
        "Lines mode: drop lines without every one of these words (counted as missing_word); lines are "
        "drawn in rounds until `lines` are kept, as textgen sample --lines --must-include."))

    _word_list = field_validator("must_include")(lambda cls, v: _words(v, "a must_include word"))


# ----------------------------------------------------------------------------- responses


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[Optional[float]]
    top_logprobs: list[Optional[dict[str, float]]]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: Optional[CompletionLogprobs] = None
    finish_reason: Optional[str] = Field(description="length or stop")


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    seed: int = Field(description="The seed used (replay the request with it).")
    choices: list[CompletionChoice]
    usage: Usage


class ChatChoice(BaseModel):
    index: int
    message: dict[str, Any]
    logprobs: Optional[dict[str, Any]] = None
    finish_reason: Optional[str]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    seed: int
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "textgen"
    vocab_size: int
    parameters: Optional[int]
    checkpoint_step: int
    validation_bpc: Optional[float]
    layers: int
    units: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class NativeSample(BaseModel):
    index: int
    text: str
    finish_reason: Optional[str]
    seed: int
    logprobs: Optional[CompletionLogprobs] = None


class LinesReport(BaseModel):
    kept: int
    sampled: int = Field(description="Lines drawn in all (kept and dropped).")
    dropped: dict[str, int] = Field(description="Dropped lines by reason: too_long, empty, in_training, repeat, "
                                    "missing_word (without a must_include word).")
    report: str = Field(description="The same in words (textgen sample's stderr line).")


class NativeResponse(BaseModel):
    id: str
    model: str
    checkpoint_step: int
    samples: list[NativeSample]
    usage: Usage
    lines: Optional[LinesReport] = Field(None, description="Lines mode: what was kept and why the rest was dropped.")


class ErrorBody(BaseModel):
    message: str
    type: str
    param: Optional[str]
    code: Optional[str]


class ErrorResponse(BaseModel):
    error: ErrorBody
