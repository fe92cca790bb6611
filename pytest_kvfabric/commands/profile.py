"""`kvfabric profile import CONFIG.json [-o PATH]`: write a model profile from a Hugging Face config."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from ..core.hf_import import import_config


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("profile", help="manage model profiles (import a Hugging Face config)",
                              description="Manage model profiles.")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    imp = actions.add_parser("import", help="turn a Hugging Face config.json into a model profile YAML",
                             description="Turn a Hugging Face config.json into a model profile YAML "
                             "and print the written path.")
    imp.add_argument("config", metavar="CONFIG.json", help="the model's config.json")
    imp.add_argument("-o", "--output", metavar="PATH", default=None,
                     help="output file or directory (default: ./<model-id>.yaml)")
    imp.add_argument("--id", dest="model_id", default=None,
                     help="profile id (default: from _name_or_path, the file name or its directory)")
    imp.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    if args.output is not None:
        from ..core.outpath import check_output_path

        check_output_path(args.output, "-o", "<cli>", dir_ok=True)
    path = import_config(args.config, args.output, model_id=args.model_id)
    sys.stdout.write(f"{path}\n")
    return 0
