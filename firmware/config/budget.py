"""The device's image RAM as one budget that scan jobs and POP3 sessions reserve from.

A real board has a fixed amount of image memory; when a page does not fit, the job fails
with MEMORY FULL. Accounting every holder against one budget gives the console and the
POP3 service one truthful "memory used" figure.
"""

from __future__ import annotations

from types import TracebackType

from firmware.errors import MemoryFullError


class RamBudget:
    """A fixed number of bytes; reservations take from it and give back exactly once."""

    def __init__(self, total: int) -> None:
        if total < 0:
            raise ValueError(f"a RAM budget cannot be negative ({total})")
        self._total = total
        self._used = 0
        self._holders = 0

    @property
    def total(self) -> int:
        return self._total

    @property
    def used(self) -> int:
        return self._used

    @property
    def free(self) -> int:
        return max(0, self._total - self._used)

    @property
    def holders(self) -> int:
        """How many reservations are open."""
        return self._holders

    def resize_total(self, total: int) -> None:
        """Change the budget (a profile change); current holders keep what they have."""
        if total < 0:
            raise ValueError(f"a RAM budget cannot be negative ({total})")
        self._total = total

    def reserve(self, nbytes: int, purpose: str) -> Reservation:
        """Take `nbytes` or raise MEMORY FULL saying what was needed and what was free."""
        self._take(nbytes, purpose)
        self._holders += 1
        return Reservation(self, nbytes, purpose)

    def _take(self, nbytes: int, purpose: str) -> None:
        if nbytes < 0:
            raise ValueError(f"cannot reserve a negative amount ({nbytes})")
        if nbytes > self.free:
            raise MemoryFullError(
                f"MEMORY FULL: {purpose} needs {nbytes} bytes, {self.free} free of {self._total}"
            )
        self._used += nbytes

    def _give(self, nbytes: int) -> None:
        self._used -= nbytes
        assert self._used >= 0, "RAM budget went negative"


class Reservation:
    """Bytes held from a RamBudget until `release()` (or the end of a `with` block)."""

    def __init__(self, budget: RamBudget, nbytes: int, purpose: str) -> None:
        self._budget = budget
        self._purpose = purpose
        self.nbytes = nbytes
        self.released = False

    def grow(self, extra: int) -> None:
        """Hold `extra` more bytes, or raise MEMORY FULL and keep what is held."""
        if self.released:
            raise RuntimeError("reservation already released")
        self._budget._take(extra, self._purpose)
        self.nbytes += extra

    def shrink(self, less: int) -> None:
        """Give back part of what is held."""
        less = min(less, self.nbytes)
        self._budget._give(less)
        self.nbytes -= less

    def release(self) -> None:
        """Give everything back; calling it again does nothing."""
        if not self.released:
            self.released = True
            self._budget._give(self.nbytes)
            self._budget._holders -= 1
            self.nbytes = 0

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
