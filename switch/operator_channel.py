"""The gRPC channel the operator CLIs open to the switch: plain on loopback, TLS when asked.

`fuelswitch serve --tls-cert/--tls-key` (and `--tls-client-ca`) puts TLS (and client certificates) on
every service, the operator APIs included; `--tls-ca` (or $FUELSWITCH_TLS_CA) makes a CLI verify the
switch's certificate against that CA, and `--tls-cert/--tls-key` present a client certificate.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import grpc
import grpc.aio

ENV_TLS_CA = "FUELSWITCH_TLS_CA"


class TlsOptionsError(ValueError):
    """The TLS options do not go together, or a file cannot be read."""


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-ca", type=Path, metavar="PEM",
                        help=f"connect with TLS, trusting this CA for the switch's certificate (${ENV_TLS_CA})")
    parser.add_argument("--tls-cert", type=Path, metavar="PEM",
                        help="client certificate chain, for a switch started with --tls-client-ca")
    parser.add_argument("--tls-key", type=Path, metavar="PEM", help="private key of --tls-cert")


def credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS credentials from the parsed arguments, or None for a plain channel; ValueError if inconsistent."""
    ca = getattr(args, "tls_ca", None) or (Path(os.environ[ENV_TLS_CA]) if os.environ.get(ENV_TLS_CA) else None)
    cert, key = getattr(args, "tls_cert", None), getattr(args, "tls_key", None)
    if (cert is None) != (key is None):
        raise TlsOptionsError("--tls-cert and --tls-key go together")
    if ca is None:
        if cert is not None:
            raise TlsOptionsError("--tls-cert needs --tls-ca (the CA of the switch's certificate)")
        return None
    try:
        return grpc.ssl_channel_credentials(
            ca.read_bytes(), key.read_bytes() if key else None, cert.read_bytes() if cert else None)
    except OSError as exc:
        raise TlsOptionsError(f"cannot read a TLS file: {exc}") from exc


def channel(target: str, args: argparse.Namespace) -> grpc.Channel:
    creds = credentials(args)
    return grpc.secure_channel(target, creds) if creds else grpc.insecure_channel(target)


def aio_channel(target: str, args: argparse.Namespace) -> grpc.aio.Channel:
    creds = credentials(args)
    return grpc.aio.secure_channel(target, creds) if creds else grpc.aio.insecure_channel(target)
