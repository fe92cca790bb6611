"""pytest-kvfabric: emulated prefill/decode GPU endpoints moving real KV-cache bytes over real transports."""
from __future__ import annotations

__version__ = "0.1.0"
