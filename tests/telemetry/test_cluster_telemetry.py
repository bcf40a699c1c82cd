"""Issue 7, done when: the REAL multi-process cluster exports its traces over OTLP to a receiver this test
runs; a consult and a notify made with the SDK are each ONE trace from the client through the hub to the OA
node and down to its database, with correct parent links (issue 13: the hub answers the therapeutic-relation
check from its cache of eHealth's relation log, so a consult is two hops and its trace has no eHealth
span); the closure the notify causes carries the notify's trace context to its delivery and its pick-up
(span links); every process serves Prometheus metrics with the RPC histograms and the gauges; no span
carries a NISS in clear.

One cluster (``--otlp-endpoint``, ``--metrics``) serves the whole module; the story (consult, notify,
pick-up by the previous holder) runs once, in its own event loop, and each test checks one part of it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mycarenet_sdk
import pytest

from mycarenet_core import telemetry
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from tests.cluster.cluster_support import Cluster, free_base_port
from tests.telemetry.otlp_receiver import OtlpReceiver, ReceivedSpan

TODAY = dt.date(2026, 11, 20)
POPULATION = 40  # members seeded (the demo actors play the story)
CLIENT_SERVICE = "test-client"
CONSULT = "/mycarenet.dmg.v1.DmgService/ConsultDmg"
NOTIFY = "/mycarenet.dmg.v1.DmgService/NotifyDmg"
CHECK_RELATION = "/mycarenet.ehealth.v1.TherapeuticRelationService/CheckRelation"
LIST_RELATION_CHANGES = "/mycarenet.ehealth.v1.TherapeuticRelationService/ListRelationChanges"
OA_CONSULT = "/mycarenet.oa.v1.OaDmgService/ConsultDmg"
OA_NOTIFY = "/mycarenet.oa.v1.OaDmgService/NotifyDmg"
GET_MESSAGES = "/mycarenet.dmg.v1.MailboxService/GetMessages"


@dataclass
class Story:
    desc: dict[str, Any]
    receiver: OtlpReceiver
    patient: str
    insurer: str
    consult_reference: str
    notify_reference: str
    closure: dmg_pb2.MailboxMessage
    patient_key: bytes  # the cluster's own pseudonymisation key (its data folder)


async def _play(desc: dict[str, Any], endpoint: str) -> tuple[str, str, str, dmg_pb2.MailboxMessage]:
    """GP B consults and notifies (taking the DMG over from GP A); GP A picks up the closure."""
    tls, demo = desc["tls"], desc["demo"]
    address = {p["name"]: p["address"] for p in desc["processes"]}
    keys = Path(desc["keys"])
    client_tel = telemetry.setup(CLIENT_SERVICE, otlp_endpoint=endpoint, server=False)

    def connect() -> mycarenet_sdk.Client:
        return mycarenet_sdk.connect(
            hub=address["hub"],
            ehealth=address["ehealth"],
            ca=Path(tls["ca"]),
            cert=Path(tls["client_cert"]),
            key=Path(tls["client_key"]),
            telemetry=client_tel,
        )

    try:
        async with connect() as b:
            await b.login(demo["gp_b"], keys / f"{demo['gp_b']}.pem")
            consulted = await b.consult(demo["patient"], date=TODAY, reference="trace-consult")
            assert consulted.holding.holder.inami == demo["gp_a"]
            notified = await b.notify(
                demo["patient"], contact_date=TODAY, nomenclature_code="101076", reference="trace-notify"
            )
            assert notified.holder.inami == demo["gp_b"]
        async with connect() as a:
            await a.login(demo["gp_a"], keys / f"{demo['gp_a']}.pem")
            deadline = time.monotonic() + 30
            while True:
                page = await a.get_messages(kinds=[dmg_pb2.MESSAGE_KIND_CLOSURE])
                found = [m for m in page.messages if m.closure.patient.niss == demo["patient"]]
                if found:
                    break
                assert time.monotonic() < deadline, "GP A never received the closure"
                await asyncio.sleep(0.3)
    finally:
        client_tel.shutdown()  # flushes the client's spans to the receiver
    return consulted.insurer_code, "trace-consult", "trace-notify", found[0]


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    receiver = OtlpReceiver().start()
    data = tmp_path_factory.mktemp("telemetry") / "data"
    cluster = Cluster(
        data,
        free_base_port(metrics=True),
        population=POPULATION,
        extra_args=["--otlp-endpoint", receiver.endpoint, "--metrics"],
        env={"OTEL_BSP_SCHEDULE_DELAY": "200"},  # the supervisor passes it on to every process
    )
    try:
        desc = cluster.up(TODAY.isoformat())
        insurer, consult_ref, notify_ref, closure = asyncio.run(_play(desc, receiver.endpoint))
        key_file = data / "pki" / "telemetry.key"
        key = telemetry.read_patient_key(key_file.read_text(), str(key_file))
        yield Story(desc, receiver, desc["demo"]["patient"], insurer, consult_ref, notify_ref, closure, key)
    finally:
        cluster.down()
        receiver.stop()


# --- helpers ---------------------------------------------------------------------------------------------


def one(spans: list[ReceivedSpan], **want: Any) -> ReceivedSpan:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in want.items())]
    assert len(found) == 1, (want, [(s.service, s.name, s.kind) for s in found])
    return found[0]


def children(spans: list[ReceivedSpan], parent: ReceivedSpan, **want: Any) -> list[ReceivedSpan]:
    return [
        s
        for s in spans
        if s.parent_id == parent.span_id
        and s.trace_id == parent.trace_id
        and all(getattr(s, k) == v for k, v in want.items())
    ]


def descendants(spans: list[ReceivedSpan], root: ReceivedSpan) -> list[ReceivedSpan]:
    out, frontier = [], [root]
    while frontier:
        node = frontier.pop()
        kids = children(spans, node)
        out += kids
        frontier += kids
    return out


def is_db(span: ReceivedSpan) -> bool:
    return "db.system" in span.attributes or "db.system.name" in span.attributes


def client_span(spans: list[ReceivedSpan], method: str, reference: str) -> ReceivedSpan:
    """The SDK's client span of the call whose hub server span carries ``reference``."""
    server = one(
        spans, service="hub", kind="SERVER", name=method, attributes=_with_reference(spans, method, reference)
    )
    return one(spans, service=CLIENT_SERVICE, span_id=server.parent_id)


