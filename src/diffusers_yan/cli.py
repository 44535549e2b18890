"""The `yan` command line.

Each subcommand lives next to the code it drives and registers itself through a ``register(subparsers)``
function; this file only lists them, so `yan --help` stays fast (modules are imported when listed, and heavy
dependencies such as the game engine or gradio are imported inside the subcommand's function).
"""

import argparse
import importlib
import sys


# subcommand module -> it defines `register(subparsers)`
_SUBCOMMAND_MODULES = (
    "diffusers_yan.commands.generate",  # yan generate
    "diffusers_yan.commands.play",  # yan play
    "diffusers_yan.data.cli",  # yan collect, yan balance
    "diffusers_yan.evaluation.cli",  # yan evaluate
    "diffusers_yan.pipelines.yan_gen.convert",  # yan convert-wan
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="yan", description="diffusers-yan: play, generate, collect data for and evaluate interactive worlds."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is not None and name.startswith(e.name):  # subcommand not part of this install/version
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
