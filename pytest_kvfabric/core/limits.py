"""Upper bounds on every number a user can give, each with the reason it is where it is.

Declared once: the CLI, the pytest options, the plan builder and the input readers read these;
the JSON schemas carry the same figures (tests/test_input_limits.py checks they agree). A bound
exists so that a typo (an extra three zeros) is a one-line error in milliseconds, not minutes of
work, a MemoryError or an integer overflow deep in numpy. Pure: no I/O.
"""
from __future__ import annotations

import math
from typing import Any

# Tokens per request (ISL/OSL, distribution bounds): 16 Mi tokens, 16x the longest context of a
# shipped model; KV byte counts (tokens x layers x head bytes) then stay far inside int64.
MAX_TOKENS = 1 << 24
# Requests per scenario: the plan builder and both agents loop over requests in Python (tens of
# microseconds each: ~200 us measured on a busy 2-core host), so 50,000 already means ~10 s of
# setup; the largest shipped use is 5,000.
MAX_REQUESTS = 50_000
# Transfers in one plan (rows of TRANSFER_DTYPE, 42 B each): 16 Mi rows is a 0.7 GiB table, the
# most a run should hold in memory on each agent (the coding preset on llama3.1-8b needs 8 Mi at
# most); larger plans are refused before allocation.
MAX_PLAN_ROWS = 1 << 24
# Emulated HBM per agent, MiB: 64 GiB; the pool is allocated (and pattern-filled) in host RAM.
MAX_POOL_MIB = 1 << 16
# Seeds: numpy takes any non-negative integer; 64 bits keeps seeds portable through JSON and YAML.
MAX_SEED = (1 << 64) - 1
# Seconds any single case or run may be given: one day.
MAX_TIMEOUT_S = 86_400.0
# Percent regression allowed by a baseline gate: 100% means "half as fast"; above 1000% no gate is left.
MAX_REGRESSION_PCT = 1000.0
# Nesting of any YAML/JSON input (profiles, suites, inventories, baselines, HF configs): the
# deepest shipped input nests 6 levels; this bound keeps parsers far from Python's recursion limit.
MAX_DEPTH = 32
# Size of any YAML/JSON input file: the largest shipped suite is a few KiB.
MAX_INPUT_BYTES = 4 << 20
# Size of a JSON report read back as a baseline: ~3 KiB per case, so room for ~80,000 cases.
MAX_REPORT_BYTES = 256 << 20

# Model dimensions: 16 Mi, far above any published model (hidden 16K, vocab 256K, FFN 53K).
MAX_MODEL_DIM = 1 << 24
# Layers: 4096, 32x the deepest shipped model (126); per-layer arrays are built per ISL.
MAX_LAYERS = 4096
# GPU figures (TFLOPS, GB, TB/s, Gb/s): 10 million, 1000x today's largest; a bound keeps the timing
# model's products finite. The floor (0.001) keeps its quotients (FLOPs / rate) finite.
MAX_GPU_FIGURE = 1e7
MIN_GPU_FIGURE = 1e-3


def finite_reason(value: Any) -> str | None:
    """Why a float is unusable (NaN or infinite), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    return None


def check_number(value: Any, minimum: float | None = None, maximum: float | None = None,
                 exclusive_minimum: bool = False) -> str | None:
    """Why `value` is out of range (a one-phrase reason), or None when it is fine."""
    why = finite_reason(value)
    if why:
        return why
    if minimum is not None:
        if exclusive_minimum and not value > minimum:
            return f"must be > {show(minimum)}, got {show(value)}"
        if not exclusive_minimum and value < minimum:
            return f"must be >= {show(minimum)}, got {show(value)}"
    if maximum is not None and value > maximum:
        return f"must be <= {show(maximum)}, got {show(value)}"
    return None


def show(x: Any) -> str:
    """A number as a reader wants it in a message: 1,000,000 and 0.5, not 1000000.0."""
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e16:
        x = int(x)
    if isinstance(x, int):
        text = f"{x:,}"
        if len(text) <= 40:
            return text
        digits = str(abs(x))  # int -> float overflows past 1e308, so cut the digits by hand
        return f"{'-' if x < 0 else ''}{digits[0]}.{digits[1:4]}e+{len(digits) - 1} ({len(digits)} digits)"
    return f"{x:g}"
