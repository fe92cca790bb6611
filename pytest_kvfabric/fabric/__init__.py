"""Fabrics: where the prefill and decode agents run (loopback, network namespaces, real hosts)."""
