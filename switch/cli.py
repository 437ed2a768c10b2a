"""The `fuelswitch` command: serve, status, db migrate, verify, keys, admin, channels, reconcile, settlement, demo,
loadtest."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path


def _serve_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file with the same keys as the flags (data_dir, listen, ...)")
    parser.add_argument("--listen", help="HOST:PORT to serve gRPC on (FUELSWITCH_LISTEN; default 127.0.0.1:50051)")
    parser.add_argument("--data-dir", dest="data_dir", type=Path, help="data directory (FUELSWITCH_DATA_DIR)")
    parser.add_argument("--operator-token", dest="operator_token", help="operator API token (FUELSWITCH_OPERATOR_TOKEN)")
    parser.add_argument("--dsn", help="PostgreSQL DSN; without it an embedded PostgreSQL runs under the data dir")
    parser.add_argument("--master-key-file", dest="master_key_file", type=Path,
                        help="file with the 64-hex-character master key (else FUELSWITCH_MASTER_KEY, "
                             "else <data dir>/keys/master.key)")
    parser.add_argument("--hold-ttl-s", dest="hold_ttl_s", type=int,
                        help="pre-authorization lifetime, seconds, 60..86400 (FUELSWITCH_HOLD_TTL_S; default 900)")
    parser.add_argument("--hold-ttl-by-class", dest="hold_ttl_by_class", metavar="CLASS=SECONDS,...",
                        help="pre-authorization lifetime by station class, e.g. highway=1800,truck=3600 "
                             "(seconds, 60..86400 each; FUELSWITCH_HOLD_TTL_BY_CLASS); stations of other "
                             "classes use --hold-ttl-s. Classes are set by `fuelswitch admin register-station --class`")
    parser.add_argument("--session-ttl-s", dest="session_ttl_s", type=int,
                        help="terminal session key lifetime, at most 86400 (default)")
    parser.add_argument("--tls-cert", dest="tls_cert", type=Path, help="PEM certificate chain for the gRPC listener")
    parser.add_argument("--tls-key", dest="tls_key", type=Path, help="PEM private key of --tls-cert")
    parser.add_argument("--tls-client-ca", dest="tls_client_ca", type=Path,
                        help="PEM CA bundle: require client certificates signed by it (terminals: CN = terminal id)")
    parser.add_argument("--terminal-requests-per-s", dest="terminal_requests_per_s", type=float,
                        help="per-terminal rate limit, sustained (default 500)")
    parser.add_argument("--terminal-burst", dest="terminal_burst", type=int,
                        help="per-terminal burst above the rate (default 1000)")
    parser.add_argument("--max-concurrent-rpcs", dest="max_concurrent_rpcs", type=int,
                        help="calls in progress before RESOURCE_EXHAUSTED (default 4096)")
    parser.add_argument("--log-level", dest="log_level", help="DEBUG, INFO, WARNING (default INFO)")
    parser.add_argument("--settlement-cutoff-hour", dest="settlement_cutoff_hour", type=int,
                        help="hour (UTC+8, 0..23) at which a settlement business day ends (default 0)")
    parser.add_argument("--settlement-fee-bps", dest="settlement_fee_bps", type=int,
                        help="network fee on station sales, basis points (default 0)")
    parser.add_argument("--reconcile-fee-tolerance-fen", dest="reconcile_fee_tolerance_fen", type=int,
                        help="channel fee differences up to this are not discrepancies (default 0)")
    parser.add_argument("--channel-fee-bps", dest="channel_fee_bps", metavar="CHANNEL=BPS,...",
                        help="contracted channel fee rates, e.g. wechat=60,alipay=60: a payment recorded "
                             "without a fee is reconciled against its channel's rate (default none)")
    parser.add_argument("--metrics-listen", dest="metrics_listen", metavar="HOST:PORT",
                        help="serve Prometheus metrics at http://HOST:PORT/metrics (FUELSWITCH_METRICS_LISTEN; "
                             "default off)")
    parser.add_argument("--log-format", dest="log_format", choices=("text", "json"),
                        help="text (default) or json: one JSON object per line")
    parser.add_argument("--request-log", dest="request_log", choices=("all", "problems", "off"),
                        help="an INFO line per RPC: all, problems (default: answers other than 00/10/OK), off")
    parser.add_argument("--db-probe-interval-s", dest="db_probe_interval_s", type=float,
                        help="seconds between database health probes (default 1)")


CLEARING_COMMANDS = {
    "channels": "payment-channel callback server (fuelswitch channels serve --help)",
    "reconcile": "reconcile a channel statement, list and resolve discrepancies (fuelswitch reconcile --help)",
    "settlement": "per-station settlement batches of a business day, CSV export (fuelswitch settlement --help)",
    "status": "serving state, database, journal, load and key versions of a running switch (fuelswitch status --help)",
}


def _database_flags(parser: argparse.ArgumentParser) -> None:
    """The subset of serve flags a maintenance command needs to find the database and the keys."""
    parser.add_argument("--config", help="TOML file (the serve configuration)")
    parser.add_argument("--data-dir", dest="data_dir", type=Path, help="data directory (FUELSWITCH_DATA_DIR)")
    parser.add_argument("--dsn", help="PostgreSQL DSN; without it the data dir's embedded PostgreSQL is used")
    parser.add_argument("--master-key-file", dest="master_key_file", type=Path, help="file with the master key")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fuelswitch", description="fuel-card authorization and clearing host")
    commands = parser.add_subparsers(dest="command", required=True)
    _serve_flags(commands.add_parser("serve", help="run the switch"))
    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    _database_flags(db_commands.add_parser("migrate", help="apply the schema migrations and exit"))
    db_backup = db_commands.add_parser("backup", help="pg_dump (custom format) of the database to FILE; "
                                                      "the master key is not in it (docs/operations.md)")
    _database_flags(db_backup)
    db_backup.add_argument("file", help="dump file to write")
    db_restore = db_commands.add_parser("restore", help="pg_restore FILE into an empty database "
                                                        "(--dsn, or a new --data-dir's embedded PostgreSQL)")
    _database_flags(db_restore)
    db_restore.add_argument("file", help="dump file written by `fuelswitch db backup` or pg_dump -Fc")
    verify = commands.add_parser("verify", help="check the journal's hash chain and balances against the journal")
    _database_flags(verify)
    keys = commands.add_parser("keys", help="data keys under the master key")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    rotate = key_commands.add_parser("rotate", help="add a new version of data keys (a running switch "
                                                    "uses it within seconds; old versions stay readable)")
    _database_flags(rotate)
    rotate.add_argument("--purpose", action="append", choices=("pan", "pvk", "journal"),
                        help="rotate only this purpose (repeatable; default all)")
    _database_flags(key_commands.add_parser("list", help="show the data-key versions"))
    commands.add_parser("admin", help="operator commands over CardAdmin (fuelswitch admin --help)")
    # These parse their own arguments (switch/channel_gateway.py, switch/clearing_cli.py, switch/status_cli.py).
    for name, text in CLEARING_COMMANDS.items():
        commands.add_parser(name, help=text, add_help=False)
    commands.add_parser("loadtest", add_help=False,  # parses its own arguments (loadtest/cli.py)
                        help="self-checking POS load against the switch and the naive baseline "
                             "(fuelswitch loadtest --help)")
    demo = commands.add_parser("demo", help="start the switch on the embedded PostgreSQL and drive pump traffic")
    demo.add_argument("--duration-s", type=float, default=15.0)
    demo.add_argument("--terminals", type=int, default=16)
    demo.add_argument("--core-only", action="store_true", help="demonstrate the hold/settle core alone")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["admin"]:
        from switch import admin_cli

        return admin_cli.main(argv[1:])
    if argv[:1] == ["loadtest"]:
        from loadtest import cli as loadtest_cli

        return loadtest_cli.main(argv[1:])
    if argv[:1] == ["channels"]:
        from switch import channel_gateway

        return channel_gateway.main(argv[1:])
    if argv[:1] == ["status"]:
        from switch import status_cli

        return status_cli.main(argv[1:])
    if argv[:1] in (["reconcile"], ["settlement"]):
        from switch import clearing_cli

        return clearing_cli.main(argv)
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        if args.core_only:
            from switch.core_demo import run_core_demo

            return run_core_demo()
        from switch.demo import run_demo

        return run_demo(duration_s=args.duration_s, terminals=args.terminals)
    from switch.config import load_config

    try:
        flags = {k: v for k, v in vars(args).items()
                 if k not in ("command", "db_command", "keys_command", "purpose", "file")}
        if args.command != "serve":
            flags["operator_token"] = flags.get("operator_token") or "unused-by-maintenance"
        config = load_config(flags)
    except (ValueError, OSError) as exc:
        print(f"fuelswitch: {exc}", file=sys.stderr)
        return 2
    from switch.logs import configure_logging

    configure_logging(config.log_level, config.log_format)
    if args.command == "serve":
        import uvloop

        from switch.server import serve_forever

        uvloop.run(serve_forever(config))
        return 0
    from switch import maintenance

    command = {"db": maintenance.db_command, "verify": maintenance.verify_command,
               "keys": maintenance.keys_command}[args.command]
    return asyncio.run(command(config, args))


if __name__ == "__main__":
    sys.exit(main())
