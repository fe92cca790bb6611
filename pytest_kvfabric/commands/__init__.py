"""Subcommands of the `kvfabric` CLI, one module each; each exposes register(subparsers)."""
