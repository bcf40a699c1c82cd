"""The hub's requests, parsed into typed values with the core :class:`~mycarenet_core.validation.Checker`:
every field violation of a request (with its MyCareNet code) is reported at once, as one INVALID_ARGUMENT,
before anything is looked up, throttled or forwarded. A servicer parses, calls the domain
(:class:`hub.services.HubCore`), and turns the answer into its proto.

Every string has a maximum and every repeated field a maximum number of items.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from mycarenet_core.clock import Clock
from mycarenet_core.codes import McnCode
from mycarenet_core.gen.mycarenet.common.v1 import common_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_pb2
from mycarenet_core.gen.mycarenet.dmg.v1 import dmg_service_pb2 as pub
from mycarenet_core.gen.mycarenet.dmg.v1 import mailbox_service_pb2 as mbx
from mycarenet_core.gen.mycarenet.hub.v1 import mailbox_intake_service_pb2 as intake
from mycarenet_core.identifiers import (
    INSURER_CODES,
    IdentifierError,
    MemberNumber,
    Role,
    parse_member_number,
)
from mycarenet_core.sessions import Caller
from mycarenet_core.validation import Checker

MAX_REFERENCE = 200  # the requester reference (the mailbox and the audit keep 200 characters)
MAX_INSURERS = 50  # insurer codes in one request (repeats allowed, taken once)
MAX_KINDS = 16  # message kinds of a mailbox filter
MAX_CONFIRM = 1000  # message ids (or content hashes) confirmed in one call
MAX_MESSAGE_ID = 200
MAX_HASH = 64
MAX_DELIVERY = 1000  # messages in one delivery (an insurer's relay sends 100 at a time)
DEFAULT_PAGE = 50
MAX_PAGE = 500


@dataclass(frozen=True)
class PatientRef:
    """The patient as the request names them: by NISS, or by member number (routed by mutuality)."""

    selector: common_pb2.PatientSelector  # as asked: forwarded to the insurer unchanged
    niss: str = ""
    member: MemberNumber | None = None


@dataclass(frozen=True)
class Consult:
    reference: str
    patient: PatientRef
    on: dt.date
    request: pub.ConsultDmgRequest


@dataclass(frozen=True)
class Notify:
    reference: str
    patient: PatientRef
    on: dt.date
    request: pub.NotifyDmgRequest


@dataclass(frozen=True)
class Enrol:
    reference: str
    insurers: list[str]
    request: pub.EnrolDmgRequest  # forwarded to each insurer as received (its start date: theirs by default)


@dataclass(frozen=True)
class ListPost:
    reference: str
    year: int
    insurers: list[str]


@dataclass(frozen=True)
class MessagePage:
    kinds: list[int]
    size: int
    after_id: int


@dataclass(frozen=True)
class Confirm:
    message_ids: list[str]
    hashes: list[str]


# --- fields ---------------------------------------------------------------------------------------------


def reference(check: Checker, raw: str, *, required: bool) -> str:
    """The requester reference as given (it is echoed and is the idempotency key of a notify)."""
    if required and not raw:
        check.add("requester_reference", McnCode.MANDATORY_FIELD_MISSING, "the reference is mandatory")
    elif len(raw) > MAX_REFERENCE:
        check.add("requester_reference", McnCode.BAD_FORMAT, f"at most {MAX_REFERENCE} characters")
    return raw


def requester(check: Checker, given: str, caller: Caller) -> None:
    """An optional requester INAMI must be the session's requester of record (156)."""
    inami = check.optional_inami("requester_inami", given)
    if inami is not None and inami.value != caller.requester_inami:
        check.add(
            "requester_inami", McnCode.AUTHOR_MISMATCH, "requester differs from the authenticated session"
        )


def supervisor(check: Checker, given: str, caller: Caller) -> None:
    """A GP in training notifies under a supervisor (100 without); the insurer checks it is the right one."""
    if caller.role is Role.GP_IN_TRAINING and not given:
        check.add(
            "supervisor_inami",
            McnCode.MANDATORY_FIELD_MISSING,
            "a GP in training notifies under a supervisor",
        )


