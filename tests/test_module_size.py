"""House rule: no module of the package over 600 lines (small single-purpose modules)."""
from __future__ import annotations

from pathlib import Path

PKG_DIR = Path(__file__).resolve().parents[1] / "pytest_kvfabric"
MAX_LINES = 600
# Being split by other parts of issue 16 (the stream protocol, the plugin's hooks); remove each
# name once its module is under the limit.
PENDING: set[str] = set()


def test_no_module_over_600_lines():
    over = {str(p.relative_to(PKG_DIR)): n for p in PKG_DIR.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert set(over) <= PENDING, {k: v for k, v in over.items() if k not in PENDING}
