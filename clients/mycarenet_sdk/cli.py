"""`mycarenet`: the command line of the mesh, on the SDK (typer + rich).

Where the mesh is comes from the cluster description (``mycarenet-cluster status --json``, written to
``<data>/cluster.json``) or from ``--hub``/``--ehealth``. ``login`` stores the session token in
``~/.config/mycarenet/session.json`` (or ``$MYCARENET_SESSION``) so that later commands reuse it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import grpc
import typer
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table

from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2, dmg_service_pb2
from mycarenet_core.telemetry import Telemetry, from_environment
from mycarenet_sdk.client import Client, MyCareNetError, Session, connect

T = TypeVar("T")

app = typer.Typer(help="Talk to a mycarenet-mesh as provider software would.", no_args_is_help=True)
oa_app = typer.Typer(help="Insurer back office: play the invoicing stream.", no_args_is_help=True)
app.add_typer(oa_app, name="oa")
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
    """The mesh's today: the cluster may run at a sandbox date (``up --today``); time runs on from there."""
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
    telemetry = from_environment("mycarenet-cli")

    async def go() -> T:
        async with _client(data, telemetry) as client:
            if session:
                _load_session(client)
            return await fn(client)

    try:
        return asyncio.run(go())
    except MyCareNetError as error:
        err_console.print(f"[red]{error.status.name}[/red] {error.reason}: {error.message}")
        for v in error.violations:
            err_console.print(f"  [yellow]{v.code}[/yellow] {v.field}: {v.description}")
        raise typer.Exit(1) from None
    finally:
        if telemetry is not None:
            telemetry.shutdown()


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
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Log in at eHealth by signing a challenge with your key."""
    key_path = key or data / "keys" / f"{inami}.pem"

    async def go(client: Client) -> Session:
        return await client.login(inami, key_path, principal_inami=principal)

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
        console.print(f"logged in as [bold]{inami}[/bold] until {session.expire_time:%Y-%m-%d %H:%M} UTC")


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
    for col in ("insurer", "holder", "from", "to", "procedure", "paid this year"):
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
        table.add_row(m.message_id, kind, m.insurer_code, about)
    return table


@app.command()
def inbox(
    kind: Annotated[
        list[str] | None,
        typer.Option(help="only this kind (closure, extension, patient_list, technical_ack)"),
    ] = None,
    data: DataOpt = DEFAULT_DATA,
    as_json: JsonOpt = False,
) -> None:
    """Show the pending messages of your mailbox."""
    try:
        kinds = [dmg_pb2.MessageKind.Value(f"MESSAGE_KIND_{k.upper()}") for k in kind or ()]
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
        pays = ", ".join(
            f"{x.amount.amount} {x.amount.currency_code} {_fmt_date(x.payment_date)}" for x in e.payments
        )
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
        async with open_channel(proc["address"], credentials=creds) as channel:
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
    # The insurer's back office has its own certificate: OA nodes answer only the hub and the back office.
    creds = (
        client_credentials(Path(tls["ca"]), Path(tls["backoffice_cert"]), Path(tls["backoffice_key"]))
        if tls
        else None
    )

    async def go() -> Message:
        found = await _find_insurer(desc, niss, creds)
        async with open_channel(found[1], credentials=creds) as channel:
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


def main() -> None:
    app()
