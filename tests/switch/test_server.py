"""The server's surroundings: health, reflection, configuration precedence, graceful stop."""

from __future__ import annotations

from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from switch.config import load_config


async def test_health_and_reflection(switch, channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "fuelswitch.v1.PosGateway", "fuelswitch.v1.CardAdmin"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = [a async for a in stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))]
    names = {s.name for s in answers[0].list_services_response.service}
    assert {"fuelswitch.v1.PosGateway", "fuelswitch.v1.CardAdmin", "grpc.health.v1.Health"} <= names


def test_config_precedence_flags_over_environment_over_file(tmp_path: Path):
    toml = tmp_path / "fuelswitch.toml"
    toml.write_text('listen = "127.0.0.1:7000"\noperator_token = "from-file"\nhold_ttl_s = 600\n')
    env = {"FUELSWITCH_OPERATOR_TOKEN": "from-env", "FUELSWITCH_HOLD_TTL_S": "1200"}
    config = load_config({"config": str(toml), "hold_ttl_s": 300}, env)
    assert (config.listen, config.operator_token, config.hold_ttl_s) == ("127.0.0.1:7000", "from-env", 300)


@pytest.mark.parametrize(
    ("flags", "message"),
    [({}, "operator token"), ({"operator_token": "t", "listen": "nowhere"}, "HOST:PORT"),
     ({"operator_token": "t", "bogus": 1}, None)],
)
def test_config_refuses_bad_settings(tmp_path, flags, message):
    if message is None:  # unknown flags are simply not configuration keys
        assert load_config(flags, {}).operator_token == "t"
        return
    with pytest.raises(ValueError, match=message):
        load_config(flags, {})


def test_config_refuses_unknown_file_keys(tmp_path):
    toml = tmp_path / "bad.toml"
    toml.write_text('operator_token = "x"\nlisten_addr = "1"\n')
    with pytest.raises(ValueError, match="unknown configuration keys: listen_addr"):
        load_config({"config": str(toml)}, {})
