"""Command line: `cri-shim serve`, `cri-shim config`."""

from __future__ import annotations

import argparse
import asyncio
import sys

from cri_shim import __version__, config, daemon, logs


def _serve(args: argparse.Namespace) -> int:
    try:
        cfg = config.load(args.config)
    except config.ConfigError as exc:
        print(f"cri-shim: {exc}", file=sys.stderr)
        return 2
    logs.setup(args.log_level or cfg.server.log_level, cfg.server.log_format)
    try:
        asyncio.run(daemon.run(cfg))
    except daemon.AlreadyRunning as exc:
        print(f"cri-shim: {exc}", file=sys.stderr)
        return 1
    return 0


def _config(args: argparse.Namespace) -> int:
    sys.stdout.write(config.render_defaults())
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    top = argparse.ArgumentParser(prog="cri-shim", description="A Kubernetes CRI runtime.")
    top.add_argument("--version", action="version", version=f"cri-shim {__version__}")
    sub = top.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the CRI server")
    serve.add_argument("--config", help="TOML configuration file (default: embedded defaults)")
    serve.add_argument("--log-level", help="overrides server.log_level")
    serve.set_defaults(func=_serve)
    cfg = sub.add_parser("config", help="print the default configuration, documented")
    cfg.set_defaults(func=_config)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)
