"""The Node.js client (clients/node, built only from protos/) against a real local cluster under mutual
TLS with the cluster's client certificate: it logs in (Ed25519 challenge signature), consults, notifies,
and reads and confirms its mailbox. On the shared cluster, whose demo actors (GPs A and B, the demo patient,
the demo pharmacy) are this test's alone."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.cluster.cluster_support import SHARED_TODAY, Cluster

ROOT = Path(__file__).resolve().parents[2]
NODE_CLIENT = ROOT / "clients" / "node"
TODAY = SHARED_TODAY


def test_node_client_plays_login_consult_notify_mailbox(
    shared_cluster: tuple[Cluster, dict[str, Any]],
) -> None:
    node = shutil.which("node")
    assert node, "node is needed (./dev test installs the Node client's packages)"
    assert (NODE_CLIENT / "node_modules" / "@grpc" / "grpc-js").is_dir(), "run ./dev test (npm ci)"
    cluster, desc = shared_cluster  # the demo actors are this test's own on the shared cluster
    assert desc["today"] == TODAY
    assert desc["tls"], "the cluster runs under mutual TLS"
    done = subprocess.run(
        [node, str(NODE_CLIENT / "demo.js"), "--cluster", str(cluster.data / "cluster.json")],
        capture_output=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    steps: dict[str, Any] = {}
    for line in out.splitlines():
        event = json.loads(line)
        steps.setdefault(event.pop("step"), []).append(event)
    demo = desc["demo"]
    # The trust model, read by a client built from protos/ alone (google.rpc.Status decoded in Node).
    assert steps["refused_without_session"] == [
        {"refused": True, "status": "UNAUTHENTICATED", "reason": "MISSING_TOKEN", "codes": []}
    ]
    assert steps["refused_credential"] == [
        {"refused": True, "status": "PERMISSION_DENIED", "reason": "CERTIFICATE_NOT_ALLOWED", "codes": []}
    ]
    assert [s["subject"] for s in steps["login"]] == [demo["gp_b"], demo["gp_a"]]
    (consult,) = steps["consult"]
    assert consult["holder"] == demo["gp_a"]
    assert consult["payment_made_this_year"] is True
    (notify,) = steps["notify"]
    assert notify["holder"] == demo["gp_b"]
    assert notify["payment"] == "PAYMENT_INDICATOR_WITHOUT_PAYMENT"
    assert notify["end_date"] == {"year": 2028, "month": 12, "day": 31}
    (mailbox,) = steps["mailbox"]
    assert mailbox["kind"] == "MESSAGE_KIND_CLOSURE"
    assert mailbox["end_date"] == {"year": 2026, "month": 11, "day": 19}
    assert mailbox["new_holder"] == demo["gp_b"]
    assert steps["confirm"] == [{"confirmed_count": 1, "still_pending": 0}]
    # The demo pharmacist, from Node: the patient's insurability (GP B holds the DMG now) and rights.
    (member,) = steps["insurability"]
    assert member["insurer_code"] == "100"
    assert member["ct"]
    assert set(member["ct"]) <= {"110/110", "111/111"}
    assert member["dmg_holder"] == demo["gp_b"]
    (rights,) = steps["rights"]
    today = dt.date.fromisoformat(desc["today"])
    start, end = (dt.date(**rights[k]) for k in ("coverage_start", "coverage_end"))
    assert start == today
    assert today < end <= today + dt.timedelta(days=30)
    assert rights["agreement_number"].startswith("100-")