def patient(check: Checker, selector: common_pb2.PatientSelector) -> PatientRef:
    which = selector.WhichOneof("identifier")
    if which == "niss":
        return PatientRef(selector, niss=check.niss("patient.niss", selector.niss))
    if which == "member":
        member = selector.member
        if len(member.mutuality_code) > 8:
            check.add("patient.member.mutuality_code", McnCode.MUTUALITY_UNKNOWN, "unknown mutuality code")
            return PatientRef(selector)
        if len(member.registration_number) > 32:
            check.add("patient.member", McnCode.BAD_FORMAT, "registration number too long")
            return PatientRef(selector)
        try:
            return PatientRef(
                selector, member=parse_member_number(member.mutuality_code, member.registration_number)
            )
        except IdentifierError as error:
            path = "patient.member.mutuality_code" if error.code == 121 else "patient.member"
            check.add(path, error.code, error.reason)
            return PatientRef(selector)
    check.add("patient", McnCode.MANDATORY_FIELD_MISSING, "patient NISS or member number is mandatory")
    return PatientRef(selector)


def insurers(check: Checker, codes: Iterable[str], served: Iterable[str], field: str) -> list[str]:
    """The asked insurer codes, each a node code (121 otherwise), without repeats; when none are asked,
    every insurer this hub serves (all seven in a full mesh)."""
    asked = list(codes)
    if not check.items(field, asked, maximum=MAX_INSURERS):
        return []
    for code in asked:
        if code not in INSURER_CODES:
            check.add(field, McnCode.MUTUALITY_UNKNOWN, f"unknown insurer {code[:10]!r}")
    served_set = set(served)
    return list(dict.fromkeys(asked or [c for c in INSURER_CODES if c in served_set]))


def kinds(check: Checker, values: Iterable[int]) -> list[int]:
    wanted = list(values)
    check.items("kinds", wanted, maximum=MAX_KINDS)
    return [int(k) for k in wanted if k]


# --- requests -------------------------------------------------------------------------------------------


def consult(request: pub.ConsultDmgRequest, caller: Caller) -> Consult:
    with Checker() as check:
        ref = reference(check, request.requester_reference, required=False)
        requester(check, request.requester_inami, caller)
        on = check.date("request_date", request.request_date)
        who = patient(check, request.patient)
    assert on is not None
    return Consult(ref, who, on, request)


def notify(request: pub.NotifyDmgRequest, caller: Caller) -> Notify:
    with Checker() as check:
        ref = reference(check, request.requester_reference, required=True)
        requester(check, request.requester_inami, caller)
        supervisor(check, request.supervisor_inami, caller)
        on = check.date("contact_date", request.contact_date)
        who = patient(check, request.patient)
    assert on is not None
    return Notify(ref, who, on, request)


def enrol(request: pub.EnrolDmgRequest, served: Iterable[str], clock: Clock) -> Enrol:
    with Checker() as check:
        ref = reference(check, request.requester_reference, required=False)
        codes = insurers(check, request.insurer_codes, served, "insurer_codes")
        check.date("start_date", request.start_date, default=clock.today())
    return Enrol(ref, codes, request)


def post_list(request: mbx.PostPatientListRequest, served: Iterable[str], clock: Clock) -> ListPost:
    with Checker() as check:
        ref = reference(check, request.requester_reference, required=True)
        when = check.date("reference_date", request.reference_date)
        codes = insurers(check, request.insurer_codes, served, "insurer_codes")
        this_year = clock.today().year
        if when is not None and when.year > this_year:
            check.add("reference_date", McnCode.DATE_IN_FUTURE, "the year asked for is in the future")
        elif when is not None and when.year < this_year - 2:
            check.add(
                "reference_date", McnCode.DATE_TOO_OLD, "the year asked for is more than two years back"
            )
    assert when is not None
    return ListPost(ref, when.year, codes)