def _with_reference(spans: list[ReceivedSpan], method: str, reference: str) -> dict[str, Any]:
    found = [
        s.attributes
        for s in spans
        if s.service == "hub"
        and s.name == method
        and s.attributes.get("mycarenet.requester_reference") == reference
    ]
    assert found, f"no hub span for {method} {reference}"
    return found[0]


def assert_chain(
    spans: list[ReceivedSpan], method: str, oa_method: str, reference: str, story: Story
) -> ReceivedSpan:
    """client → hub server → hub client → OA server → database, one trace, without a call to eHealth (the
    hub's relation cache is current); returns the OA server span."""
    oa_service = f"oa-{story.insurer}"
    client = client_span(spans, method, reference)
    assert client.kind == "CLIENT"
    trace = client.trace_id
    hub = one(spans, service="hub", kind="SERVER", parent_id=client.span_id)
    assert hub.trace_id == trace
    assert hub.attributes["mycarenet.oa"] == story.insurer
    assert hub.attributes["mycarenet.patient"] == telemetry.pseudonymise(story.patient, story.patient_key)

    to_ehealth = children(spans, hub, service="hub", kind="CLIENT", name=CHECK_RELATION)
    assert to_ehealth == [], [s.name for s in children(spans, hub)]

    to_oa = children(spans, hub, service="hub", kind="CLIENT", name=oa_method)
    assert len(to_oa) == 1
    assert to_oa[0].attributes["mycarenet.oa"] == story.insurer
    oa = children(spans, to_oa[0], service=oa_service, kind="SERVER", name=oa_method)
    assert len(oa) == 1
    assert oa[0].attributes["mycarenet.oa"] == story.insurer
    assert oa[0].attributes["mycarenet.requester_reference"] == reference
    oa_db = [s for s in descendants(spans, oa[0]) if is_db(s)]
    assert oa_db
    assert {s.service for s in oa_db} == {oa_service}
    assert {s.trace_id for s in [client, hub, *to_oa, *oa, *oa_db]} == {trace}
    return oa[0]


def _wait_chain(story: Story, method: str, oa_method: str, reference: str) -> list[ReceivedSpan]:
    def complete(spans: list[ReceivedSpan]) -> bool:
        try:
            assert_chain(spans, method, oa_method, reference, story)
        except AssertionError:
            return False
        return True

    try:
        return story.receiver.wait_for(complete, timeout=30)
    except AssertionError:
        spans = story.receiver.spans()
        assert_chain(spans, method, oa_method, reference, story)  # fails with the precise reason
        raise


# --- the tests -------------------------------------------------------------------------------------------


def test_consult_and_notify_are_each_one_trace_from_client_to_databases(story: Story) -> None:
    _wait_chain(story, CONSULT, OA_CONSULT, story.consult_reference)
    spans = _wait_chain(story, NOTIFY, OA_NOTIFY, story.notify_reference)
    consult = client_span(spans, CONSULT, story.consult_reference)
    notify = client_span(spans, NOTIFY, story.notify_reference)
    assert consult.trace_id != notify.trace_id  # one trace per call
    # Health checks (the supervisor polls them) are never traced.
    assert not [s for s in spans if "grpc.health" in s.name]


