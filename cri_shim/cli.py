"""Command line: `cri-shim serve`, `cri-shim config`, `cri-shim install-unit`, `cri-shim images import FILE`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from cri_shim import __version__, config, daemon, logs


def _load_config(path: str | None) -> config.Config | None:
    """The configuration, or None after saying on stderr why it cannot be read."""
    try:
        return config.load(path)
    except config.ConfigError as exc:
        print(f"cri-shim: {exc}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    cfg = _load_config(args.config)
    if cfg is None:
        return 2
    logs.setup(args.log_level or cfg.server.log_level, cfg.server.log_format)
    try:
        asyncio.run(daemon.run(cfg, args.config))
    except (daemon.AlreadyRunning, daemon.CannotListen) as exc:
        print(f"cri-shim: {exc}", file=sys.stderr)
        return 1
    return 0


def _config(args: argparse.Namespace) -> int:
    sys.stdout.write(config.render_defaults())
    return 0


def _install_unit(args: argparse.Namespace) -> int:
    """Writes the systemd unit (and a default config file when there is none)."""
    from cri_shim import unit

    try:
        written = unit.install(Path(args.unit_dir), Path(args.config))
    except (unit.UnitError, OSError) as exc:
        print(f"cri-shim: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    print("then: systemctl daemon-reload && systemctl enable --now cri-shim")
    return 0


def _progress_bar(done: int, total: int) -> None:
    width = 40
    filled = width * done // total if total else width
    sys.stdout.write(f"\r[{'#' * filled}{' ' * (width - filled)}] {done / 2**20:7.1f}/{total / 2**20:.1f} MiB")
    sys.stdout.flush()


def _images_import(args: argparse.Namespace) -> int:
    """Loads an OCI layout or docker-archive tarball into the store, with or without a running daemon."""
    from cri_shim.errors import CriError
    from cri_shim.image.importer import import_archive
    from cri_shim.image.store import ImageStore

    cfg = _load_config(args.config)
    if cfg is None:
        return 2
    logs.setup("warning", "text")
    store = ImageStore(cfg.state_dir / "images", cfg.images.pinned_images)
    tty = sys.stdout.isatty()
    try:
        store.open(reconcile=False)
        records = asyncio.run(import_archive(store, args.file, _progress_bar if tty else None))
    except (CriError, OSError) as exc:
        print(f"{chr(10) if tty else ''}cri-shim: import of {args.file} failed: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if tty:
        print()
    for record in records:
        print(f"imported {record.image_id} {' '.join(record.repo_tags) or '(untagged)'}")
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
    install = sub.add_parser("install-unit", help="install the systemd service unit (Type=notify, SIGHUP reloads)")
    install.add_argument("--unit-dir", default="/etc/systemd/system", help="where the unit goes (default: %(default)s)")
    install.add_argument("--config", default="/etc/cri-shim/cri-shim.toml",
                         help="configuration file the service runs on, written with the defaults if absent "
                              "(default: %(default)s)")
    install.set_defaults(func=_install_unit)
    images = sub.add_parser("images", help="manage the image store").add_subparsers(dest="images_command", required=True)
    load = images.add_parser("import", help="import an OCI image layout or docker-archive (docker save) tarball")
    load.add_argument("file", type=Path, help="the tarball")
    load.add_argument("--config", help="TOML configuration file (its paths.state_dir locates the store)")
    load.set_defaults(func=_images_import)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)
