from __future__ import annotations

import time
from collections import defaultdict, deque


class FailureLimiter:
    """Counts failures per key in a sliding window (sign-in brute force); in-process."""

    def __init__(self, max_failures: int, window_seconds: float) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self._fails: dict[str, deque[float]] = defaultdict(deque)

    def _trim(self, key: str) -> deque[float]:
        q = self._fails[key]
        cutoff = time.monotonic() - self.window
        while q and q[0] < cutoff:
            q.popleft()
        return q

    def blocked(self, key: str) -> bool:
        return len(self._trim(key)) >= self.max_failures

    def fail(self, key: str) -> None:
        self._trim(key).append(time.monotonic())
        if len(self._fails) > 100_000:  # bounded memory under a spray of names
            self._fails.clear()