def message_page(request: mbx.GetMessagesRequest) -> MessagePage:
    with Checker() as check:
        wanted = kinds(check, request.kinds)
        size = check.page_size("page_size", request.page_size, default=DEFAULT_PAGE, maximum=MAX_PAGE)
        key = check.page_token("page_token", request.page_token, 1)
        after = 0
        if key is not None:
            if isinstance(key[0], int) and key[0] >= 0:
                after = key[0]
            else:
                check.add("page_token", McnCode.BAD_FORMAT, "not a page token from a previous answer")
    return MessagePage(wanted, size, after)


def watch_kinds(request: mbx.WatchMessagesRequest) -> list[int]:
    with Checker() as check:
        wanted = kinds(check, request.kinds)
    return wanted


def confirm(request: mbx.ConfirmMessagesRequest) -> Confirm:
    with Checker() as check:
        ids, hashes = list(request.message_ids), list(request.content_hashes)
        if check.items("message_ids", ids, maximum=MAX_CONFIRM):
            for i, value in enumerate(ids):
                if len(value) > MAX_MESSAGE_ID:
                    check.add(f"message_ids[{i}]", McnCode.BAD_FORMAT, f"at most {MAX_MESSAGE_ID} characters")
        if check.items("content_hashes", hashes, maximum=MAX_CONFIRM):
            for i, value in enumerate(hashes):
                if len(value) > MAX_HASH:
                    check.add(f"content_hashes[{i}]", McnCode.BAD_FORMAT, f"at most {MAX_HASH} characters")
    return Confirm(ids, hashes)


def delivery(request: intake.DeliverMessagesRequest) -> list[dmg_pb2.MailboxMessage]:
    """The messages of one insurer's delivery, each stamped with the delivering insurer."""
    code = request.insurer_code
    with Checker() as check:
        if code not in INSURER_CODES:
            check.add("insurer_code", McnCode.MUTUALITY_UNKNOWN, f"unknown insurer {code[:10]!r}")
        if check.items("messages", request.messages, maximum=MAX_DELIVERY):
            for i, message in enumerate(request.messages):
                at = f"messages[{i}]"
                if not message.message_id:
                    check.add(f"{at}.message_id", McnCode.MANDATORY_FIELD_MISSING, "missing")
                elif len(message.message_id) > MAX_MESSAGE_ID:
                    check.add(f"{at}.message_id", McnCode.BAD_FORMAT, f"at most {MAX_MESSAGE_ID} characters")
                if not message.recipient_inami:
                    check.add(f"{at}.recipient_inami", McnCode.MANDATORY_FIELD_MISSING, "missing")
                elif len(message.recipient_inami) > 11:
                    check.add(f"{at}.recipient_inami", McnCode.BAD_FORMAT, "an INAMI number has 11 digits")
                if message.insurer_code and message.insurer_code != code:
                    check.add(
                        f"{at}.insurer_code", McnCode.ROUTING_INCONSISTENT, "not the delivering insurer"
                    )
                if message.kind == dmg_pb2.MESSAGE_KIND_UNSPECIFIED:
                    check.add(f"{at}.kind", McnCode.MANDATORY_FIELD_MISSING, "missing")
                if len(message.requester_reference) > MAX_REFERENCE:
                    check.add(
                        f"{at}.requester_reference", McnCode.BAD_FORMAT, f"at most {MAX_REFERENCE} characters"
                    )
    messages = []
    for message in request.messages:
        copy = dmg_pb2.MailboxMessage()
        copy.CopyFrom(message)
        copy.insurer_code = code
        messages.append(copy)
    return messages


__all__ = [
    "Confirm",
    "Consult",
    "Enrol",
    "ListPost",
    "MessagePage",
    "Notify",
    "PatientRef",
    "confirm",
    "consult",
    "delivery",
    "enrol",
    "message_page",
    "notify",
    "post_list",
    "watch_kinds",
]
