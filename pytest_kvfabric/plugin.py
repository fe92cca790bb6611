"""pytest hooks only: options, fixtures, parametrization, suite collection, summary. (stub; being written)"""
from __future__ import annotations
