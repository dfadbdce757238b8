"""Why the server cannot run a request now, in its own words: what the scheduler and the registry
raise. They know nothing of HTTP; `envelopes.to_api` maps each one to a status and the OpenAI
envelope, in one place."""

from __future__ import annotations


class ServeFailure(Exception):
    """A request that cannot run for a reason on the server's side (not a mistake in the request)."""


class ModelNotFound(ServeFailure):
    def __init__(self, model: str, served: list):
        shown = model if len(model) <= 100 else model[:100] + "..."
        super().__init__(f"The model {shown!r} does not exist. Served models: {', '.join(served) or 'none'}.")


class ModelLoading(ServeFailure):
    def __init__(self):
        super().__init__("The server is still loading its models; retry in a moment.")


class QueueFull(ServeFailure):
    def __init__(self, retry_after: int):
        super().__init__("Too many requests are waiting for this model (the queue is full); retry later.")
        self.retry_after = retry_after


class ShuttingDown(ServeFailure):
    def __init__(self, message: str = "The server is shutting down."):
        super().__init__(message)


class EngineFailed(ServeFailure):
    """The engine loop failed while the request was running (a bug): it was ended, the loop restarts."""

    def __init__(self, model: str):
        super().__init__(f"The engine of model {model!r} failed while running this request (a bug; see the "
                         "server log); it restarts on the last good checkpoint.")


class EngineRestarting(ServeFailure):
    """The engine loop is restarting (or could not restart yet): nothing runs on that model for now."""

    def __init__(self, model: str):
        super().__init__(f"The engine of model {model!r} is restarting after a failure; retry in a moment.")
