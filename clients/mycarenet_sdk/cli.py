"""`mycarenet`: the command line of the mesh, on the SDK (typer + rich).

Where the mesh is comes from the cluster description (``mycarenet-cluster status --json``, written to
``<data>/cluster.json``). ``login`` stores the session token in ``~/.config/mycarenet/session.json`` (or
``$MYCARENET_SESSION``) so that later commands reuse it.

Three kinds of caller, as the trust model has them (``mycarenet_core/trust.toml``): provider software
(``login``, ``consult``, ``notify`` ..., ``tr`` and ``mandate`` with the provider's own session; the cluster's
``client`` certificate), the insurers' back office (``oa``; the ``backoffice`` certificate) and the sandbox
administrator (``admin``; the ``admin`` certificate), who sets up test cases: providers, patients,
organisations, credentials.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import grpc
import typer
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.rpc import code_pb2
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table

from mycarenet_core.clock import BRUSSELS
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2, dmg_service_pb2
from mycarenet_core.gen.mycarenet.insurability.v1 import insurability_pb2
from mycarenet_core.gen.mycarenet.sandbox.v1 import chaos_pb2
from mycarenet_core.telemetry import Telemetry, from_environment
from mycarenet_sdk.admin import AdminClient, ClockState, ProviderAdded, admin_from_cluster
from mycarenet_sdk.client import Client, InvoiceLine, MyCareNetError, Session, connect

T = TypeVar("T")

app = typer.Typer(help="Talk to a mycarenet-mesh as provider software would.", no_args_is_help=True)
oa_app = typer.Typer(help="Insurer back office: play the invoicing stream.", no_args_is_help=True)
app.add_typer(oa_app, name="oa")
tr_app = typer.Typer(help="Your therapeutic relations (your own session).", no_args_is_help=True)
app.add_typer(tr_app, name="tr")
mandate_app = typer.Typer(help="Mandates you give (your own session).", no_args_is_help=True)
app.add_typer(mandate_app, name="mandate")
credential_app = typer.Typer(help="Your credential (your own session).", no_args_is_help=True)
app.add_typer(credential_app, name="credential")
pharmacy_app = typer.Typer(help="A pharmacist's services (your own session).", no_args_is_help=True)
app.add_typer(pharmacy_app, name="pharmacy")
admin_app = typer.Typer(
    help="The sandbox administrator (the cluster's admin certificate): set up test cases.",
    no_args_is_help=True,
)
app.add_typer(admin_app, name="admin")
admin_provider_app = typer.Typer(help="Providers in eHealth's cadastre.", no_args_is_help=True)
admin_app.add_typer(admin_provider_app, name="provider")
admin_patient_app = typer.Typer(help="Patients (members) at their insurer.", no_args_is_help=True)
admin_app.add_typer(admin_patient_app, name="patient")
admin_org_app = typer.Typer(help="Organisations in eHealth's cadastre.", no_args_is_help=True)
admin_app.add_typer(admin_org_app, name="organisation")
admin_credential_app = typer.Typer(help="Credentials (keys bound to a person).", no_args_is_help=True)
admin_app.add_typer(admin_credential_app, name="credential")
admin_relation_app = typer.Typer(help="Therapeutic relations for anyone.", no_args_is_help=True)
admin_app.add_typer(admin_relation_app, name="relation")
clock_app = typer.Typer(
    help="The sandbox's test clock (administrator): read, set or advance the mesh date.", no_args_is_help=True
)
app.add_typer(clock_app, name="clock")
chaos_app = typer.Typer(
    help="Chaos on the running cluster (administrator): every fault heals by itself.", no_args_is_help=True
)
app.add_typer(chaos_app, name="chaos")
scenario_app = typer.Typer(
    help="Scenario files: dated DMG stories played against the running mesh (scenarios/README.md).",
    no_args_is_help=True,
)
app.add_typer(scenario_app, name="scenario")
console = Console()
err_console = Console(stderr=True)

DataOpt = Annotated[Path, typer.Option("--data", envvar="MYCARENET_DATA", help="cluster data folder")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
DEFAULT_DATA = Path("var/cluster")


def _session_file() -> Path:
    return Path(os.environ.get("MYCARENET_SESSION", Path.home() / ".config" / "mycarenet" / "session.json"))


def _describe(data: Path) -> dict[str, Any]:
    path = data / "cluster.json"
    if not path.is_file():
        err_console.print(f"[red]no cluster description at {path}: is the cluster up? (./dev up)[/red]")
        raise typer.Exit(2)
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def _address(desc: dict[str, Any], role: str, code: str | None = None) -> str:
    for proc in desc["processes"]:
        if proc["role"] == role and (code is None or proc.get("oa_code") == code):
            return str(proc["address"])
    raise typer.BadParameter(f"no {role} {code or ''} in the cluster description")


def _today(data: Path) -> dt.date:
    """The mesh's today: the cluster's test clock (its offset, kept in ``<data>/clock.json``), else the
    sandbox date of ``up --today`` moved on by the time elapsed since the start."""
    kept = data / "clock.json"
    if kept.is_file():
        offset = dt.timedelta(seconds=float(json.loads(kept.read_text())["offset_seconds"]))
        return (dt.datetime.now(dt.UTC) + offset).astimezone(BRUSSELS).date()
    desc = _describe(data)
    started = desc.get("started_at")
    if not desc.get("today"):
        return dt.date.today()
    if started:
        elapsed = dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(started)
        return dt.date.fromisoformat(desc["today"]) + dt.timedelta(days=elapsed.days)
    return dt.date.fromisoformat(desc["today"])


def _client(data: Path, telemetry: Telemetry | None = None) -> Client:
    desc = _describe(data)
    tls = desc.get("tls") or {}
    return connect(
        hub=_address(desc, "hub"),
        ehealth=_address(desc, "ehealth"),
        ca=Path(tls["ca"]) if tls else None,
        cert=Path(tls["client_cert"]) if tls else None,
        key=Path(tls["client_key"]) if tls else None,
        telemetry=telemetry,
    )


def _load_session(client: Client) -> None:
    path = _session_file()
    if not path.is_file():
        err_console.print("[red]not logged in: run `mycarenet login INAMI`[/red]")
        raise typer.Exit(2)
    raw = json.loads(path.read_text())
    client.session = Session(
        token=raw["token"],
        session_id=raw["session_id"],
        expire_time=dt.datetime.fromisoformat(raw["expire_time"]),
        subject_id=raw["subject_id"],
        principal_inami=raw.get("principal_inami"),
    )


def _run(data: Path, fn: Callable[[Client], Awaitable[T]], *, session: bool = True) -> T:
    # Traced when OTEL_EXPORTER_OTLP_ENDPOINT is set: the command's calls start the trace.
    telemetry = from_environment("mycarenet-cli", server=False)

    async def go() -> T:
        async with _client(data, telemetry) as client:
            if session:
                _load_session(client)
            return await fn(client)

    try:
        return asyncio.run(go())
    except MyCareNetError as error:
        _fail(error)
    except ValueError as error:
        err_console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    finally:
        if telemetry is not None:
            telemetry.shutdown()


def _fail(error: MyCareNetError) -> NoReturn:
    codes = ",".join(str(c) for c in error.codes)
    err_console.print(
        f"[red]{error.status.name}[/red] {error.reason}"
        + (f" [{codes}]" if codes else "")
        + f": {error.message}"
    )
    for v in error.violations:
        err_console.print(f"  [yellow]{v.code}[/yellow] {v.field}: {v.description}")
    raise typer.Exit(1) from None


def _run_admin(data: Path, fn: Callable[[AdminClient], Awaitable[T]]) -> T:
    """Run ``fn`` with the administrator's client of the cluster (its ``admin`` certificate)."""
    desc = _describe(data)
    tls = desc.get("tls") or {}
    if tls and "admin_cert" not in tls:
        err_console.print(
            "[red]this cluster has no admin certificate: restart it (mycarenet-cluster up)[/red]"
        )
        raise typer.Exit(2)

    async def go() -> T:
        async with admin_from_cluster(desc) as admin:
            return await fn(admin)

    try:
        return asyncio.run(go())
    except MyCareNetError as error:
        _fail(error)
    except ValueError as error:
        err_console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None


