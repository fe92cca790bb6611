"""Transports: the one-sided write interface (base), the shared framing, and a lazy registry."""
from .registry import available_names, get_transport, probe

__all__ = ["available_names", "get_transport", "probe"]
