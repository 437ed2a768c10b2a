"""The `fuelswitch` command: serve, db migrate, admin, demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path


def _serve_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file with the same keys as the flags (data_dir, listen, ...)")
    parser.add_argument("--listen", help="HOST:PORT to serve gRPC on (FUELSWITCH_LISTEN; default 127.0.0.1:50051)")
    parser.add_argument("--data-dir", dest="data_dir", type=Path, help="data directory (FUELSWITCH_DATA_DIR)")
    parser.add_argument("--operator-token", dest="operator_token", help="operator API token (FUELSWITCH_OPERATOR_TOKEN)")
    parser.add_argument("--dsn", help="PostgreSQL DSN; without it an embedded PostgreSQL runs under the data dir")
    parser.add_argument("--hold-ttl-s", dest="hold_ttl_s", type=int, help="pre-authorization lifetime (default 900)")
    parser.add_argument("--log-level", dest="log_level", help="DEBUG, INFO, WARNING (default INFO)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["admin"]:
        from switch import admin_cli

        return admin_cli.main(argv[1:])
    parser = argparse.ArgumentParser(prog="fuelswitch", description="fuel-card authorization and clearing host")
    commands = parser.add_subparsers(dest="command", required=True)
    _serve_flags(commands.add_parser("serve", help="run the switch"))
    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    migrate_parser = db_commands.add_parser("migrate", help="apply the schema migrations and exit")
    _serve_flags(migrate_parser)
    commands.add_parser("admin", help="operator commands over CardAdmin (fuelswitch admin --help)")
    demo = commands.add_parser("demo", help="start the switch on the embedded PostgreSQL and drive pump traffic")
    demo.add_argument("--duration-s", type=float, default=15.0)
    demo.add_argument("--terminals", type=int, default=16)
    demo.add_argument("--core-only", action="store_true", help="demonstrate the hold/settle core alone")
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.core_only:
            from switch.core_demo import run_core_demo

            return run_core_demo()
        from switch.demo import run_demo

        return run_demo(duration_s=args.duration_s, terminals=args.terminals)
    from switch.config import load_config

    try:
        flags = {k: v for k, v in vars(args).items() if k not in ("command", "db_command")}
        if args.command == "db":
            flags.setdefault("operator_token", None)
            flags["operator_token"] = flags["operator_token"] or "unused-by-migrate"
        config = load_config(flags)
    except (ValueError, OSError) as exc:
        print(f"fuelswitch: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "db":
        return asyncio.run(_migrate(config))
    import uvloop

    from switch.server import serve_forever

    uvloop.run(serve_forever(config))
    return 0


async def _migrate(config: object) -> int:
    from switch.config import ServeConfig
    from switch.migrate import migrate
    from switch.pgembedded import EmbeddedPostgres

    assert isinstance(config, ServeConfig)
    pg = None
    dsn = config.dsn
    if not dsn:
        pg = EmbeddedPostgres(config.data_dir / "postgres")
        dsn = pg.start()
    try:
        applied = await migrate(dsn)
        print(f"applied migrations: {applied or 'none (up to date)'}")
    finally:
        if pg is not None:
            pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
