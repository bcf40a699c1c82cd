"""Invoicing from the provider's side on a real cluster (issue 14), through the `mycarenet` CLI under
mutual TLS: a GP plays S1 on its own (notify, then next year's first contact by `mycarenet efact`, with the
answer and the GMD-EXTENSION in its inbox; then by `mycarenet eattest` for another patient), and the check
after payment runs when the sandbox clock moves past the billing deadline of a notified contact never
invoiced (the fee recovered, the message in the inbox). SQLite only: the insurer's storage of all this is
tested on both back ends by the integration tests. On the shared cluster, with a GP and patients of its own,
after the cluster's other tests (it moves the clock)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from mycarenet_core.identifiers import Profession, make_inami, make_niss
from tests.cluster.cluster_support import Cluster, cli, wait_for

GP = make_inami(Profession.PHYSICIAN, 90_201, "003")
GP_NISS = make_niss(dt.date(1971, 3, 3), 21)
BILLED = make_niss(dt.date(1962, 5, 9), 213)  # insurer 300: its contacts reach the insurer by eFact
ATTESTED = make_niss(dt.date(1963, 6, 10), 215)  # insurer 500: by eAttest
UNBILLED = make_niss(dt.date(1964, 7, 11), 217)  # insurer 100: the notified contact never comes
IBAN = ("--iban", "BE68539007547034", "--bic", "GEBABEBB", "--holder", "Dr")


def inbox(data: Path, session: Path, kind: str) -> list[Any]:
    found: list[Any] = cli(data, session, "inbox", "--kind", kind)
    return found


def test_s1_by_efact_and_eattest_and_the_check_after_payment(
    shared_cluster: tuple[Cluster, dict[str, Any]], tmp_path: Path
) -> None:
    cluster, _ = shared_cluster  # the last of the shared cluster's tests: it moves the clock
    assert cli(cluster.data, tmp_path / "admin.json", "clock", "show")["today"] == "2026-11-20"
    data, admin, gp = cluster.data, tmp_path / "admin.json", tmp_path / "gp.json"
    cli(data, admin, "admin", "provider", "add", GP, "--first", "Dr", "--last", "Facture", "--niss", GP_NISS)
    cli(data, gp, "login", GP)
    cli(data, gp, "enrol", *IBAN)
    for niss, insurer in ((BILLED, "300"), (ATTESTED, "500"), (UNBILLED, "100")):
        cli(data, admin, "admin", "patient", "add", niss, "--insurer", insurer, "--from", "2000-01-01")
        cli(data, gp, "tr", "register", niss)
        assert wait_for(lambda niss=niss: cli(data, gp, "consult", niss))
        notified = cli(data, gp, "notify", niss, "--contact-date", "2026-11-20")
        assert notified["payment"] == "PAYMENT_INDICATOR_WITH_PAYMENT"
    # This year's contacts of two of them are invoiced; the third's never is.
    cli(data, gp, "efact", "--line", f"{BILLED},2026-11-20,101076,30.00", "--reference", "F-2026-1")
    cli(data, gp, "eattest", ATTESTED, "--contact-date", "2026-11-20", "--amount", "30.00")

    # Next year: the first contact of each by eFact and eAttest prolongs the DMG, with no back office.
    cli(data, admin, "clock", "set", "2027-01-20")
    cli(data, gp, "login", GP)
    tack = cli(data, gp, "efact", "--line", f"{BILLED},2027-01-12,101076,30.00", "--reference", "F-2027-1")
    assert tack["technical_ack"]["result"] == "TECHNICAL_ACK_RESULT_SUCCESS"
    assert tack["insurer_codes"] == ["300"]
    attested = cli(data, gp, "eattest", ATTESTED, "--contact-date", "2027-01-13", "--amount", "30.00")
    assert attested["insurer_code"] == "500"

    def answers() -> list[Any]:
        found = [m["invoice_answer"] for m in inbox(data, gp, "invoice_answer")]
        return found if len(found) >= 2 else []

    assert [a.get("result") for a in wait_for(answers)] == ["INVOICE_LINE_RESULT_ACCEPTED"] * 2

    def extensions() -> set[str]:
        found = {m["extension"]["patient"]["niss"] for m in inbox(data, gp, "extension")}
        return found if len(found) >= 2 else set()

    assert wait_for(extensions) == {BILLED, ATTESTED}

    # After the billing deadline of 20.11.2026's contacts (31.12.2028), only the unbilled fee is recovered.
    cli(data, admin, "clock", "set", "2029-01-02")
    cli(data, gp, "login", GP)
    [recovery] = wait_for(lambda: inbox(data, gp, "fee_recovery"))
    assert recovery["insurer_code"] == "100"
    assert recovery["fee_recovery"]["patient"]["niss"] == UNBILLED
    assert recovery["fee_recovery"]["payment"]["recovered"] is True
