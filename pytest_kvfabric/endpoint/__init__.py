"""Endpoints: emulated HBM pools, source pattern and verification, the prefill pacing loop,
the decode receive/verify loop, and the agent process entry point (run over execnet)."""
