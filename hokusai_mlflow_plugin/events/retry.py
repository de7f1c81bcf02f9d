"""When a failed delivery is tried again: exponential backoff with "equal jitter", a consumer's
``Retry-After`` honoured, and a horizon after which the delivery is dead."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    base: float = 10.0
    cap: float = 4 * 3600.0
    horizon: float = 3 * 24 * 3600.0

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds until the next try after ``attempts`` failures: exponential, "equal jitter"."""
        step = min(self.cap, self.base * 2 ** max(0, attempts - 1))
        delay = step / 2 + random.uniform(0, step / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.horizon))
        return delay

    @classmethod
    def from_settings(cls, settings) -> "RetryPolicy":
        return cls(settings.relay_retry_base, settings.relay_retry_cap, settings.relay_horizon)
