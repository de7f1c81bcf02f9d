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

_logger = logging.getLogger(__name__)


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
            self._pool = redis.asyncio.ConnectionPool.from_url(redis_url)
            storage = storage_from_string(f"async+{redis_url}", implementation="redispy", connection_pool=self._pool)
        else:
            storage = storage_from_string("async+memory://")
        self.limiter = SlidingWindowCounterRateLimiter(storage)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()

    async def retry_after(self, bucket: str) -> int | None:
        """None if a request in ``bucket`` may go on (and counts it); else the seconds to wait.
        A storage that fails (Redis down) lets requests through: the limit protects MLflow, it is
        not what keeps anyone out."""
        try:
            if await self.limiter.hit(self.item, bucket):
                return None
            stats = await self.limiter.get_window_stats(self.item, bucket)
        except Exception as e:  # the storage's own errors: redis-py's, or limits' wrapping of them
            _logger.warning("gateway: the rate limit's storage failed (%s); letting the request through", type(e).__name__)
            return None
        return max(1, math.ceil(stats.reset_time - time.time()))
