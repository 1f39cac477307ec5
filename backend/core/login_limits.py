"""Sign-in throttling: exponential lockouts per (name, client address), and per name across addresses.

A few failed sign-ins are free; after `free_attempts` the pair is locked for `lockout_s`, doubling
with each further failure up to `max_lockout_s`. A name that fails `free_attempts * 10` times from
any mix of addresses is locked the same way for everyone (a spread-out guess, or forged UI
addresses), so a brute force costs hours, not seconds. A locked request is refused with 429 and
`Retry-After` *before* its secret is checked, so a lockout reveals nothing. A success clears its
pair. State is in the API process's memory (one per process; a restart forgets it).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

ANY_ADDRESS = "*"
"""The address part of the per-name record (failures from every address)."""
MAX_RECORDS = 100_000
"""Records kept at most (oldest failures forgotten first), so a flood of names cannot grow memory."""


class _LimitSettings(Protocol):
    login_free_attempts: int
    login_lockout_s: float
    login_max_lockout_s: float


@dataclass
class _Record:
    failures: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0


class LoginLimiter:
    """`retry_after(name, address)` before checking a secret; `failed` / `succeeded` after."""

    def __init__(
        self,
        *,
        free_attempts: int = 5,
        lockout_s: float = 30.0,
        max_lockout_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if free_attempts < 1 or lockout_s <= 0 or max_lockout_s < lockout_s:
            raise ValueError("login limits: free_attempts >= 1 and 0 < lockout_s <= max_lockout_s")
        self.free_attempts = free_attempts
        self.lockout_s = lockout_s
        self.max_lockout_s = max_lockout_s
        self._clock = clock
        self._records: OrderedDict[tuple[str, str], _Record] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: _LimitSettings) -> LoginLimiter:
        return cls(
            free_attempts=settings.login_free_attempts,
            lockout_s=settings.login_lockout_s,
            max_lockout_s=settings.login_max_lockout_s,
        )

    @staticmethod
    def _keys(name: str, address: str) -> tuple[tuple[str, str], tuple[str, str]]:
        name = name.strip().lower()
        return (name, address), (name, ANY_ADDRESS)

    def retry_after(self, name: str, address: str) -> int:
        """Whole seconds until `name` may try again from `address` (0: now)."""
        now = self._clock()
        with self._lock:
            waits = [r.locked_until - now for key in self._keys(name, address) if (r := self._records.get(key))]
        wait = max([0.0, *waits])
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, name: str, address: str) -> int:
        """Count a failed sign-in; the lockout it starts, in whole seconds (0: none yet)."""
        now = self._clock()
        pair, anywhere = self._keys(name, address)
        with self._lock:
            waits = [self._fail(pair, now, self.free_attempts), self._fail(anywhere, now, 10 * self.free_attempts)]
            while len(self._records) > MAX_RECORDS:
                self._records.popitem(last=False)
        return math.ceil(max(waits))

    def _fail(self, key: tuple[str, str], now: float, free: int) -> float:
        record = self._records.pop(key, None) or _Record()
        if now - record.last_failure > 2 * self.max_lockout_s and record.locked_until <= now:
            record = _Record()  # quiet for long enough: start over
        record.failures += 1
        record.last_failure = now
        wait = 0.0
        if record.failures >= free:
            wait = min(self.max_lockout_s, self.lockout_s * 2 ** (record.failures - free))
            record.locked_until = now + wait
        self._records[key] = record  # most recent last (evicted last)
        return wait

    def succeeded(self, name: str, address: str) -> None:
        pair, _anywhere = self._keys(name, address)
        with self._lock:
            self._records.pop(pair, None)
