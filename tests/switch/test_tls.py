"""TLS on the gRPC listener, optional client certificates binding a terminal to its id."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from loadtest.provision import provision
from loadtest.terminal import Terminal
from switch.config import ServeConfig
from switch.server import start_switch
from tests.switch.conftest import OPERATOR_TOKEN


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _certificate(common_name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
                 *, server: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1)))
    if issuer is None:  # a self-signed CA
        builder = builder.issuer_name(name).add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        return builder.sign(key, hashes.SHA256()), key
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
    return builder.issuer_name(issuer[0].subject).sign(issuer[1], hashes.SHA256()), key


@pytest.fixture
def pki(tmp_path):
    ca = _certificate("fuelswitch test CA")
    server_cert, server_key = _certificate("localhost", ca, server=True)
    files = {"ca": ca[0].public_bytes(serialization.Encoding.PEM),
             "cert": server_cert.public_bytes(serialization.Encoding.PEM), "key": _pem_key(server_key)}
    for name, data in files.items():
        (tmp_path / f"{name}.pem").write_bytes(data)

    def client(common_name: str) -> tuple[bytes, bytes]:
        cert, key = _certificate(common_name, ca)
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)

    return tmp_path, files["ca"], client


def _secure(port: int, ca: bytes, client: tuple[bytes, bytes] | None = None) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(ca, *(reversed(client) if client else ()))
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials,
                                   options=[("grpc.ssl_target_name_override", "localhost")])


async def test_tls_listener_serves_terminals_and_refuses_plaintext(switch_config, pki):
    folder, ca, _ = pki
    config = dataclasses.replace(switch_config, tls_cert=folder / "cert.pem", tls_key=folder / "key.pem")
    running = await start_switch(config)
    try:
        async with _secure(running.port, ca) as channel:
            network = await provision(channel, OPERATOR_TOKEN, terminals=1, cards=1, balance_fen=5_000)
            spec, card = network.terminals[0], network.cards[0]
            terminal = Terminal(channel, spec.terminal_id, spec.private_key_hex, spec.public_key_hex)
            await terminal.sign_on()
            assert (await terminal.balance_inquiry(card.pan, card.pin)).response.balance == 5_000
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as plain:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await Terminal(plain, spec.terminal_id, spec.private_key_hex, spec.public_key_hex).sign_on()
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await running.stop(1.0)


async def test_client_certificates_bind_a_terminal_to_its_id(switch_config, pki):
    folder, ca, client = pki
    config = dataclasses.replace(switch_config, tls_cert=folder / "cert.pem", tls_key=folder / "key.pem",
                                 tls_client_ca=folder / "ca.pem")
    running = await start_switch(config)
    try:
        async with _secure(running.port, ca, client("operator")) as channel:
            network = await provision(channel, OPERATOR_TOKEN, terminals=2, cards=1, balance_fen=5_000)
        mine, other = network.terminals
        card = network.cards[0]
        async with _secure(running.port, ca, client(mine.terminal_id)) as channel:
            terminal = Terminal(channel, mine.terminal_id, mine.private_key_hex, mine.public_key_hex)
            await terminal.sign_on()
            assert (await terminal.balance_inquiry(card.pan, card.pin)).response.response_code == "00"
            # The same certificate cannot speak for another terminal, even with that terminal's keys:
            # not even sign on as it.
            impostor = Terminal(channel, other.terminal_id, other.private_key_hex, other.public_key_hex)
            with pytest.raises(grpc.aio.AioRpcError) as mismatch:
                await impostor.sign_on()
            assert mismatch.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "certificate-mismatch" in (mismatch.value.details() or "")
        async with _secure(running.port, ca) as anonymous:  # no client certificate: no connection
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await Terminal(anonymous, mine.terminal_id, mine.private_key_hex, mine.public_key_hex).sign_on()
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await running.stop(1.0)


def test_plaintext_is_refused_off_loopback(tmp_path):
    with pytest.raises(ValueError, match="without TLS"):
        ServeConfig(listen="0.0.0.0:50051", data_dir=tmp_path, operator_token="t").validate()
    with pytest.raises(ValueError, match="go together"):
        ServeConfig(operator_token="t", tls_cert=tmp_path / "c.pem").validate()
    ServeConfig(listen="0.0.0.0:50051", operator_token="t", tls_cert=tmp_path / "c.pem",
                tls_key=tmp_path / "k.pem").validate()


async def test_operator_clis_connect_over_tls_with_a_client_certificate(switch_config, pki):
    import asyncio
    import io
    import json

    from switch import admin_cli, status_cli

    folder, _, client = pki
    cert, key = client("operator")
    (folder / "op.pem").write_bytes(cert)
    (folder / "op.key").write_bytes(key)
    config = dataclasses.replace(switch_config, tls_cert=folder / "cert.pem", tls_key=folder / "key.pem",
                                 tls_client_ca=folder / "ca.pem")
    running = await start_switch(config)
    target = f"127.0.0.1:{running.port}"
    tls = ["--tls-ca", str(folder / "ca.pem"), "--tls-cert", str(folder / "op.pem"), "--tls-key", str(folder / "op.key")]

    async def run(main, argv):
        out, err = io.StringIO(), io.StringIO()
        code = await asyncio.to_thread(main, argv, stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    try:
        code, out, _ = await run(status_cli.main, ["--target", target, "--token", OPERATOR_TOKEN, "--json", *tls])
        assert code == 0 and '"serving": "SERVING"' in out
        code, out, _ = await run(admin_cli.main, ["--target", target, "--token", OPERATOR_TOKEN, "--json",
                                                  "create-account", "--kind", "personal", "--holder", "王五", *tls])
        assert code == 0 and json.loads(out)["holder_name"] == "王五"
        # Without the CA the CLI speaks plaintext to a TLS listener: no answer, said plainly.
        code, _, err = await run(status_cli.main, ["--target", target, "--token", OPERATOR_TOKEN, "--timeout", "2"])
        assert code == status_cli.EXIT_UNREACHABLE and "no answer" in err
        code, _, err = await run(status_cli.main, ["--target", target, "--token", OPERATOR_TOKEN,
                                                   "--tls-cert", str(folder / "op.pem")])
        assert code == status_cli.EXIT_USAGE and "--tls-key" in err
    finally:
        await running.stop(1.0)
