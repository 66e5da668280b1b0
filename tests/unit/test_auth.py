"""HTTP Basic authentication pieces: credentials files in both of Mesos' forms, the header
check, which realm a request belongs to, and a framework bound to its principal."""

from __future__ import annotations

import json

import msgspec
import pytest

from butte.core import internal
from butte.core.auth import (
    CredentialsError,
    authenticated_principal,
    basic_header,
    parse_credential,
    parse_credentials,
)
from butte.core.messages import SchedulerCall, decode
from butte.master.acls import Acls, parse_acls
from butte.master.auth import (
    AuthConfig,
    Authenticator,
    agent_registration_refusal,
    framework_principal_error,
    realm_of,
)


def test_credentials_files_in_json_and_text() -> None:
    text = (
        '{"credentials": [{"principal": "ops", "secret": "s1"},'
        ' {"principal": "fw", "secret": "s 2"}]}'
    )
    assert parse_credentials(text) == {"ops": "s1", "fw": "s 2"}
    assert parse_credentials("# comment\nops s1\n\nfw  s 2\n") == {"ops": "s1", "fw": "s 2"}
    assert parse_credential('{"principal": "agent", "secret": "x"}') == ("agent", "x")
    for bad in ("", "ops", '{"credentials": [{"principal": "p"}]}', "{not json", "[1]"):
        with pytest.raises(CredentialsError) as e:
            parse_credentials(bad)
        assert "s1" not in str(e.value)
    with pytest.raises(CredentialsError):
        parse_credential("a b\nc d")


def test_basic_header_check() -> None:
    creds = {"ops": "s3cret"}
    assert authenticated_principal(basic_header("ops", "s3cret"), creds) == "ops"
    for header in (
        None,
        "",
        basic_header("ops", "wrong"),
        basic_header("nobody", "s3cret"),
        "Bearer abc",
        "Basic !!!",
        "Basic " + "b3Bz",  # "ops" without a colon
    ):
        assert authenticated_principal(header, creds) is None, header


@pytest.mark.parametrize(
    ("path", "method", "realm"),
    [
        ("/health", "GET", None),
        ("/master/version", "GET", None),
        ("/api/v1/scheduler", "POST", "frameworks"),
        ("/master/api/v1/scheduler", "POST", "frameworks"),
        ("/api/v1/internal/agent", "GET", "agents"),
        ("/api/v1", "POST", "readwrite"),
        ("/api/v1/operator", "POST", "readwrite"),
        ("/teardown", "POST", "readwrite"),
        ("/weights", "PUT", "readwrite"),
        ("/state", "GET", "readonly"),
        ("/master/state.json", "GET", "readonly"),
        ("/files/read", "GET", "readonly"),
        ("/", "GET", "readonly"),
    ],
)
def test_realms(path: str, method: str, realm: str | None) -> None:
    assert realm_of(path, method) == realm


def test_only_the_enabled_realms_ask_for_credentials() -> None:
    auth = Authenticator(AuthConfig(credentials={"ops": "s"}, readwrite=True))
    assert auth.check("/state", "GET", None) == (None, None)  # readonly is off
    principal, refusal = auth.check("/api/v1", "POST", None)
    assert principal is None and refusal is not None
    assert refusal.headers == {"WWW-Authenticate": 'Basic realm="mesos-master-readwrite"'}
    assert auth.check("/api/v1", "POST", basic_header("ops", "s")) == ("ops", None)
    assert auth.scheduler_principal(None) == (True, None)  # frameworks are not checked


def test_a_framework_acts_only_as_its_principal() -> None:
    def subscribe(principal: str | None) -> SchedulerCall:
        info = {"user": "u", "name": "n", **({"principal": principal} if principal else {})}
        return decode(
            b'{"type":"SUBSCRIBE","subscribe":{"framework_info":%s}}'
            % str(info).replace("'", '"').encode(),
            SchedulerCall,
        )

    assert framework_principal_error(subscribe("a"), None, False) is None  # auth off
    assert framework_principal_error(subscribe("a"), "a", False) is None
    assert framework_principal_error(subscribe(None), "a", False) is None
    # Mesos' texts (src/master/validation.cpp, src/master/http.cpp), answered with 400.
    assert framework_principal_error(subscribe("b"), "a", False) == (
        "Failed to validate scheduler::Call: Authenticated principal 'a' does not match "
        "principal 'b' set in `FrameworkInfo`"
    )
    # Re-subscribing with another principal's framework id: the core refuses it on the
    # stream ("Changing framework's principal is not allowed."), as Mesos does.
    assert framework_principal_error(subscribe("a"), "a", "b") is None
    revive = decode(b'{"type":"REVIVE","framework_id":{"value":"f"}}', SchedulerCall)
    assert framework_principal_error(revive, "a", "a") is None
    assert framework_principal_error(revive, "a", "b") == (
        "Authenticated principal 'a' does not match principal 'b' set in `FrameworkInfo`"
    )
    assert framework_principal_error(revive, "a", None) is not None


def _agent(resources: list[dict], agent_id: str | None = None) -> internal.AgentInfo:
    raw = {"hostname": "h1", "port": 5051, "resources": resources}
    if agent_id is not None:
        raw["id"] = {"value": agent_id}
    return msgspec.convert(raw, internal.AgentInfo)


def test_the_register_agents_acl_decides_which_agents_may_register() -> None:
    """Mesos' ``ActionObject::agentRegistration``: ``register_agents`` for the agent's
    principal, and ``reserve_resources`` for each role of its static reservations."""
    acls = parse_acls(
        json.dumps(
            {
                "permissive": False,
                "register_agents": [{"principals": {"values": ["agent1"]}}],
                "reserve_resources": [
                    {"principals": {"values": ["agent1"]}, "roles": {"values": ["db"]}}
                ],
            }
        )
    )
    cpus = {"name": "cpus", "type": "SCALAR", "scalar": {"value": 2}}
    reserved = {**cpus, "reservations": [{"type": "STATIC", "role": "db"}]}
    web = {**cpus, "reservations": [{"type": "STATIC", "role": "web"}]}
    assert agent_registration_refusal(acls, "agent1", _agent([cpus])) is None
    assert agent_registration_refusal(acls, "agent1", _agent([reserved])) is None
    assert agent_registration_refusal(acls, "bob", _agent([cpus])) == (
        "Not authorized to register agent with principal 'bob'"
    )
    assert agent_registration_refusal(acls, None, _agent([cpus], "a-1")) == (
        "Not authorized to reregister agent without a principal"
    )
    refusal = agent_registration_refusal(acls, "agent1", _agent([web]))
    assert (
        refusal
        == "Not authorized to register agent reserving for role 'web' with principal 'agent1'"
    )
    # Without ACLs (or permissive ones without rules) every agent registers, unparsed.
    assert agent_registration_refusal(Acls(), "bob", _agent([{"bad": 1}])) is None
