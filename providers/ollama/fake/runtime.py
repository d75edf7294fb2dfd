"""What every handler shares: configuration, counters, residency, name resolution, pre-first-byte behaviours."""

from __future__ import annotations

import random

from .asgi import ClientGone, FakeError, Receive, wait_for_disconnect
from .catalogue import Resolved, resolve
from .config import FakeConfig
from .replies import TOOL_CALL_ID_CHARS
from .state import FakeStats, Residency

RUNNER_STOPPED = ("model runner has unexpectedly stopped, this may be due to resource limitations or an internal "
                  "error, check ollama server logs for details")
SERVER_BUSY = "server busy, please try again.  maximum pending requests exceeded"
SLOW_TOKEN_DELAY = 0.05  # seconds per token for a -slow model


class Runtime:
    """State and helpers of one emulator instance."""

    def __init__(self, config: FakeConfig, stats: FakeStats) -> None:
        self.config = config
        self.stats = stats
        self.residency = Residency()
        self._names: dict[str, Resolved | None] = {}
        self._random = random.Random(0x0114A)  # tool call ids: unique per run, reproducible across runs

    def find(self, requested: str) -> Resolved:
        """The model behind a name used for inference, or Ollama's 404."""
        from .pull import installed  # pull.py imports this module

        resolved = resolve(requested, self._names)
        if resolved is None or not installed(self, resolved.spec.name):  # deleted with /api/delete
            raise FakeError(404, f"model '{requested}' not found")
        return resolved

    def lookup(self, requested: str) -> Resolved | None:
        """The model behind a name, or None."""
        return resolve(requested, self._names)

    async def schedule(self, model: Resolved, receive: Receive) -> None:
        """Get a "runner" for `model`: where -error-500, -error-503 and -hang strike."""
        if model.has("-error-500"):
            raise FakeError(500, RUNNER_STOPPED)
        if model.has("-error-503"):
            raise FakeError(503, SERVER_BUSY)
        if model.has("-hang"):
            await wait_for_disconnect(receive)
            self.stats.cancelled_streams += 1
            raise ClientGone

    def tool_call_id(self) -> str:
        """`call_` and 8 characters of [a-z0-9], as Ollama's toolCallId makes them."""
        return "call_" + "".join(self._random.choices(TOOL_CALL_ID_CHARS, k=8))

    def token_delay(self, model: Resolved) -> float:
        """Seconds between streamed tokens for `model`."""
        return max(self.config.token_delay, SLOW_TOKEN_DELAY) if model.has("-slow") else self.config.token_delay
