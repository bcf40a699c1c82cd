"""Repositories: each owns the SQL of one aggregate. The ORM ones take the session and the caller owns
the transaction; the consult's reads (:mod:`.consult`) and the holder-change log (:mod:`.holder_changes`)
are SQLAlchemy Core statements built once, at import."""

from .consult import ConsultRepository, PatientOnDay, Registration
from .dmg_files import DmgFileRepository, HolderYearEntry, LoadedFile
from .members import FeedEntry, MemberData, MemberRepository, MemberRow, Period, UpsertResult, covers
from .records import OutboxRepository, RequestRecordRepository, outbox_row
from .reference import CadastreRepository, EnrolmentRepository, OrganisationData, ReferenceRepository

__all__ = [
    "CadastreRepository",
    "ConsultRepository",
    "DmgFileRepository",
    "EnrolmentRepository",
    "FeedEntry",
    "HolderYearEntry",
    "LoadedFile",
    "MemberData",
    "MemberRepository",
    "MemberRow",
    "OrganisationData",
    "OutboxRepository",
    "PatientOnDay",
    "Period",
    "ReferenceRepository",
    "Registration",
    "RequestRecordRepository",
    "UpsertResult",
    "covers",
    "outbox_row",
]
