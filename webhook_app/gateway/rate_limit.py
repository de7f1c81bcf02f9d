"""The gateway's per-key rate limit, kept by the ``limits`` library (Flask-Limiter's engine):
a sliding window counter in this process's memory, or in Redis when ``HOKUSAI_REDIS_URL`` is set,
so that every gateway process counts against the same window.

Sliding window counter, not moving window: the count of the current and the previous window,
weighted, which is as smooth for a limit's purpose. ``limits``' in-memory moving window prunes its
log of hits in a worker thread after every hit, which cost more than a third of the gateway's
time per request (BENCHMARKS.md)."""

from __future__ import annotations

import logging
import math
import time

from limits import parse
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from hokusai_mlflow_plugin.config import rate_limit_problem
from hokusai_mlflow_plugin.core.errors import ConfigError
from hokusai_mlflow_plugin.monitoring import GATEWAY_RATE_LIMIT_UNCHECKED

_logger = logging.getLogger(__name__)

# A storage that fails is not asked again for this long: meanwhile requests go through unlimited at
# once, and a Redis that is down or silent costs one request in this long, not every request.
RETRY_STORAGE_AFTER = 5.0
# Redis answers a healthy gateway in well under a millisecond; a silent one is given up on after this.
STORAGE_TIMEOUT = 0.5


class RateLimit:
    def __init__(self, rate: str, redis_url: str | None = None):
        problem = rate_limit_problem(rate)
        if problem:
            raise ConfigError(problem)
        self.item = parse(rate)
        self.rate = rate
        self._pool = None
        if redis_url:
            import redis.asyncio

            # Our pool, given to limits (which has no close of its own), so that the gateway closes it.
            self._pool = redis.asyncio.ConnectionPool.from_url(
                redis_url, socket_connect_timeout=STORAGE_TIMEOUT, socket_timeout=STORAGE_TIMEOUT)
            storage = storage_from_string(f"async+{redis_url}", implementation="redispy", connection_pool=self._pool)
        else:
            storage = storage_from_string("async+memory://")
        self.limiter = SlidingWindowCounterRateLimiter(storage)
        self._failing = False  # the storage failed, and has not answered since (said once each way)
        self._ask_again_at = 0.0  # monotonic time before which a failed storage is not asked

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()

    async def retry_after(self, bucket: str) -> int | None:
        """None if a request in ``bucket`` may go on (and counts it); else the seconds to wait.
        A storage that fails (Redis down) lets requests through: the limit protects MLflow, it is
        not what keeps anyone out. Each such request is counted
        (``hokusai_gateway_rate_limit_unchecked_total``); the log says it when the storage fails
        and when it answers again, not once a request. A failed storage is asked again
        ``RETRY_STORAGE_AFTER`` seconds later, and a silent one given up on after
        ``STORAGE_TIMEOUT``."""
        if self._failing and time.monotonic() < self._ask_again_at:
            GATEWAY_RATE_LIMIT_UNCHECKED.inc()
            return None
        try:
            allowed = await self.limiter.hit(self.item, bucket)
            stats = None if allowed else await self.limiter.get_window_stats(self.item, bucket)
        except Exception as e:  # the storage's own errors: redis-py's, or limits' wrapping of them
            GATEWAY_RATE_LIMIT_UNCHECKED.inc()
            self._ask_again_at = time.monotonic() + RETRY_STORAGE_AFTER
            if not self._failing:
                self._failing = True
                _logger.warning("gateway: the rate limit's storage failed (%s): requests go through unlimited until it "
                                "answers again", type(e).__name__)
            return None
        if self._failing:
            self._failing = False
            _logger.warning("gateway: the rate limit's storage answers again: the limit of %s applies", self.rate)
        return None if allowed else max(1, math.ceil(stats.reset_time - time.time()))
