"""Counters for GET /metrics, written in the Prometheus text format by hand (it is tiny).

Updated from the event loop (requests) and the engine threads (steps, characters, time to
first character); one lock keeps the few read-modify-writes whole.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

TTFC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict = defaultdict(int)          # (path, status) -> count
        self.characters: dict = defaultdict(int)        # model -> characters generated
        self.steps: dict = defaultdict(int)             # model -> engine steps
        self._rate: dict = {}                           # model -> (window start, steps then, steps/s)
        self.ttfc_counts = [0] * (len(TTFC_BUCKETS) + 1)
        self.ttfc_sum = 0.0
        self.disconnects = 0
        self.send_timeouts = 0
        self.restarts: dict = defaultdict(int)          # model -> engine loop restarts
        self.prompt_characters: dict = defaultdict(int) # model -> prompt characters fed to the engine
        self.ledger = None                              # the server's unread output (jobs.Ledger), when set

    def request(self, path: str, status: int) -> None:
        with self._lock:
            self.requests[(path, status)] += 1

    def disconnected(self) -> None:
        with self._lock:
            self.disconnects += 1

    def send_timed_out(self) -> None:
        with self._lock:
            self.send_timeouts += 1

    def prompt_fed(self, model: str, characters: int) -> None:
        with self._lock:
            self.prompt_characters[model] += characters

    def engine_restart(self, model: str) -> None:
        with self._lock:
            self.restarts[model] += 1

    def engine_step(self, model: str, streams: int, steps: int = 1) -> None:
        """`steps` steps of `model`'s engine that advanced `streams` streams by one character each
        (`characters` counts what the engine drew, shown or not: a stream that stops mid-call
        is counted for the whole call)."""
        now = time.monotonic()
        with self._lock:
            self.steps[model] += steps
            self.characters[model] += streams * steps
            start, at_start, rate = self._rate.get(model, (now, 0, 0.0))
            if now - start >= 1.0:
                rate = (self.steps[model] - at_start) / (now - start)
                start, at_start = now, self.steps[model]
            self._rate[model] = (start, at_start, rate)

    def observe_ttfc(self, seconds: float) -> None:
        with self._lock:
            for i, bound in enumerate(TTFC_BUCKETS):
                if seconds <= bound:
                    self.ttfc_counts[i] += 1
                    break
            else:
                self.ttfc_counts[-1] += 1
            self.ttfc_sum += seconds

    def _engine_bounds(self, lines: list, family, models: dict) -> None:
        """Back-pressure, prompts being fed and restarts (issue 30)."""
        family("textgen_paused_streams", "gauge", "Streams out of the batch until their client reads.")
        for name, served in models.items():
            lines.append(f'textgen_paused_streams{{model="{name}"}} {served.scheduler.paused_streams if served.scheduler else 0}')
        family("textgen_prompt_characters_waiting", "gauge", "Prompt characters of admitted requests still to feed.")
        for name, served in models.items():
            lines.append(f'textgen_prompt_characters_waiting{{model="{name}"}} {served.scheduler.prompt_left if served.scheduler else 0}')
        family("textgen_prompt_characters_fed_total", "counter",
               "Prompt characters fed to the engine (a prompt shared by n choices counts once).")
        for name in models:
            lines.append(f'textgen_prompt_characters_fed_total{{model="{name}"}} {self.prompt_characters[name]}')
        family("textgen_unsent_output_bytes", "gauge",
               "Output made for clients and not yet taken by them (estimated bytes, the whole server).")
        lines.append(f"textgen_unsent_output_bytes {self.ledger.total if self.ledger is not None else 0}")
        family("textgen_unsent_output_limit_bytes", "gauge", "The bound on textgen_unsent_output_bytes (--max-buffered).")
        lines.append(f"textgen_unsent_output_limit_bytes {self.ledger.limit if self.ledger is not None else 0}")
        family("textgen_send_timeouts_total", "counter", "Streams cancelled because their client stopped reading.")
        lines.append(f"textgen_send_timeouts_total {self.send_timeouts}")
        family("textgen_engine_restarts_total", "counter", "Engine loops restarted after a failure.")
        for name in models:
            lines.append(f'textgen_engine_restarts_total{{model="{name}"}} {self.restarts[name]}')

    def render(self, models: dict) -> str:
        """The exposition text; `models` maps a run name to its Served entry (for the gauges)."""
        now = time.monotonic()
        lines = []

        def family(name, kind, help_text):
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")

        with self._lock:
            family("textgen_requests_total", "counter", "HTTP requests answered, by path and status.")
            for (path, status), count in sorted(self.requests.items()):
                lines.append(f'textgen_requests_total{{path="{path}",status="{status}"}} {count}')
            family("textgen_client_disconnects_total", "counter", "Requests whose client left before the end.")
            lines.append(f"textgen_client_disconnects_total {self.disconnects}")
            family("textgen_active_streams", "gauge", "Streams (choices) in the engine's batch.")
            for name, served in models.items():
                active = served.scheduler.active if served.scheduler else 0
                lines.append(f'textgen_active_streams{{model="{name}"}} {active}')
            family("textgen_queue_length", "gauge", "Requests waiting for room in the batch.")
            for name, served in models.items():
                queued = served.scheduler.queued if served.scheduler else 0
                lines.append(f'textgen_queue_length{{model="{name}"}} {queued}')
            self._engine_bounds(lines, family, models)
            family("textgen_characters_generated_total", "counter", "Characters drawn by the engine.")
            for name in models:
                lines.append(f'textgen_characters_generated_total{{model="{name}"}} {self.characters[name]}')
            family("textgen_engine_steps_total", "counter", "Engine steps (one character for every active stream).")
            for name in models:
                lines.append(f'textgen_engine_steps_total{{model="{name}"}} {self.steps[name]}')
            family("textgen_engine_steps_per_second", "gauge", "Engine steps per second over the last second of work.")
            for name in models:
                start, _, rate = self._rate.get(name, (now, 0, 0.0))
                lines.append(f'textgen_engine_steps_per_second{{model="{name}"}} {rate if now - start < 2 else 0.0:.1f}')
            family("textgen_checkpoint_step", "gauge", "Training step of the checkpoint served.")
            for name, served in models.items():
                step = served.scheduler.version.step if served.scheduler else 0
                lines.append(f'textgen_checkpoint_step{{model="{name}"}} {step}')
            family("textgen_time_to_first_character_seconds", "histogram",
                   "From a request's arrival to its first character.")
            total = 0
            for bound, count in zip(TTFC_BUCKETS, self.ttfc_counts):
                total += count
                lines.append(f'textgen_time_to_first_character_seconds_bucket{{le="{bound}"}} {total}')
            total += self.ttfc_counts[-1]
            lines.append(f'textgen_time_to_first_character_seconds_bucket{{le="+Inf"}} {total}')
            lines.append(f"textgen_time_to_first_character_seconds_sum {self.ttfc_sum:.6f}")
            lines.append(f"textgen_time_to_first_character_seconds_count {total}")
        return "\n".join(lines) + "\n"
