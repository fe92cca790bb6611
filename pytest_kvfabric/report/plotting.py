"""Shared figure plumbing: headless matplotlib figures (no pyplot, no display), one colour per
transport everywhere, PNG bytes out, and paging so that a report over many cases stays readable."""
from __future__ import annotations

import io
from typing import Any, Iterator, Sequence, TypeVar

T = TypeVar("T")

# Fixed order, so a transport keeps its colour across figures and reports.
KNOWN_TRANSPORTS = ("tcp", "zerocopy", "iouring", "devmem", "rdma")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
MAX_ROWS = 24  # bars (or cases) per figure before it pages
MAX_FACETS = 6  # small multiples per figure
WIDTH_IN = 10.0
DPI = 100


def colour(transport: str, others: Sequence[str] = ()) -> str:
    """Known transports have fixed colours; plug-ins take the next free ones in name order."""
    if transport in KNOWN_TRANSPORTS:
        return PALETTE[KNOWN_TRANSPORTS.index(transport)]
    extra = sorted(set(others) - set(KNOWN_TRANSPORTS) | {transport} - set(KNOWN_TRANSPORTS))
    return PALETTE[(len(KNOWN_TRANSPORTS) + extra.index(transport)) % len(PALETTE)]


def figure(height_in: float, ncols: int = 1, nrows: int = 1, width_in: float = WIDTH_IN) -> tuple[Any, Any]:
    """A Figure on the Agg canvas and its axes array (squeezed like pyplot.subplots)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, max(2.2, height_in)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def pages(items: Sequence[T], size: int) -> Iterator[tuple[int, int, Sequence[T]]]:
    """(page number from 1, number of pages, the items on it)."""
    n = max(1, -(-len(items) // size))
    for i in range(n):
        yield i + 1, n, items[i * size:(i + 1) * size]


def page_title(title: str, page: int, npages: int) -> str:
    return title if npages == 1 else f"{title} ({page}/{npages})"


def short(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def hide_unused(axes: Any, used: int) -> None:
    for ax in list(axes.flat)[used:]:
        ax.set_visible(False)
