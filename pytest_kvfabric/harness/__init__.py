"""The pytest face: options, the per-case test item, suite collection, progress display."""
