"""Test helper: record when the pacing loop stamps each row (the slot book claims it).

Stamping happens inside the slot book (C or Python), so tests observe it by wrapping the
book that `prefill.make_book` returns: a row is stamped exactly when claim() or select()
takes it."""
from __future__ import annotations

from typing import Any, Callable


class RecordingBook:
    """Wraps a real slot book; notes the time (by `now`) each row was first stamped."""

    def __init__(self, book: Any, now: Callable[[], int], log: dict[int, int]) -> None:
        self.book, self.now, self.log = book, now, log

    def claim(self, i: int) -> bool:
        ok = self.book.claim(i)
        if ok:
            self.log.setdefault(i, self.now())
        return ok

    def select(self, ready, batch, *window):
        k, keep, nbytes = self.book.select(ready, batch, *window)
        t = self.now()
        for i in batch["xfer"][:k].tolist():
            self.log.setdefault(i, t)
        return k, keep, nbytes

    def __getattr__(self, name: str) -> Any:
        return getattr(self.book, name)


def record_stamps(monkeypatch, now: Callable[[], int], log: dict[int, int] | None = None) -> dict[int, int]:
    """Make run_prefill's slot book record stamp times into `log` (row -> time); returns it."""
    from pytest_kvfabric.endpoint import prefill as prefill_mod

    log = {} if log is None else log
    real = prefill_mod.make_book

    def recording(*args: Any, **kw: Any) -> tuple[Any, str]:
        book, kind = real(*args, **kw)
        return RecordingBook(book, now, log), kind

    monkeypatch.setattr(prefill_mod, "make_book", recording)
    return log
