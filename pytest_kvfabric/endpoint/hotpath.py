"""Which implementation of the agents' per-write bookkeeping runs: native (_fast.c) or Python.

One rule for the prefill slot book (slotbook.make_book) and the decode ledger
(pattern.PageLedger): native where the extension is built, unless the agent option
hot_path asks for "python"; asking for "native" where it is not built is an error."""
from __future__ import annotations

HOT_PATHS = ("native", "python")


def wants_native(hot_path: str | None, built: bool) -> bool:
    """True to use the native implementation. Raises ValueError for an unknown hot_path and
    RuntimeError for "native" when the extension was not built."""
    if hot_path not in (None, *HOT_PATHS):
        raise ValueError(f"hot_path {hot_path!r}: expected one of {', '.join(HOT_PATHS)}")
    if hot_path == "native" and not built:
        raise RuntimeError("hot_path 'native': the C extension pytest_kvfabric.endpoint._fast is not built")
    return built and hot_path != "python"
