"""What a server is told at start: the runs it serves, where it listens, its limits.

One frozen `Settings` object is built by the CLI (or a test) and passed to `create_app`;
nothing in the server reads options from anywhere else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from textgen.errors import ConfigError, positive_int, positive_number

#: The default chat template: each message as "ROLE:\n<content>\n\n", then "ASSISTANT:\n".
DEFAULT_CHAT_TEMPLATE = "{ROLE}:\n{content}\n\n"
MAX_BODY_BYTES = 1_000_000
MAX_STOPS = 4  # stop strings per choice
MAX_STOP_LENGTH = 64  # characters per stop string (a stream holds back up to this many minus one)
MAX_REGEX_LENGTH = 1000  # characters of a `regex` (its automaton is capped apart: constraints.MAX_STATES)
MAX_BANS = 16  # banned words per choice
MAX_BAN_LENGTH = 64  # characters per banned word


@dataclass(frozen=True)
class Settings:
    """Everything `create_app` needs. Limits count characters (one token = one character)."""

    runs: tuple[str, ...] = ()            # run names; empty = the most recently updated run
    checkpoints: Path = Path("checkpoints")
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_streams: int = 64                 # streams (choices) stepped together, per model
    max_queue: int = 256                  # requests waiting for room, per model; beyond: 429
    max_length: int = 4096                # cap on max_tokens
    max_prompt: int = 10_000              # characters of prompt (after a chat template)
    max_n: int | None = None              # choices per request (default: 16, or max_streams if fewer)
    max_body: int = MAX_BODY_BYTES        # bytes of request body; beyond: 413
    quiet: bool = False                   # no access-log lines
    chat_template: str = DEFAULT_CHAT_TEMPLATE
    reload_seconds: float = 1.0           # how often a served run is checked for a new checkpoint
    flush_seconds: float = 0.05           # streamed text is sent at least this often
    keepalive_seconds: float = 15.0       # SSE comment line while a stream has nothing to say
    # --- Origin and connections (issue 30, items 5-7; serve/security.py and serve/connections.py) ---
    allowed_hosts: tuple[str, ...] = ()   # Host names accepted besides loopback and the bound address ("*": any)
    forwarded_allow_ips: tuple[str, ...] = ()  # proxies whose X-Forwarded-For/-Proto are believed; empty: none
    max_connections: int = 512            # open connections; beyond: 503 and closed at once
    header_timeout: float = 10.0          # seconds a client has to send a request's headers; then 408, closed
    body_timeout: float = 30.0            # seconds a client has to send a request's body; then closed
    # --- end of the origin and connections block ---
    # --- Engine bounds (issue 30, items 1-5; serve/scheduler.py, serve/jobs.py, serve/requests.py) ---
    max_prompt_total: int | None = None   # prompt characters x choices per request (default: max_prompt x max_n)
    max_unsent: int = 262_144             # bytes (estimated) of output one request may hold unread; then it pauses
    max_buffered: int = 67_108_864        # bytes (estimated) unread in the whole server; then every request
    #                                       holding over a sixteenth of max_unsent pauses
    send_timeout: float = 30.0            # seconds a stream may wait for its client to read; then it is cancelled
    # --- end of the engine bounds block ---
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if self.max_n is None:
            object.__setattr__(self, "max_n", min(16, self.max_streams if isinstance(self.max_streams, int) else 16))
        for name in ("max_streams", "max_queue", "max_length", "max_prompt", "max_n", "max_body", "port"):
            positive_int(name, getattr(self, name), option=True)
        for name in ("reload_seconds", "flush_seconds", "keepalive_seconds"):
            positive_number(name, getattr(self, name))
        _check_connections(self)  # the origin and connections block
        _check_engine_bounds(self)  # the engine bounds block
        if self.max_n > self.max_streams:
            raise ConfigError(
                "--max-n cannot exceed --max-streams (all choices of a request run together). "
                f"Received: max_n={self.max_n}, max_streams={self.max_streams}"
            )
        if "{content}" not in self.chat_template:
            raise ConfigError(
                "--chat-template must contain {content} (and may use {role}, {Role} or {ROLE}). "
                f"Received: chat_template={self.chat_template!r}"
            )
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("--api-key must not be empty. Received: api_key=''")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def exposed(self) -> bool:
        """True when the server listens beyond this machine."""
        return self.host not in ("127.0.0.1", "localhost", "::1")


def _check_connections(settings: Settings) -> None:
    """The origin and connections block: counts and seconds positive, host names without ports or paths."""
    positive_int("max_connections", settings.max_connections, option=True)
    for name in ("header_timeout", "body_timeout"):
        positive_number(name, getattr(settings, name), option=True)
    for name in settings.allowed_hosts:
        if not _host_name_ok(name):
            raise ConfigError("--allowed-host takes a host name or address without scheme, port or path "
                              f"(e.g. example.com). Received: allowed_host={name!r}")


def _check_engine_bounds(settings: Settings) -> None:
    """The engine bounds block: max_prompt_total defaults to max_prompt x max_n; sizes and seconds positive."""
    if settings.max_prompt_total is None and isinstance(settings.max_prompt, int) and isinstance(settings.max_n, int):
        object.__setattr__(settings, "max_prompt_total", settings.max_prompt * settings.max_n)
    for name in ("max_prompt_total", "max_unsent", "max_buffered"):
        positive_int(name, getattr(settings, name), option=True)
    positive_number("send_timeout", settings.send_timeout, option=True)


def _host_name_ok(name: str) -> bool:
    import ipaddress

    try:
        return bool(ipaddress.ip_address(name))
    except ValueError:
        return bool(name) and not any(c.isspace() or c in "/@[]:" for c in name)


def chat_template_from_option(value: str | None) -> str:
    """The template text: the option's value, or the contents of the file it names."""
    if value is None:
        return DEFAULT_CHAT_TEMPLATE
    if "{content}" not in value and os.path.isfile(value):
        return Path(value).read_text(encoding="utf-8")
    return value.replace("\\n", "\n").replace("\\t", "\t")
