"""Token rejections by the hub's local verifier against real eHealth tokens, key rotation, revocation
through the watch stream, the throttling of a systematic consulter, of patient lists (one token per insurer)
and not of attempts that failed through no fault of the provider."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hub.throttle import ThrottleConfig
from mycarenet_core.dates import to_proto
from mycarenet_core.gen.mycarenet.dmg.v1 import mailbox_service_pb2 as mbx
from mycarenet_core.gen.mycarenet.ehealth.v1 import auth_pb2, auth_pb2_grpc
from tests.hub.helpers import consult_request, rejected
from tests.hub.mesh import TODAY, Mesh, bearer, running_mesh


async def reason(mesh: Mesh, metadata: tuple[tuple[str, str], ...]) -> str:
    error = await rejected(
        mesh.dmg.ConsultDmg(consult_request(mesh.members["p100"].niss), metadata=metadata, timeout=5)
    )
    assert error.status.name == "UNAUTHENTICATED"
    return error.reason


def tampered(token: str) -> str:
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["inami"] = "10000202003"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{sig}"


async def test_token_rejections_rotation_and_revocation(tmp_path: Path) -> None:
    async with running_mesh(tmp_path, insurers=("100",)) as mesh:
        gp = mesh.people["gp_a"]
        token = await mesh.login(gp)
        assert await reason(mesh, ()) == "MISSING_TOKEN"
        assert await reason(mesh, (("authorization", "Token abc"),)) == "MALFORMED"
        assert await reason(mesh, bearer("abc.def")) == "MALFORMED"
        assert await reason(mesh, bearer(tampered(token))) == "BAD_SIGNATURE"
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
        foreign = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": "nope"})
        assert await reason(mesh, bearer(foreign)) == "UNKNOWN_KEY"
        same_kid = jwt.encode(
            claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": header["kid"]}
        )
        assert await reason(mesh, bearer(same_kid)) == "BAD_SIGNATURE"
        assert await reason(mesh, bearer(await mesh.login(gp, audience="elsewhere"))) == "WRONG_AUDIENCE"
        # time: the hub verifies with its own clock (shared here with eHealth)
        short = await mesh.login(gp, lifetime_seconds=600)
        mesh.clock.advance(dt.timedelta(hours=1))
        assert await reason(mesh, bearer(short)) == "EXPIRED"
        mesh.clock.advance(dt.timedelta(hours=-3))
        assert await reason(mesh, bearer(token)) == "NOT_YET_VALID"
        mesh.clock.advance(dt.timedelta(hours=2))
        await mesh.dmg.ConsultDmg(
            consult_request(mesh.members["p100"].niss), metadata=bearer(token), timeout=5
        )
        # rotation: new tokens carry a new kid, fetched on first sight; old tokens still verify
        auth = auth_pb2_grpc.AuthServiceStub(mesh.ehealth_admin)
        await auth.RotateSigningKey(auth_pb2.RotateSigningKeyRequest(), timeout=5)
        fresh = await mesh.login(gp)
        assert jwt.get_unverified_header(fresh)["kid"] != header["kid"]
        for t in (fresh, token):
            await mesh.dmg.ConsultDmg(
                consult_request(mesh.members["p100"].niss), metadata=bearer(t), timeout=5
            )
        # logout: the revocation reaches the hub through the watch stream, no call per request
        await mesh.logout(token)
        deadline = time.monotonic() + 5
        while True:
            try:
                await mesh.dmg.ConsultDmg(
                    consult_request(mesh.members["p100"].niss), metadata=bearer(token), timeout=5
                )
            except Exception:
                break
            assert time.monotonic() < deadline, "revocation never reached the hub"
            await asyncio.sleep(0.05)
        assert await reason(mesh, bearer(token)) == "REVOKED"
        await mesh.dmg.ConsultDmg(
            consult_request(mesh.members["p100"].niss), metadata=bearer(fresh), timeout=5
        )


async def test_a_systematic_consulter_is_throttled_and_others_are_not(tmp_path: Path) -> None:
    async with running_mesh(tmp_path, insurers=("100",), throttle=ThrottleConfig(rate=2, burst=10)) as mesh:
        robot = bearer(await mesh.login(mesh.people["gp_a"]))
        human = bearer(await mesh.login(mesh.people["specialist"]))
        patient = mesh.members["p100"].niss
        served = 0
        refused = None
        for i in range(40):  # a script consulting as fast as it can
            try:
                await mesh.dmg.ConsultDmg(
                    consult_request(patient, reference=f"bot-{i}"), metadata=robot, timeout=5
                )
                served += 1
            except Exception:
                refused = await rejected(
                    mesh.dmg.ConsultDmg(
                        consult_request(patient, reference="bot-x"), metadata=robot, timeout=5
                    )
                )
                break
        assert refused is not None, "never throttled"
        assert 10 <= served <= 14  # the burst, plus what trickled in meanwhile
        assert (refused.status.name, refused.reason) == ("RESOURCE_EXHAUSTED", "THROTTLED")
        assert refused.retry_after_seconds is not None
        assert 0 < refused.retry_after_seconds <= 0.5
        # normal use by someone else is untouched
        for i in range(3):
            await mesh.dmg.ConsultDmg(
                consult_request(patient, reference=f"human-{i}"), metadata=human, timeout=5
            )
        # after the advertised delay the robot may go on, at the sustained rate
        await asyncio.sleep(refused.retry_after_seconds + 0.05)
        await mesh.dmg.ConsultDmg(consult_request(patient, reference="bot-later"), metadata=robot, timeout=5)


async def test_failed_attempts_give_their_tokens_back_and_a_patient_list_costs_one_per_insurer(
    tmp_path: Path,
) -> None:
    """Issue 17: attempts that fail through no fault of the provider (the insurer down: UNAVAILABLE) do not
    use up its throttle; a PostPatientList takes one token per insurer it asks."""
    config = ThrottleConfig(rate=0.01, burst=6)  # hardly any refill during the test
    async with running_mesh(tmp_path, insurers=("100", "200"), throttle=config) as mesh:
        assert mesh.hub is not None
        gp = bearer(await mesh.login(mesh.people["gp_a"]))
        patient = mesh.members["p100"].niss
        await mesh.stop_oa("100")
        for i in range(12):  # twice the burst, all failing because the insurer is down
            error = await rejected(
                mesh.dmg.ConsultDmg(consult_request(patient, reference=f"down-{i}"), metadata=gp, timeout=5)
            )
            assert error.status.name == "UNAVAILABLE", error
        await mesh.start_oa("100")
        await asyncio.sleep(1.1)  # the hub's breaker to insurer 100 lets a trial through (FAST: 1 s)
        for i in range(6):  # the whole burst is still there
            await mesh.dmg.ConsultDmg(consult_request(patient, reference=f"up-{i}"), metadata=gp, timeout=5)
        throttled = await rejected(
            mesh.dmg.ConsultDmg(consult_request(patient, reference="up-x"), metadata=gp, timeout=5)
        )
        assert (throttled.status.name, throttled.reason) == ("RESOURCE_EXHAUSTED", "THROTTLED")

        other = bearer(await mesh.login(mesh.people["gp_b"]))
        for i in range(3):  # a list to both insurers costs two tokens: three fit in a burst of six
            post = mbx.PostPatientListRequest(requester_reference=f"list-{i}", reference_date=to_proto(TODAY))
            await mesh.mailbox.PostPatientList(post, metadata=other, timeout=5)
        post = mbx.PostPatientListRequest(requester_reference="list-x", reference_date=to_proto(TODAY))
        error = await rejected(mesh.mailbox.PostPatientList(post, metadata=other, timeout=5))
        assert (error.status.name, error.reason) == ("RESOURCE_EXHAUSTED", "THROTTLED")
