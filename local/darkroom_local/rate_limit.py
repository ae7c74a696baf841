"""The emulator's own images-per-minute limit: a sliding window, as a provider counts what a key may generate."""

from __future__ import annotations

import threading
import time
from collections import deque


class ImagesPerMinute:
    """At most `limit` images in any `window_s` seconds (0: no limit). Refused images are not counted."""

    def __init__(self, limit: int, window_s: float = 60.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._taken: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def take(self, images: int, now: float | None = None) -> float | None:
        """None when `images` fit the window now (they are counted), else the seconds until they would."""
        if not self.limit:
            return None
        now = time.monotonic() if now is None else now
        with self._lock:
            self._expire(now)
            used = sum(count for _, count in self._taken)
            if used + images <= self.limit:
                self._taken.append((now, images))
                return None
            if images > self.limit:
                return self.window_s  # never fits; say a full window, as a provider would
            excess, freed = used + images - self.limit, 0
            for at, count in self._taken:
                freed += count
                if freed >= excess:
                    return max(0.001, at + self.window_s - now + 1e-6)  # a hair over: then it surely fits
            return self.window_s  # not reached: the oldest entries free at least the excess

    def headers(self, now: float | None = None) -> dict[str, str]:
        """x-ratelimit-* headers for the window as it is, in OpenAI's form, named for what is counted: images."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._expire(now)
            used = sum(count for _, count in self._taken)
            reset = self._taken[0][0] + self.window_s - now if self._taken else 0.0
        return {
            "x-ratelimit-limit-images": str(self.limit),
            "x-ratelimit-remaining-images": str(max(0, self.limit - used)),
            "x-ratelimit-reset-images": f"{max(0.0, reset):.3f}s",
        }

    def _expire(self, now: float) -> None:
        while self._taken and self._taken[0][0] + self.window_s <= now:  # the same sum as the waits they give
            self._taken.popleft()
