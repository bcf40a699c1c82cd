"""Responses identical before and after the request path was rewritten (issue 13): a sample of consults and
notifies, each answer (or error) compared with the one the mesh gave before, recorded in
``golden/consult_responses.json``. Regenerate only on a deliberate change of behaviour:

    MCN_RECORD_GOLDEN=1 .venv/bin/pytest tests/hub/test_consult_golden.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from mycarenet_core.dates import to_proto
from mycarenet_core.errors import parse_rpc_error
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_service_pb2 as pub
from tests.hub.mesh import TODAY, bearer, running_mesh

GOLDEN = Path(__file__).with_name("golden") / "consult_responses.json"
D = TODAY.replace


def _answer(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


async def _record(call: Any) -> dict[str, Any]:
    try:
        return {"ok": _answer(await call)}
    except grpc.RpcError as error:
        parsed = parse_rpc_error(error)
        violations = sorted((v.field, v.code) for v in parsed.violations)
        return {"error": [parsed.status.name, parsed.reason, parsed.code, violations]}


async def test_a_sample_of_consults_and_notifies_answers_as_before(tmp_path: Path) -> None:
    out: dict[str, Any] = {}
    async with running_mesh(tmp_path) as mesh:
        tokens = {
            name: await mesh.login(mesh.people[name]) for name in ("gp_a", "gp_b", "specialist", "dentist")
        }
        patients = {name: spec.niss for name, spec in mesh.members.items()}
        patients["unknown"] = "85073003328"
        n = 0
        for who, token in tokens.items():
            for patient, niss in sorted(patients.items()):
                for when in (TODAY, D(year=TODAY.year - 1), D(year=TODAY.year - 3)):
                    n += 1
                    request = pub.ConsultDmgRequest(
                        requester_reference=f"golden-{n}",
                        patient=common_pb2.PatientSelector(niss=niss),
                        request_date=to_proto(when),
                    )
                    key = f"consult {who} {patient} {when.isoformat()}"
                    out[key] = await _record(mesh.dmg.ConsultDmg(request, metadata=bearer(token), timeout=10))
        # A notify changes the holder: the consults after it must answer the same as before, too.
        notify = pub.NotifyDmgRequest(
            requester_reference="golden-notify",
            patient=common_pb2.PatientSelector(niss=patients["p300"]),
            contact_date=to_proto(TODAY),
            nomenclature_code="101076",
        )
        out["notify gp_b p300"] = await _record(
            mesh.dmg.NotifyDmg(notify, metadata=bearer(tokens["gp_b"]), timeout=10)
        )
        out["notify gp_b p300 again"] = await _record(
            mesh.dmg.NotifyDmg(notify, metadata=bearer(tokens["gp_b"]), timeout=10)
        )
        for who in ("gp_a", "gp_b"):
            request = pub.ConsultDmgRequest(
                requester_reference="golden-after",
                patient=common_pb2.PatientSelector(niss=patients["p300"]),
                request_date=to_proto(TODAY),
            )
            out[f"consult {who} p300 after notify"] = await _record(
                mesh.dmg.ConsultDmg(request, metadata=bearer(tokens[who]), timeout=10)
            )
    if os.environ.get("MCN_RECORD_GOLDEN"):
        GOLDEN.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    expected = json.loads(GOLDEN.read_text())
    assert json.loads(json.dumps(out)) == expected
