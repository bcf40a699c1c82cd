"""Telemetry of the in-process mesh (eHealth, hub, seven OA nodes on port 0, one set of providers with an
in-memory exporter): the patient-list fan-out has one child span per OA, failures are recorded with their
status and MyCareNet code, the hub's client histograms are per OA, and no span carries a NISS in clear."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from mycarenet_core import telemetry
from mycarenet_core.dates import to_proto
from mycarenet_core.errors import McnCode
from mycarenet_core.gen.mycarenet.dmg.v1 import mailbox_service_pb2 as mbx
from mycarenet_core.identifiers import INSURER_CODES, make_niss
from tests.hub.helpers import consult_request, notify_request, rejected
from tests.hub.mesh import TODAY, bearer, running_mesh
from tests.hub.test_patient_list import list_message

LIST_HOLDINGS = "/mycarenet.oa.v1.OaDmgService/ListHoldings"


def _children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def _texts(span: ReadableSpan) -> Iterator[str]:
    yield span.name
    yield span.status.description or ""
    for attrs in [span.attributes, *(e.attributes for e in span.events), *(x.attributes for x in span.links)]:
        for key, value in (attrs or {}).items():
            yield f"{key}={value}"


async def test_fan_out_errors_per_oa_metrics_and_no_niss_in_clear(tmp_path: Path) -> None:
    spans = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    key = bytes.fromhex(telemetry.new_patient_key())
    tel = telemetry.setup("mesh", span_exporters=[spans], metric_readers=[reader], patient_key=key)
    try:
        async with running_mesh(tmp_path, telemetry=tel) as mesh:
            token = await mesh.login(mesh.people["gp_a"])
            held = mesh.members["p300"].niss
            await mesh.dmg.NotifyDmg(notify_request(held, "hold-300"), metadata=bearer(token), timeout=5)
            unknown = make_niss(dt.date(1990, 1, 1), 123)
            error = await rejected(
                mesh.dmg.ConsultDmg(consult_request(unknown, reference="c-unknown"), metadata=bearer(token))
            )
            assert error.code == McnCode.PATIENT_UNKNOWN
            post = mbx.PostPatientListRequest(requester_reference="list-t", reference_date=to_proto(TODAY))
            ack = await mesh.mailbox.PostPatientList(post, metadata=bearer(token), timeout=5)
            message = await list_message(mesh, token, ack.technical_ack.reference)
            assert len(message.insurers) == len(INSURER_CODES)
            patients = {m.niss for m in mesh.members.values()} | {p.niss for p in mesh.people.values()}
    finally:
        tel.shutdown()
    finished = list(spans.get_finished_spans())

    # The fan-out: a child of the post's server span, one child per OA, each calling its OA.
    posts = [s for s in finished if s.name == "/mycarenet.dmg.v1.MailboxService/PostPatientList"]
    assert len(posts) == 1
    fan_out = [s for s in _children(finished, posts[0]) if s.name == "patient_list.fan_out"]
    assert len(fan_out) == 1
    per_oa = [s for s in _children(finished, fan_out[0]) if s.name == "patient_list.oa"]
    assert sorted(str((s.attributes or {})["mycarenet.oa"]) for s in per_oa) == sorted(INSURER_CODES)
    for oa_span in per_oa:
        calls = [s for s in _children(finished, oa_span) if s.kind == SpanKind.CLIENT]
        assert [c.name for c in calls] == [LIST_HOLDINGS]
        assert (calls[0].attributes or {})["mycarenet.oa"] == (oa_span.attributes or {})["mycarenet.oa"]
        served = _children(finished, calls[0])
        assert [(s.name, s.kind) for s in served] == [(LIST_HOLDINGS, SpanKind.SERVER)]

    # A rejection: ERROR status, the gRPC status code and the MyCareNet code on the hub's server span.
    failed = [
        s
        for s in finished
        if s.kind == SpanKind.SERVER
        and (s.attributes or {}).get("mycarenet.requester_reference") == "c-unknown"
    ]
    assert len(failed) == 1, [s.name for s in finished if s.kind == SpanKind.SERVER]
    rejected_span = failed[0]
    attrs: dict[str, Any] = dict(rejected_span.attributes or {})
    assert rejected_span.status.status_code == StatusCode.ERROR
    assert attrs["rpc.grpc.status_code"] == 5  # NOT_FOUND
    assert attrs["mycarenet.code"] == str(int(McnCode.PATIENT_UNKNOWN))
    assert attrs["mycarenet.reason"] == "PATIENT_UNKNOWN"
    assert attrs["mycarenet.patient"] == telemetry.pseudonymise(unknown, key)

    # Never a NISS in clear, anywhere.
    leaks = [
        (s.name, n)
        for s in finished
        for text in _texts(s)
        for n in re.findall(r"(?<!\d)\d{11}(?!\d)", text)
        if n in patients | {unknown}
    ]
    assert not leaks, leaks[:10]
    assert any(
        (s.attributes or {}).get("mycarenet.patient") == telemetry.pseudonymise(held, key) for s in finished
    )

    # The hub's outbound histogram is per OA (and per method and status).
    data = reader.get_metrics_data()
    assert data is not None
    found = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    points = found["rpc.client.duration"].data.data_points
    oas = {
        dict(p.attributes or {}).get("mycarenet.oa") for p in points if "ListHoldings" in str(p.attributes)
    }
    assert oas == set(INSURER_CODES)
    gauges = {"mycarenet.routing.index.size", "mycarenet.mailbox.size", "mycarenet.outbox.backlog"}
    assert gauges <= set(found)