def _print_json(value: Any) -> None:
    """Plain JSON on stdout (never wrapped or coloured), for scripts."""
    print(json.dumps(value, indent=2))


def _emit(message: Message, as_json: bool, table: Table | None = None) -> None:
    if as_json or table is None:
        _print_json(MessageToDict(message, preserving_proto_field_name=True))
    else:
        console.print(table)


def _fmt_date(d: Any) -> str:
    return f"{d.day:02d}.{d.month:02d}.{d.year:04d}" if d.year else "—"


def _parse_date(text: str | None) -> dt.date | None:
    if text is None:
        return None
    for fmt in ("%Y-%m-%d", "%d.%m.%Y"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise typer.BadParameter(f"{text!r}: use YYYY-MM-DD or DD.MM.YYYY")


@app.command()
def login(
    inami: Annotated[str, typer.Argument(help="your INAMI number (or the mandatee id)")],
    key: Annotated[Path | None, typer.Option(help="Ed25519 private key (PEM); default: the demo key")] = None,
    principal: Annotated[str | None, typer.Option(help="act for this principal under a mandate")] = None,
    kind: Annotated[
        str, typer.Option(help="who logs in: provider, organisation, person (a mandatee's NISS), company")
    ] = "provider",
    pharmacist: Annotated[
        str | None,
        typer.Option(
            help="a pharmacy's session (seed 003 §8.2.2.1): the INAMI of the pharmacist who opens it (signs"
            " with <data>/keys/<pharmacist>.pem, or --pharmacist-key); implies --kind organisation"
        ),
    ] = None,
    pharmacist_key: Annotated[Path | None, typer.Option(help="the pharmacist's private key (PEM)")] = None,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Log in at eHealth by signing a challenge with your key (a pharmacy: with one of its pharmacists)."""
    key_path = key or data / "keys" / f"{inami}.pem"
    user = None
    if pharmacist:
        kind = "organisation"
        user = (pharmacist, pharmacist_key or data / "keys" / f"{pharmacist}.pem")

    async def go(client: Client) -> Session:
        return await client.login(inami, key_path, kind=kind, principal_inami=principal, pharmacist=user)

    session = _run(data, go, session=False)
    path = _session_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "token": session.token,
                "session_id": session.session_id,
                "expire_time": session.expire_time.isoformat(),
                "subject_id": session.subject_id,
                "principal_inami": session.principal_inami,
            }
        )
    )
    path.chmod(0o600)
    if as_json:
        _print_json({"session_id": session.session_id, "expire_time": session.expire_time.isoformat()})
    else:
        acting = f" for {principal}" if principal else (f" (pharmacist {pharmacist})" if pharmacist else "")
        console.print(
            f"logged in as [bold]{inami}[/bold]{acting} until {session.expire_time:%Y-%m-%d %H:%M} UTC"
        )


@app.command()
def consult(
    niss: Annotated[str, typer.Argument(help="patient NISS")],
    date: Annotated[str | None, typer.Option(help="date of the right (default: the mesh's today)")] = None,
    reference: Annotated[str | None, typer.Option(help="requester reference")] = None,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Consult a patient's DMG."""
    when = _parse_date(date) or _today(data)
    reply = _run(data, lambda c: c.consult(niss, date=when, reference=reference))
    table = Table(title=f"DMG of {reply.patient.first_name} {reply.patient.last_name} ({reply.patient.niss})")
    for col in ("insurer", "holder", "from", "to", "procedure", "paid this year", "your fee"):
        table.add_column(col)
    h = reply.holding
    holder = f"{h.holder.first_name} {h.holder.last_name} ({h.holder.inami})" if h.holder.inami else "nobody"
    table.add_row(
        reply.insurer_code,
        holder,
        _fmt_date(h.period.start),
        _fmt_date(h.period.end),
        dmg_pb2.Procedure.Name(h.procedure).removeprefix("PROCEDURE_").lower() if h.procedure else "—",
        "yes" if reply.payment_made_this_year else "no",
        _fee(reply.requester_payment) if reply.HasField("requester_payment") else "—",
    )
    _emit(reply, as_json, table)


def _fee(p: dmg_pb2.DmgPayment) -> str:
    """A DMG fee in one line: amount, registered, due, paid (or recovered)."""
    state = (
        "recovered"
        if p.recovered
        else f"paid {_fmt_date(p.paid_date)}"
        if p.HasField("paid_date")
        else f"due by {_fmt_date(p.due_date)}"
    )
    return f"{p.amount.amount} {p.amount.currency_code} of {_fmt_date(p.payment_date)}, {state}"


def _statuses_table(title: str, data: insurability_pb2.MemberData) -> Table:
    table = Table(title=title)
    for col in ("insurability from", "to", "CT1/CT2", "preferential", "maximum billing"):
        table.add_column(col)
    for period in data.insurability:
        status = period.status
        table.add_row(
            _fmt_date(period.period.start),
            _fmt_date(period.period.end),
            f"{status.ct1}/{status.ct2}",
            "yes" if status.preferential_rate else "no",
            "yes" if status.maximum_billing else "no",
        )
    return table


def _member_caption(data: insurability_pb2.MemberData) -> str:
    kinds = [
        insurability_pb2.CareStatusKind.Name(s.kind)
        .removeprefix("CARE_STATUS_KIND_")
        .lower()
        .replace("_", " ")
        for s in data.care_statuses
    ]
    house = data.medical_house_inami or "none"
    return (
        f"insurer {data.insurer_code}; care statuses: {', '.join(kinds) or 'none'}; medical house: {house}; "
        f"DMG holder: {data.dmg_holder_inami or 'nobody'}"
    )


MemberOpt = Annotated[
    str | None,
    typer.Option(
        help="MUTUALITY/NUMBER: the patient by mutuality + member number, for a newborn whose NISS is not"
        " known yet (seed 003 §4.3)"
    ),
]


def _member(text: str | None, niss: str | None = None) -> tuple[str, str] | None:
    if text is None:
        if niss is None:
            raise typer.BadParameter("give the patient's NISS or --member MUTUALITY/NUMBER")
        return None
    mutuality, _, number = text.partition("/")
    if not mutuality or not number:
        raise typer.BadParameter(f"{text!r}: use MUTUALITY/NUMBER, e.g. 300/07000000001")
    return mutuality, number


@app.command("insurability")
def insurability(
    niss: Annotated[str | None, typer.Argument(help="patient NISS (or --member)")] = None,
    member: MemberOpt = None,
    date: Annotated[str | None, typer.Option(help="date asked (default: the mesh's today)")] = None,
    reference: Annotated[str | None, typer.Option(help="requester reference")] = None,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """The insurer's file on a patient (MemberData): insurability, care statuses, medical house, holder."""
    when = _parse_date(date) or _today(data)
    who = _member(member, niss)
    reply = _run(
        data,
        lambda c: c.member_data(niss if who is None else None, member=who, date=when, reference=reference),
    )
    table = _statuses_table(
        f"MemberData of {reply.patient.first_name} {reply.patient.last_name} ({reply.patient.niss})", reply
    )
    table.caption = _member_caption(reply)
    _emit(reply, as_json, table)


@pharmacy_app.command("rights")
def rights(
    niss: Annotated[str | None, typer.Argument(help="patient NISS (or --member)")] = None,
    member: MemberOpt = None,
    dispensing_date: Annotated[
        str | None, typer.Option("--dispensing-date", help="dispensing date (default: the mesh's today)")
    ] = None,
    reference: Annotated[str | None, typer.Option(help="requester reference")] = None,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """A pharmacist's rights consultation at a dispensing date, with the insurer's payment commitment."""
    when = _parse_date(dispensing_date) or _today(data)
    who = _member(member, niss)
    reply = _run(
        data,
        lambda c: c.consult_rights(
            niss if who is None else None, member=who, dispensing_date=when, reference=reference
        ),
    )
    table = _statuses_table(
        f"Rights of {reply.member_data.patient.niss} on {when.isoformat()}", reply.member_data
    )
    commitment = reply.commitment
    table.caption = (
        f"payment commitment {commitment.agreement_number}: covers {_fmt_date(commitment.coverage.start)}"
        f" to {_fmt_date(commitment.coverage.end)} on {commitment.status.ct1}/{commitment.status.ct2}"
        + (f" (pharmacist {commitment.pharmacist_inami})" if commitment.pharmacist_inami else "")
        if reply.HasField("commitment")
        else "no right on the dispensing date: no payment commitment"
    )
    _emit(reply, as_json, table)


@app.command()
def notify(
    niss: Annotated[str, typer.Argument(help="patient NISS")],
    contact_date: Annotated[str, typer.Option("--contact-date", help="date of the contact")],
    code: Annotated[str, typer.Option(help="nomenclature code of the contact")] = "101076",
    supervisor: Annotated[str, typer.Option(help="supervisor INAMI (GP in training)")] = "",
    reference: Annotated[str | None, typer.Option(help="requester reference (idempotency key)")] = None,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Notify the opening or takeover of a DMG."""
    when = _parse_date(contact_date)
    assert when is not None
    reply = _run(
        data,
        lambda c: c.notify(
            niss, contact_date=when, nomenclature_code=code, supervisor_inami=supervisor, reference=reference
        ),
    )
    table = Table(title=f"DMG notified at insurer {reply.insurer_code}")
    for col in ("patient", "holder", "from", "to", "payment"):
        table.add_column(col)
    table.add_row(
        reply.patient.niss,
        reply.holder.inami,
        _fmt_date(reply.start_date),
        _fmt_date(reply.end_date),
        dmg_pb2.PaymentIndicator.Name(reply.payment)
        .removeprefix("PAYMENT_INDICATOR_")
        .lower()
        .replace("_", " "),
    )
    _emit(reply, as_json, table)


def _invoice_line(text: str) -> InvoiceLine:
    """NISS,DATE,CODE,AMOUNT[,PROVIDER] (a medical house names its physician)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (4, 5):
        raise typer.BadParameter(f"{text!r}: NISS,DATE,CODE,AMOUNT[,PROVIDER]")
    when = _parse_date(parts[1])
    assert when is not None
    return InvoiceLine(parts[0], when, parts[2], parts[3], parts[4] if len(parts) == 5 else "")


@app.command()
def efact(
    line: Annotated[
        list[str], typer.Option("--line", help="NISS,DATE,CODE,AMOUNT[,PROVIDER] (repeat: one per line)")
    ],
    reference: Annotated[
        str | None, typer.Option(help="batch reference (idempotency key: post again with the same one)")
    ] = None,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """eFact (third-party payment): post a batch of invoice lines; the answers come to your inbox
    (--kind invoice-answer)."""
    lines = [_invoice_line(text) for text in line]
    reply = _run(data, lambda c: c.post_invoices(lines, reference=reference))
    tack = reply.technical_ack
    table = Table(
        title=f"eFact batch {reply.requester_reference}: acknowledged by {', '.join(reply.insurer_codes)}"
    )
    for col in ("reference", "result", "not routed"):
        table.add_column(col)
    result = dmg_pb2.TechnicalAckResult.Name(tack.result).removeprefix("TECHNICAL_ACK_RESULT_").lower()
    table.add_row(tack.reference, result, "; ".join(f"[{i.code}] {i.description}" for i in tack.items))
    _emit(reply, as_json, table)


@app.command()
def eattest(
    niss: Annotated[str, typer.Argument(help="patient NISS")],
    contact_date: Annotated[str, typer.Option("--contact-date", help="date of the contact")],
    amount: Annotated[str, typer.Option(help="amount paid by the patient, EUR (30.00)")],
    code: Annotated[str, typer.Option(help="nomenclature code of the contact")] = "101076",
    provider: Annotated[str, typer.Option(help="physician of the contact (default: you)")] = "",
    reference: Annotated[str | None, typer.Option(help="certificate reference (idempotency key)")] = None,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """eAttest (cash payment): send one electronic care certificate, registered by the insurer at once."""
    when = _parse_date(contact_date)
    assert when is not None
    reply = _run(
        data,
        lambda c: c.send_attest(
            niss,
            contact_date=when,
            nomenclature_code=code,
            amount=amount,
            provider_inami=provider,
            reference=reference,
        ),
    )
    table = Table(title=f"eAttest {reply.requester_reference} registered by insurer {reply.insurer_code}")
    for col in ("replayed", "messages"):
        table.add_column(col)
    table.add_row("yes" if reply.replayed else "no", ", ".join(reply.message_ids) or "—")
    _emit(reply, as_json, table)


@app.command()
def enrol(
    iban: Annotated[str, typer.Option(help="IBAN of the account for DMG fees")],
    bic: Annotated[str, typer.Option(help="BIC of the bank")],
    holder: Annotated[str, typer.Option(help="account holder name")],
    insurer: Annotated[list[str] | None, typer.Option(help="insurer code (repeat); default all")] = None,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Enrol for the electronic DMG."""
    reply = _run(data, lambda c: c.enrol(iban=iban, bic=bic, holder_name=holder, insurer_codes=insurer or ()))
    table = Table(title="Enrolment")
    for col in ("insurer", "status", "since", "code"):
        table.add_column(col)
    for o in reply.outcomes:
        status = dmg_service_pb2.EnrolmentStatus.Name(o.status)
        table.add_row(
            o.insurer_code,
            status.removeprefix("ENROLMENT_STATUS_").lower(),
            _fmt_date(o.enrolled_since),
            str(o.error_code or ""),
        )
    _emit(reply, as_json, table)


def _message_rows(messages: list[dmg_pb2.MailboxMessage]) -> Table:
    table = Table(title=f"{len(messages)} pending message(s)")
    for col in ("id", "kind", "insurer", "about"):
        table.add_column(col)
    for m in messages:
        kind = dmg_pb2.MessageKind.Name(m.kind).removeprefix("MESSAGE_KIND_").lower()
        about = ""
        if m.HasField("closure"):
            c = m.closure
            about = f"{c.patient.niss}: closed {_fmt_date(c.end_date)}, new holder {c.new_holder.inami}"
        elif m.HasField("extension"):
            e = m.extension
            about = (
                f"{e.patient.niss}: prolonged to {_fmt_date(e.new_end_date)}"
                f" (contact {_fmt_date(e.contact_date)})"
            )
        elif m.HasField("patient_list"):
            p = m.patient_list
            missing = [
                o.insurer_code for o in p.insurers if o.status == dmg_pb2.INSURER_OUTCOME_STATUS_MISSING
            ]
            about = f"{len(p.entries)} patients in {p.year}" + (
                f", missing {','.join(missing)}" if missing else ""
            )
        elif m.HasField("technical_ack"):
            about = f"tAck {m.technical_ack.reference}"
        elif m.HasField("invoice_answer"):
            a = m.invoice_answer
            outcome = (
                "accepted"
                if a.result == dmg_pb2.INVOICE_LINE_RESULT_ACCEPTED
                else f"rejected [{a.error_code}]"
            )
            about = (
                f"{a.batch_reference} line {a.line_number} ({a.patient_niss},"
                f" {_fmt_date(a.contact_date)}): {outcome}"
            )
        elif m.HasField("fee_recovery"):
            r = m.fee_recovery
            about = (
                f"{r.patient.niss}: fee {r.payment.year} {r.payment.amount.amount} EUR recovered"
                f" (contact {_fmt_date(r.contact_date)} never invoiced)"
            )
        elif m.HasField("usage_notice"):
            about = _usage_text(m.usage_notice)
        table.add_row(m.message_id, kind, m.insurer_code, about)
    return table


def _usage_text(notice: dmg_pb2.UsageNotice) -> str:
    """A usage notice in one line: what was found, and what follows (seed 003 §7.2–§7.3)."""
    if notice.finding == dmg_pb2.USAGE_FINDING_UNFOLLOWED_CONSULTATIONS:
        found = f"{notice.unfollowed_count} of {notice.consultation_count} consultations never billed"
    else:
        found = f"{notice.distinct_patients} distinct patients consulted"
    if notice.consequence == dmg_pb2.USAGE_CONSEQUENCE_EXCLUSION:
        until = notice.excluded_until.ToDatetime(dt.UTC).strftime("%d.%m.%Y %H:%M UTC")
        return f"{found} ({notice.rule}): EXCLUDED from the insurability services until {until}"
    return f"{found} ({notice.rule}): warning, a repeat within 365 days excludes"


@app.command()
def inbox(
    kind: Annotated[
        list[str] | None,
        typer.Option(
            help="only this kind (closure, extension, patient_list, technical_ack, invoice_answer,"
            " fee_recovery, usage_notice)"
        ),
    ] = None,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Show the pending messages of your mailbox."""
    try:
        kinds = [dmg_pb2.MessageKind.Value(f"MESSAGE_KIND_{k.upper().replace('-', '_')}") for k in kind or ()]
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    messages = _run(data, lambda c: c.all_messages(kinds=kinds))
    if as_json:
        _print_json([MessageToDict(m, preserving_proto_field_name=True) for m in messages])
    else:
        console.print(_message_rows(messages))


@app.command()
def confirm(
    message_ids: Annotated[list[str], typer.Argument(help="ids of the messages to confirm")],
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Confirm messages: they are never returned again."""
    reply = _run(data, lambda c: c.confirm(message_ids))
    if as_json:
        _emit(reply, True)
    else:
        console.print(
            f"confirmed {reply.confirmed_count}, already confirmed {reply.already_confirmed_count}"
            + (f", unknown {', '.join(reply.unknown)}" if reply.unknown else "")
        )


@app.command("list")
def patient_list(
    year_date: Annotated[
        str | None, typer.Option("--date", help="a date in the year wanted (default today)")
    ] = None,
    wait: Annotated[float, typer.Option(help="seconds to wait for the answer")] = 60.0,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Ask for the list of your DMG patients, then wait for the answer in the mailbox."""
    when = _parse_date(year_date) or _today(data)

    async def go(client: Client) -> dmg_pb2.MailboxMessage:
        ack = await client.post_patient_list(reference_date=when)
        reference = ack.technical_ack.reference
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), console=err_console, transient=True
        ) as bar:
            bar.add_task(f"waiting for the answer to {reference}")
            async with asyncio.timeout(wait):
                async for message in client.watch_messages(kinds=[dmg_pb2.MESSAGE_KIND_PATIENT_LIST]):
                    if message.patient_list.list_reference == reference:
                        return message
        raise TimeoutError

    try:
        message = _run(data, go)
    except TimeoutError:
        err_console.print("[red]no answer yet; it will be in your inbox[/red]")
        raise typer.Exit(1) from None
    if as_json:
        _emit(message, True)
        return
    p = message.patient_list
    table = Table(title=f"DMG patients in {p.year} (message {message.message_id})")
    for col in ("patient", "insurer", "periods", "payments"):
        table.add_column(col)
    for e in p.entries:
        periods = ", ".join(f"{_fmt_date(x.start)}→{_fmt_date(x.end)}" for x in e.periods)
        pays = ", ".join(_fee(x) for x in e.payments)
        table.add_row(e.patient.niss, e.insurer_code, periods, pays)
    console.print(table)
    for o in p.insurers:
        if o.status == dmg_pb2.INSURER_OUTCOME_STATUS_MISSING:
            err_console.print(f"[yellow]insurer {o.insurer_code} missing: {o.error}[/yellow]")


async def _find_insurer(desc: dict[str, Any], niss: str, creds: Any) -> tuple[str, str]:
    """(insurer code, address) of the OA that knows this NISS, asking every OA node."""
    from mycarenet_core.channels import open_channel
    from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
    from mycarenet_core.gen.mycarenet.oa.v1 import membership_service_pb2, membership_service_pb2_grpc

    async def ask(proc: dict[str, Any]) -> tuple[str, str] | None:
        async with open_channel(proc["address"], credentials=creds, identity="backoffice") as channel:
            stub = membership_service_pb2_grpc.MembershipServiceStub(channel)
            try:
                await stub.GetMember(
                    membership_service_pb2.GetMemberRequest(patient=common_pb2.PatientSelector(niss=niss)),
                    timeout=5,
                )
            except MyCareNetError:
                return None
            except Exception:
                return None
            return str(proc["oa_code"]), str(proc["address"])

    found = [r for r in await asyncio.gather(*(ask(p) for p in desc["processes"] if p["role"] == "oa")) if r]
    if not found:
        raise LookupError(niss)
    return found[0]


def _intake(data: Path, niss: str, build: Callable[[Any], Awaitable[Message]]) -> Message:
    from mycarenet_core.channels import client_credentials, open_channel
    from mycarenet_core.gen.mycarenet.oa.v1 import intake_service_pb2_grpc

    desc = _describe(data)
    tls = desc.get("tls") or {}
    # The insurer's back office has its own certificate (trust.toml: the invoicing intake answers only it).
    creds = (
        client_credentials(Path(tls["ca"]), Path(tls["backoffice_cert"]), Path(tls["backoffice_key"]))
        if tls
        else None
    )

    async def go() -> Message:
        found = await _find_insurer(desc, niss, creds)
        async with open_channel(found[1], credentials=creds, identity="backoffice") as channel:
            return await build(intake_service_pb2_grpc.InvoicingIntakeServiceStub(channel))

    try:
        return asyncio.run(go())
    except LookupError:
        err_console.print(f"[red]no insurer knows the patient {niss}[/red]")
        raise typer.Exit(1) from None
    except grpc.RpcError as error:
        parsed = MyCareNetError.from_rpc_error(error)
        err_console.print(f"[red]{parsed.status.name}[/red] {parsed.reason}: {parsed.message}")
        for v in parsed.violations:
            err_console.print(f"  [yellow]{v.code}[/yellow] {v.field}: {v.description}")
        raise typer.Exit(1) from None


def _effects_table(reply: Any) -> Table:
    effects = reply.effects
    table = Table(title=f"intake {reply.intake_reference}" + (" (replayed)" if reply.replayed else ""))
    for col in ("effect", "detail"):
        table.add_column(col)
    for h in effects.holdings:
        table.add_row(
            "holding",
            f"{h.holder.inami} {_fmt_date(h.period.start)}→{_fmt_date(h.period.end)} "
            + dmg_pb2.HoldingStatus.Name(h.status).removeprefix("HOLDING_STATUS_").lower(),
        )
    for p in effects.payments:
        table.add_row(
            "payment", f"{p.year} {p.amount.amount} {p.amount.currency_code} to {p.beneficiary.inami}"
        )
    for p in effects.recoveries:
        table.add_row(
            "recovery", f"{p.year} {p.amount.amount} {p.amount.currency_code} from {p.beneficiary.inami}"
        )
    for m in effects.message_ids:
        table.add_row("message", m)
    if effects.note:
        table.add_row("note", effects.note)
    return table


def _proto_date(value: dt.date) -> Any:
    from mycarenet_core.gen.mycarenet.common.v1 import common_pb2

    return common_pb2.Date(year=value.year, month=value.month, day=value.day)


@oa_app.command("contact")
def oa_contact(
    niss: Annotated[str, typer.Argument(help="patient NISS")],
    provider: Annotated[str, typer.Option(help="INAMI of the physician who had the contact")],
    contact_date: Annotated[str, typer.Option("--contact-date", help="date of the contact")],
    submitted: Annotated[
        str | None, typer.Option(help="date the insurer received it (default today)")
    ] = None,
    code: Annotated[str, typer.Option(help="nomenclature code")] = "101076",
    reference: Annotated[str | None, typer.Option(help="intake reference (idempotency key)")] = None,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Register a contact certificate at the patient's insurer (may prolong a DMG)."""
    from mycarenet_core.gen.mycarenet.oa.v1 import intake_service_pb2

    when, sub = _parse_date(contact_date), _parse_date(submitted) or _today(data)
    assert when is not None
    request = intake_service_pb2.RegisterContactRequest(
        intake_reference=reference or f"cli-{os.urandom(8).hex()}",
        patient_niss=niss,
        provider_inami=provider,
        contact_date=_proto_date(when),
        nomenclature_code=code,
        submission_date=_proto_date(sub),
    )
    reply = _intake(data, niss, lambda stub: stub.RegisterContact(request, timeout=10))
    _emit(reply, as_json, _effects_table(reply))


@oa_app.command("attest")
def oa_attest(
    niss: Annotated[str, typer.Argument(help="patient NISS")],
    provider: Annotated[str, typer.Option(help="INAMI of the GP who attested 102771")],
    attestation_date: Annotated[str, typer.Option("--attestation-date", help="date of the attestation")],
    submitted: Annotated[
        str | None, typer.Option(help="date the insurer received it (default today)")
    ] = None,
    reference: Annotated[str | None, typer.Option(help="intake reference (idempotency key)")] = None,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Submit a paper 102771 attestation at the patient's insurer."""
    from mycarenet_core.gen.mycarenet.oa.v1 import intake_service_pb2

    when, sub = _parse_date(attestation_date), _parse_date(submitted) or _today(data)
    assert when is not None
    request = intake_service_pb2.RegisterPaperAttestationRequest(
        intake_reference=reference or f"cli-{os.urandom(8).hex()}",
        patient_niss=niss,
        provider_inami=provider,
        attestation_date=_proto_date(when),
        submission_date=_proto_date(sub),
    )
    reply = _intake(data, niss, lambda stub: stub.RegisterPaperAttestation(request, timeout=10))
    _emit(reply, as_json, _effects_table(reply))


# --- the provider's own data at eHealth: relations, mandates, credential, cadastre entry -----------------


def _dicts(messages: Any) -> list[dict[str, Any]]:
    return [MessageToDict(m, preserving_proto_field_name=True) for m in messages]


def _period_text(period: Any) -> str:
    return f"{_fmt_date(period.start)} → {_fmt_date(period.end) if period.end.year else 'open'}"


def _relations_table(relations: Any, title: str) -> Table:
    from mycarenet_core.gen.mycarenet.ehealth.v1 import therapeutic_relation_pb2

    table = Table(title=title)
    table.add_column("id", overflow="fold")  # shown whole: it is what `revoke` takes
    for col in ("id", "provider", "patient", "proof", "period")[1:]:
        table.add_column(col)
    for r in relations:
        proof = therapeutic_relation_pb2.RelationProof.Name(r.proof).removeprefix("RELATION_PROOF_").lower()
        table.add_row(r.relation_id, r.provider_inami, r.patient_niss, proof, _period_text(r.period))
    return table


def _mandates_table(mandates: Any, title: str) -> Table:
    from mycarenet_core.gen.mycarenet.ehealth.v1 import mandate_pb2

    table = Table(title=title)
    table.add_column("id", overflow="fold")  # shown whole: it is what `revoke` takes
    for col in ("id", "principal", "mandatee", "services", "period")[1:]:
        table.add_column(col)
    for m in mandates:
        services = ", ".join(
            mandate_pb2.MandatedService.Name(x).removeprefix("MANDATED_SERVICE_") for x in m.services
        )
        kind = m.mandatee_kind.removeprefix("SUBJECT_KIND_").lower()
        table.add_row(
            m.mandate_id, m.principal_inami, f"{m.mandatee_id} ({kind})", services, _period_text(m.period)
        )
    return table


@tr_app.command("register")
def tr_register(
    patient: Annotated[str, typer.Argument(help="NISS of the patient (as read from the eID)")],
    start: Annotated[str | None, typer.Option("--from", help="first day (default: today at eHealth)")] = None,
    end: Annotated[str | None, typer.Option("--to", help="last day (default: open)")] = None,
    proof: Annotated[str, typer.Option(help="eid, isi or declaration")] = "eid",
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Register your therapeutic relation with a patient (needs your own session)."""
    first, last = _parse_date(start), _parse_date(end)
    relation = _run(data, lambda c: c.register_relation(patient, start=first, end=last, proof=proof))
    _emit(relation, as_json, _relations_table([relation], "therapeutic relation registered"))


@tr_app.command("list")
def tr_list(
    patient: Annotated[str, typer.Option(help="only with this patient (NISS)")] = "",
    date: Annotated[str | None, typer.Option(help="only valid on this date")] = None,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Your therapeutic relations."""
    on = _parse_date(date)
    relations = _run(data, lambda c: c.list_relations(patient_niss=patient, valid_on=on))
    if as_json:
        _print_json(_dicts(relations))
    else:
        console.print(_relations_table(relations, f"{len(relations)} therapeutic relation(s)"))


@tr_app.command("revoke")
def tr_revoke(
    relation_id: Annotated[str, typer.Argument(help="id of the relation (see `mycarenet tr list`)")],
    end: Annotated[
        str | None, typer.Option(help="last day of the relation (default: today at eHealth)")
    ] = None,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """End one of your therapeutic relations."""
    last = _parse_date(end)
    relation = _run(data, lambda c: c.revoke_relation(relation_id, end=last))
    _emit(relation, as_json, _relations_table([relation], "therapeutic relation revoked"))


@mandate_app.command("give")
def mandate_give(
    mandatee: Annotated[
        str, typer.Argument(help="who may act for you: a person's NISS, a provider's INAMI ...")
    ],
    service: Annotated[
        list[str],
        typer.Option(help="DMG_CONSULT, DMG_NOTIFY, DMG_ENROL, DMG_PATIENT_LIST or MAILBOX (repeat)"),
    ],
    kind: Annotated[
        str, typer.Option(help="the mandatee: person, provider, organisation or company")
    ] = "person",
    start: Annotated[str | None, typer.Option("--from", help="first day (default: the mesh's today)")] = None,
    end: Annotated[str | None, typer.Option("--to", help="last day (default: until revoked)")] = None,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Give a mandate: MANDATEE may then log in for you (`mycarenet login MANDATEE --principal YOU`)."""
    first = _parse_date(start) or _today(data)
    last = _parse_date(end)
    reply = _run(data, lambda c: c.give_mandate(mandatee, service, start=first, end=last, mandatee_kind=kind))
    if as_json:
        _emit(reply, True)
        return
    console.print(_mandates_table([reply.mandate], "mandate given"))
    if reply.closed:
        console.print(_mandates_table(reply.closed, "closed (they overlapped the new one)"))


@mandate_app.command("list")
def mandate_list(
    date: Annotated[str | None, typer.Option(help="only valid on this date")] = None,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """The mandates you gave."""
    on = _parse_date(date)
    mandates = _run(data, lambda c: c.list_mandates(valid_on=on))
    if as_json:
        _print_json(_dicts(mandates))
    else:
        console.print(_mandates_table(mandates, f"{len(mandates)} mandate(s) given"))


@mandate_app.command("revoke")
def mandate_revoke(
    mandate_id: Annotated[str, typer.Argument(help="id of the mandate (see `mycarenet mandate list`)")],
    end: Annotated[
        str | None, typer.Option(help="last day of the mandate (default: today at eHealth)")
    ] = None,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """End a mandate you gave; the sessions opened with it stop working."""
    last = _parse_date(end)
    mandate = _run(data, lambda c: c.revoke_mandate(mandate_id, end=last))
    _emit(mandate, as_json, _mandates_table([mandate], "mandate revoked"))


@credential_app.command("revoke")
def credential_revoke(
    key: Annotated[
        Path | None, typer.Option(help="the private key of the credential (default: the demo key)")
    ] = None,
    fingerprint: Annotated[str, typer.Option(help="or the credential's SHA-256 fingerprint")] = "",
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Revoke your credential: it can no longer log in, and the sessions opened with it end."""

    async def go(client: Client) -> Any:
        assert client.session is not None
        path = key or data / "keys" / f"{client.session.subject_id}.pem"
        return await client.revoke_credential(None if fingerprint else path, fingerprint_hex=fingerprint)

    reply = _run(data, go)
    if as_json:
        _emit(reply, True)
    else:
        console.print(f"revoked: {'yes' if reply.revoked else 'no'}, sessions ended: {reply.ended_sessions}")


def _provider_table(provider: Any, title: str, organisations: Any = ()) -> Table:
    table = Table(title=title)
    for col in ("inami", "name", "role", "valid", "supervisor", "organisations"):
        table.add_column(col)
    role = _role_name(provider.role)
    table.add_row(
        provider.inami,
        f"{provider.first_name} {provider.last_name}".strip(),
        role,
        _period_text(provider.validity),
        provider.supervisor_inami or "—",
        ", ".join(organisations) or "—",
    )
    return table


def _role_name(role: int) -> str:
    from mycarenet_core.gen.mycarenet.common.v1 import common_pb2

    name = common_pb2.ProviderRole.Name(role)  # type: ignore[arg-type]
    return name.removeprefix("PROVIDER_ROLE_").lower().replace("_", " ")


@app.command()
def whoami(data: DataOpt = DEFAULT_DATA, as_json: JsonOpt = False) -> None:
    """Your own entry in eHealth's cadastre (needs your own session)."""
    reply = _run(data, lambda c: c.cadastre_entry())
    _emit(
        reply,
        as_json,
        _provider_table(reply.provider, "you, as eHealth knows you", reply.organisation_inamis),
    )


# --- the sandbox administrator -----------------------------------------------------------------------------


@admin_provider_app.command("add")
def admin_provider_add(
    inami: Annotated[str, typer.Argument(help="INAMI number (its competence code gives the role)")],
    first: Annotated[str, typer.Option("--first", help="given name")],
    last: Annotated[str, typer.Option("--last", help="family name")],
    niss: Annotated[str, typer.Option(help="the provider's NISS")] = "",
    supervisor: Annotated[str, typer.Option(help="for a GP in training: the supervising GP's INAMI")] = "",
    start: Annotated[str | None, typer.Option("--from", help="practising since (default 2000-01-01)")] = None,
    end: Annotated[str | None, typer.Option("--to", help="practising until (default: open)")] = None,
    key: Annotated[
        Path | None,
        typer.Option(
            help="private key file of its credential, created when missing (default <data>/keys/INAMI.pem)"
        ),
    ] = None,
    wait: Annotated[bool, typer.Option(help="wait until all insurers know the provider")] = True,
    wait_seconds: Annotated[float, typer.Option(help="how long to wait for the insurers")] = 60.0,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Add (or update) a provider in eHealth's cadastre with its credential; the insurers follow."""
    from mycarenet_sdk.admin import DEFAULT_VALID_FROM

    key_file = key or data / "keys" / f"{inami}.pem"
    since, until = _parse_date(start) or DEFAULT_VALID_FROM, _parse_date(end)

    async def go(admin: AdminClient) -> ProviderAdded:
        return await admin.add_provider(
            inami,
            first_name=first,
            last_name=last,
            niss=niss,
            supervisor_inami=supervisor,
            valid_from=since,
            valid_to=until,
            key_file=key_file,
            wait=wait,
            wait_seconds=wait_seconds,
        )

    added = _run_admin(data, go)
    if as_json:
        _print_json(
            {
                "provider": MessageToDict(added.provider, preserving_proto_field_name=True),
                "created": added.created,
                "change_sequence": added.change_sequence,
                "fingerprint": added.fingerprint,
                "key_file": str(added.key_file) if added.key_file else None,
                "key_created": added.key_created,
                "insurers": {c: p.applied_sequence for c, p in added.positions.items()},
            }
        )
        return
    console.print(_provider_table(added.provider, "provider " + ("added" if added.created else "updated")))
    console.print(
        f"credential {added.fingerprint[:16]}… key {added.key_file}" + (" (new)" if added.key_created else "")
    )
    if added.positions:
        console.print(
            f"known to insurers {', '.join(sorted(added.positions))}"
            f" (cadastre change {added.change_sequence})"
        )


@admin_provider_app.command("show")
def admin_provider_show(
    inami: Annotated[str, typer.Argument(help="INAMI number")],
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """A provider's cadastre entry."""
    reply = _run_admin(data, lambda a: a.get_provider(inami))
    _emit(reply, as_json, _provider_table(reply.provider, f"provider {inami}", reply.organisation_inamis))


@admin_patient_app.command("add")
def admin_patient_add(
    niss: Annotated[str, typer.Argument(help="the patient's NISS")],
    insurer: Annotated[str, typer.Option(help="insurer code: 100 200 300 400 500 600 900")],
    first: Annotated[str, typer.Option("--first", help="given name")] = "Test",
    last: Annotated[str, typer.Option("--last", help="family name")] = "Patient",
    birth_date: Annotated[str | None, typer.Option(help="default: from the NISS")] = None,
    sex: Annotated[str | None, typer.Option(help="male, female or unknown (default: from the NISS)")] = None,
    registration_number: Annotated[str, typer.Option(help="member number (default M<NISS>)")] = "",
    start: Annotated[
        str | None, typer.Option("--from", help="affiliated since (default: birth, ≥ 1990)")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="affiliated until (default: open)")] = None,
    chronic: Annotated[bool, typer.Option("--chronic", help="chronic-condition status")] = False,
    medical_house: Annotated[str, typer.Option(help="INAMI of its medical house (flat-fee contract)")] = "",
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Add (or update) a patient as a member of its insurer; the hub learns the affiliation from the feed."""
    born, since, until = _parse_date(birth_date), _parse_date(start), _parse_date(end)

    async def go(admin: AdminClient) -> Any:
        await admin.add_patient(
            niss,
            insurer=insurer,
            first_name=first,
            last_name=last,
            birth_date=born,
            sex=sex,
            registration_number=registration_number,
            affiliated_from=since,
            affiliated_to=until,
            chronic_condition=chronic,
            medical_house_inami=medical_house,
        )
        return await admin.get_member(niss, insurer=insurer)

    member = _run_admin(data, go)
    if as_json:
        _emit(member, True)
        return
    table = Table(title=f"member of insurer {insurer}")
    for col in ("niss", "name", "born", "member number", "affiliated"):
        table.add_column(col)
    p = member.patient
    table.add_row(
        p.niss,
        f"{p.first_name} {p.last_name}",
        _fmt_date(p.birth_date),
        f"{p.member.mutuality_code}/{p.member.registration_number}",
        ", ".join(_period_text(a) for a in member.affiliations),
    )
    console.print(table)


@admin_org_app.command("add")
def admin_organisation_add(
    inami: Annotated[str, typer.Argument(help="INAMI number of the organisation")],
    name: Annotated[str, typer.Option(help="its name")],
    kind: Annotated[
        str, typer.Option(help="medical-house, group-practice or pharmacy (its members: its pharmacists)")
    ] = "medical-house",
    member: Annotated[list[str] | None, typer.Option(help="INAMI of a member provider (repeat)")] = None,
    start: Annotated[str | None, typer.Option("--from", help="since (default 2000-01-01)")] = None,
    wait: Annotated[bool, typer.Option(help="wait until all insurers know it")] = True,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Add (or update) a medical house, group practice or pharmacy with its members; the insurers follow.
    A pharmacy's session needs its key too: `mycarenet admin credential add INAMI --kind organisation`."""
    from mycarenet_sdk.admin import DEFAULT_VALID_FROM

    since = _parse_date(start) or DEFAULT_VALID_FROM
    reply = _run_admin(
        data,
        lambda a: a.add_organisation(
            inami, name=name, kind=kind, members=member or (), valid_from=since, wait=wait
        ),
    )
    table = Table(title="organisation " + ("added" if reply.created else "updated"))
    for col in ("inami", "name", "members", "change"):
        table.add_column(col)
    o = reply.organisation
    table.add_row(o.inami, o.name, ", ".join(m.inami for m in o.members) or "—", str(reply.change_sequence))
    _emit(reply, as_json, table)


@admin_credential_app.command("add")
def admin_credential_add(
    subject: Annotated[str, typer.Argument(help="who: a person's NISS, a provider's INAMI ...")],
    kind: Annotated[str, typer.Option(help="person, provider, organisation or company")] = "person",
    key: Annotated[
        Path | None,
        typer.Option(help="private key file, created when missing (default <data>/keys/SUBJECT.pem)"),
    ] = None,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Bind a key to a person (as the eID does), e.g. a mandatee who will log in under a mandate."""
    from mycarenet_sdk.keys import ensure_key_file

    key_file = key or data / "keys" / f"{subject}.pem"
    _, created = ensure_key_file(key_file)
    print_ = _run_admin(data, lambda a: a.register_credential(subject, kind=kind, key_file=key_file))
    if as_json:
        _print_json({"subject": subject, "kind": kind, "fingerprint": print_, "key_file": str(key_file)})
    else:
        console.print(
            f"credential of {kind} {subject}: {print_} (key {key_file}{', new' if created else ''})"
        )


@admin_credential_app.command("revoke")
def admin_credential_revoke(
    subject: Annotated[str, typer.Argument(help="whose credential")],
    fingerprint: Annotated[str, typer.Option(help="SHA-256 fingerprint of the key")],
    kind: Annotated[str, typer.Option(help="provider, person, organisation or company")] = "provider",
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Revoke anyone's credential; the sessions opened with it end."""
    reply = _run_admin(data, lambda a: a.revoke_credential(subject, fingerprint, kind=kind))
    if as_json:
        _emit(reply, True)
    else:
        console.print(f"revoked: {'yes' if reply.revoked else 'no'}, sessions ended: {reply.ended_sessions}")


@admin_relation_app.command("add")
def admin_relation_add(
    provider: Annotated[str, typer.Argument(help="INAMI of the provider")],
    patient: Annotated[str, typer.Argument(help="NISS of the patient")],
    start: Annotated[str | None, typer.Option("--from", help="first day (default: today at eHealth)")] = None,
    end: Annotated[str | None, typer.Option("--to", help="last day (default: open)")] = None,
    proof: Annotated[str, typer.Option(help="eid, isi or declaration")] = "eid",
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Register a therapeutic relation for any provider and patient."""
    first, last = _parse_date(start), _parse_date(end)
    relation = _run_admin(
        data, lambda a: a.register_relation(provider, patient, start=first, end=last, proof=proof)
    )
    _emit(relation, as_json, _relations_table([relation], "therapeutic relation registered"))


@admin_app.command("rotate-key")
def admin_rotate_key(data: DataOpt = DEFAULT_DATA, as_json: JsonOpt = False) -> None:
    """Rotate eHealth's token signing key (logins in progress keep working)."""
    key = _run_admin(data, lambda a: a.rotate_signing_key())
    if as_json:
        _emit(key, True)
    else:
        console.print(f"eHealth now signs with {key.key_id}")


@admin_app.command("cadastre")
def admin_cadastre(
    wait_for: Annotated[
        int | None, typer.Option("--wait-for", help="wait until every insurer applied this change")
    ] = None,
    wait_seconds: Annotated[float, typer.Option(help="how long to wait")] = 60.0,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """How far each insurer has followed eHealth's cadastre (and, with --wait-for, wait for a change)."""

    async def go(admin: AdminClient) -> tuple[int, dict[str, Any]]:
        head = await admin.cadastre_head()
        if wait_for is not None:
            return head, dict(await admin.wait_for_cadastre(wait_for, seconds=wait_seconds))
        return head, dict(await admin.cadastre_positions())

    head, positions = _run_admin(data, go)
    if as_json:
        _print_json(
            {
                "head_sequence": head,
                "insurers": {
                    c: {"applied_sequence": p.applied_sequence, "following": p.following}
                    for c, p in positions.items()
                },
            }
        )
        return
    table = Table(title=f"eHealth's cadastre is at change {head}")
    for col in ("insurer", "applied", "following"):
        table.add_column(col)
    for code, p in sorted(positions.items()):
        table.add_row(code, str(p.applied_sequence), "yes" if p.following else "[red]no[/red]")
    console.print(table)


# --- the sandbox: the test clock ----------------------------------------------------------------------------


def _clock_json(state: ClockState) -> dict[str, Any]:
    return {
        "today": state.today.isoformat(),
        "now": state.now.isoformat(),
        "offset_seconds": state.offset.total_seconds(),
        "processes": [
            {
                "process": p.process,
                "observed": p.observed,
                "today": p.today.isoformat() if p.today else None,
                "year_ends_run": list(p.year_ends_run),
                "error": p.error,
            }
            for p in state.processes
        ],
    }


def _show_clock(state: ClockState, as_json: bool) -> None:
    if as_json:
        _print_json(_clock_json(state))
        return
    table = Table(title=f"the mesh date is {state.today:%d.%m.%Y} ({state.now:%Y-%m-%d %H:%M:%S} UTC)")
    for col in ("process", "observes", "year ends run"):
        table.add_column(col)
    for p in state.processes:
        seen = f"{p.today:%d.%m.%Y}" if p.observed and p.today else f"[red]not reached[/red] {p.error}"
        table.add_row(p.process, seen, ", ".join(map(str, p.year_ends_run)))
    console.print(table)


@clock_app.command("show")
def clock_show(data: DataOpt = DEFAULT_DATA, as_json: JsonOpt = False) -> None:
    """The mesh date and what each process observes."""
    _show_clock(_run_admin(data, lambda a: a.clock()), as_json)


@clock_app.command("set")
def clock_set(
    day: Annotated[str, typer.Argument(help="the new mesh date (YYYY-MM-DD or DD.MM.YYYY), never earlier")],
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Move the mesh to a date; returns once every process observes it and the insurers ran the year ends
    it went over."""
    parsed = _parse_date(day)
    assert parsed is not None
    _show_clock(_run_admin(data, lambda a: a.set_clock(parsed)), as_json)


@clock_app.command("advance")
def clock_advance(
    days: Annotated[int, typer.Argument(help="days to move forward (0..36500)")],
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Move the mesh forward by a number of days (as `clock set`)."""
    _show_clock(_run_admin(data, lambda a: a.advance_clock(days)), as_json)


# --- scenario files -----------------------------------------------------------------------------------------

ScenarioFiles = Annotated[
    list[Path], typer.Argument(help="scenario files (YAML)", exists=True, dir_okay=False)
]


def _load_scenarios(files: list[Path]) -> list[Any]:
    """Every file checked; all their problems printed (with lines) and exit 2 when one is invalid."""
    from mycarenet_scenario import ScenarioFileError, load_scenario

    loaded, problems = [], []
    for path in files:
        try:
            loaded.append(load_scenario(path))
        except ScenarioFileError as error:
            problems += error.lines()
    if problems:
        for line in problems:
            err_console.print(line, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    return loaded


@scenario_app.command("check")
def scenario_check(files: ScenarioFiles) -> None:
    """Check scenario files without playing them (exit 2 with every problem and its line)."""
    for loaded in _load_scenarios(files):
        console.print(f"{loaded.path}: {loaded.scenario.story}, {len(loaded.scenario.steps)} steps: valid")


@scenario_app.command("run")
def scenario_run(
    files: ScenarioFiles,
    junit: Annotated[Path | None, typer.Option("--junit", help="also write a JUnit XML report here")] = None,
    wait: Annotated[float, typer.Option(help="seconds to wait for what the mesh does asynchronously")] = 30.0,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Play scenario files against the running cluster, each with its own providers and patients, together
    (their steps interleaved by date) and shifted by whole years to the first years the mesh clock allows.
    Exit 1 when a step fails."""
    from mycarenet_scenario import play_scenarios
    from mycarenet_scenario.mesh import cluster_access
    from mycarenet_scenario.report import as_json as report_json
    from mycarenet_scenario.report import print_report, write_junit

    loaded = _load_scenarios(files)
    desc = _describe(data)

    async def go() -> list[Any]:
        async with cluster_access(desc, wait_seconds=wait) as access:
            return await play_scenarios(loaded, access)

    results = asyncio.run(go())
    if junit is not None:
        write_junit(results, junit)
    if as_json:
        _print_json(report_json(results))
    else:
        print_report(results, console)
    if any(r.failed for r in results):
        raise typer.Exit(1)


# --- chaos ---------------------------------------------------------------------------------------------

ForOpt = Annotated[
    float, typer.Option("--for", help="seconds until the fault heals by itself (at most 3600)")
]


def _faults_table(faults: list[Any], title: str) -> Table:
    table = Table(title=title)
    for col in ("id", "fault", "on", "duration", "remaining"):
        table.add_column(col)
    for f in faults:
        if f.WhichOneof("fault") == "process":
            kind = chaos_pb2.ProcessAction.Name(f.process.action).removeprefix("PROCESS_ACTION_").lower()
            where = f.process.process
        else:
            link = f.link
            parts = [f"+{link.latency_ms} ms"] if link.latency_ms else []
            parts += [f"±{link.jitter_ms} ms"] if link.jitter_ms else []
            if link.error_percent:
                parts.append(f"{link.error_percent} % {code_pb2.Code.Name(link.error_code)}")
            kind, where = " ".join(parts), f"{link.source} → {link.target}"
        table.add_row(f.id, kind, where, f"{f.duration_ms / 1000:g} s", f"{f.remaining_ms / 1000:.1f} s")
    return table


def _chaos(data: Path, as_json: bool, fn: Callable[[AdminClient], Awaitable[Any]], title: str) -> None:
    """Run one chaos call; print the fault(s) it answers."""
    answer = _run_admin(data, fn)
    faults = answer if isinstance(answer, list) else [answer]
    if as_json:
        _print_json([MessageToDict(f, preserving_proto_field_name=True) for f in faults])
    else:
        console.print(_faults_table(faults, title))


@chaos_app.command("kill")
def chaos_kill(
    process: Annotated[str, typer.Argument(help="hub, ehealth, oa-100 … (as in cluster.json)")],
    seconds: ForOpt = 0.0,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """SIGKILL a process; it stays down for --for seconds, then the supervisor starts it again."""
    _chaos(data, as_json, lambda a: a.process_fault(process, "kill", seconds), "fault injected")


@chaos_app.command("pause")
def chaos_pause(
    process: Annotated[str, typer.Argument(help="hub, ehealth, oa-100 … (as in cluster.json)")],
    seconds: ForOpt = 5.0,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """SIGSTOP a process, SIGCONT after --for seconds."""
    _chaos(data, as_json, lambda a: a.process_fault(process, "pause", seconds), "fault injected")


@chaos_app.command("restart")
def chaos_restart(
    process: Annotated[str, typer.Argument(help="hub, ehealth, oa-100 … (as in cluster.json)")],
    seconds: ForOpt = 0.0,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Stop a process gracefully (SIGTERM); down for --for seconds, then started again."""
    _chaos(data, as_json, lambda a: a.process_fault(process, "restart", seconds), "fault injected")


SourceArg = Annotated[str, typer.Argument(help="the caller: a process, or client, backoffice, admin")]
TargetArg = Annotated[str, typer.Argument(help="the process receiving the calls")]


@chaos_app.command("latency")
def chaos_latency(
    source: SourceArg,
    target: TargetArg,
    ms: Annotated[int, typer.Option("--ms", help="added latency per call (at most 60000)")],
    jitter: Annotated[int, typer.Option("--jitter", help="random extra latency, up to (ms)")] = 0,
    seconds: ForOpt = 30.0,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Add latency to every call from SOURCE to TARGET (e.g. hub oa-300)."""
    _chaos(
        data,
        as_json,
        lambda a: a.link_fault(source, target, seconds, latency_ms=ms, jitter_ms=jitter),
        "fault injected",
    )


@chaos_app.command("errors")
def chaos_errors(
    source: SourceArg,
    target: TargetArg,
    percent: Annotated[int, typer.Option("--percent", help="share of the calls that fail (1..100)")],
    code: Annotated[str, typer.Option("--code", help="gRPC status code of a failed call")] = "UNAVAILABLE",
    seconds: ForOpt = 30.0,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Fail a share of the calls from SOURCE to TARGET with a status code."""
    status = getattr(grpc.StatusCode, code.upper(), None)
    if not isinstance(status, grpc.StatusCode) or status is grpc.StatusCode.OK:
        err_console.print(f"[red]--code: not a gRPC status code other than OK: {code}[/red]")
        raise typer.Exit(2)
    _chaos(
        data,
        as_json,
        lambda a: a.link_fault(source, target, seconds, error_percent=percent, error_code=status),
        "fault injected",
    )


@chaos_app.command("list")
def chaos_list(data: DataOpt = DEFAULT_DATA, as_json: JsonOpt = False) -> None:
    """The active faults, each with its remaining time."""
    _chaos(data, as_json, lambda a: a.list_faults(), "active faults")


@chaos_app.command("clear")
def chaos_clear(
    fault_id: Annotated[str | None, typer.Argument(help="the fault to heal (default: all)")] = None,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Heal one fault now, or all of them."""
    cleared = _run_admin(data, lambda a: a.clear_faults(fault_id))
    if as_json:
        _print_json({"cleared_ids": cleared})
    else:
        console.print(f"healed: {', '.join(cleared) or 'nothing was active'}")


def main() -> None:
    app()