def test_closure_carries_the_notify_trace_to_its_delivery_and_pick_up(story: Story) -> None:
    spans = _wait_chain(story, NOTIFY, OA_NOTIFY, story.notify_reference)
    oa_notify = assert_chain(spans, NOTIFY, OA_NOTIFY, story.notify_reference, story)
    closure = story.closure
    # The message carries the W3C context of the OA's NotifyDmg span (written inside it).
    version, trace_id, span_id, _flags = closure.traceparent.split("-")
    assert version == "00"
    assert (trace_id, span_id) == (oa_notify.trace_id, oa_notify.span_id)

    def linked(s: ReceivedSpan) -> bool:
        return any(
            link.trace_id == trace_id
            and link.span_id == span_id
            and link.attributes.get("messaging.message.id") == closure.message_id
            for link in s.links
        )

    spans = story.receiver.wait_for(
        lambda ss: {s.name for s in ss if linked(s)} >= {"outbox.deliver", "mailbox.store", "mailbox.receive"}
    )
    deliver = [s for s in spans if s.name == "outbox.deliver" and linked(s)]
    assert {s.service for s in deliver} == {f"oa-{story.insurer}"}
    assert deliver[0].kind == "PRODUCER"
    assert deliver[0].trace_id != trace_id  # the delivery is its own trace, linked to the cause
    # The relay's delivery call reaches the hub in the delivery's trace, where the storage links back too.
    store = [s for s in spans if s.name == "mailbox.store" and linked(s)]
    assert len(store) == 1
    assert store[0].service == "hub"
    assert store[0].trace_id == deliver[0].trace_id
    intake = one(spans, span_id=store[0].parent_id)
    assert intake.name == "/mycarenet.hub.v1.MailboxIntakeService/DeliverMessages"
    assert intake.kind == "SERVER"
    relay_call = one(spans, span_id=intake.parent_id)
    assert relay_call.kind == "CLIENT"
    assert relay_call.parent_id == deliver[0].span_id
    # GP A's pick-up: the SDK's receive span links to the notify, its GetMessages call is its child.
    receive = [s for s in spans if s.name == "mailbox.receive" and linked(s)]
    assert {s.service for s in receive} == {CLIENT_SERVICE}
    assert children(spans, receive[-1], name=GET_MESSAGES, kind="CLIENT")


NISS_LIKE = re.compile(r"(?<!\d)\d{11}(?!\d)")


def _texts(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _texts(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _texts(v)
    else:
        yield str(value)


def test_no_span_carries_a_niss_in_clear(story: Story) -> None:
    from mycarenet_cluster import population

    pop = population.build(POPULATION, TODAY)
    nisses = {m.niss for m in pop.members} | {p.niss for p in pop.providers} | {story.patient}
    spans = _wait_chain(story, NOTIFY, OA_NOTIFY, story.notify_reference)
    assert len(spans) > 50
    leaks = []
    for s in spans:
        fields = [s.name, s.status_message, s.attributes, s.events, [x.attributes for x in s.links]]
        for text in _texts(fields):
            leaks += [(s.service, s.name, n) for n in NISS_LIKE.findall(text) if n in nisses]
    assert not leaks, leaks[:10]
    # The patient is there, pseudonymised, on the spans that concern them.
    assert any(
        s.attributes.get("mycarenet.patient") == telemetry.pseudonymise(story.patient, story.patient_key)
        for s in spans
    )


def _scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


def _has(text: str, metric: str, **labels: str) -> bool:
    for line in text.splitlines():
        if line.startswith(metric) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return True
    return False


def test_every_process_serves_rpc_histograms_and_gauges(story: Story) -> None:
    metrics = {p["name"]: p["metrics_address"] for p in story.desc["processes"]}
    assert all(metrics.values()), metrics
    hub = _scrape(metrics["hub"])
    # Server side: latency histogram, buckets per method and status; request counts.
    assert _has(hub, "rpc_server_duration_milliseconds_bucket", rpc_method=CONSULT, rpc_grpc_status_code="OK")
    assert _has(hub, "rpc_server_requests_total", rpc_method=NOTIFY)
    # Client side, per OA.
    oa = story.insurer
    assert _has(hub, "rpc_client_duration_milliseconds_bucket", rpc_method=OA_CONSULT, mycarenet_oa=oa)
    to_ehealth = {"rpc_method": LIST_RELATION_CHANGES, "peer_service": "ehealth"}  # the relation cache
    assert _has(hub, "rpc_client_duration_milliseconds_bucket", **to_ehealth)
    # Gauges.
    index = [line for line in hub.splitlines() if line.startswith("mycarenet_routing_index_size")]
    assert index
    assert float(index[0].rsplit(" ", 1)[1]) >= POPULATION, index  # every member routed
    assert _has(hub, "mycarenet_mailbox_size")
    node = _scrape(metrics[f"oa-{oa}"])
    assert _has(node, "rpc_server_duration_milliseconds_bucket", rpc_method=OA_NOTIFY, mycarenet_oa=oa)
    assert _has(node, "mycarenet_outbox_backlog", mycarenet_oa=oa)
    ehealth = _scrape(metrics["ehealth"])
    assert _has(ehealth, "rpc_server_duration_milliseconds_bucket", rpc_method=LIST_RELATION_CHANGES)
    assert _has(ehealth, "db_client_connections_usage")
