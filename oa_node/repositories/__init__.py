"""Repositories: each owns the SQL of one aggregate and takes the session; the caller owns the transaction."""

from .dmg_files import DmgFileRepository, HolderYearEntry, LoadedFile
from .members import FeedEntry, MemberData, MemberRepository, Period, UpsertResult, covers
from .records import AuditRepository, OutboxRepository, RequestRecordRepository
from .reference import CadastreRepository, EnrolmentRepository, OrganisationData, ReferenceRepository

__all__ = [
    "AuditRepository",
    "CadastreRepository",
    "DmgFileRepository",
    "EnrolmentRepository",
    "FeedEntry",
    "HolderYearEntry",
    "LoadedFile",
    "MemberData",
    "MemberRepository",
    "OrganisationData",
    "OutboxRepository",
    "Period",
    "ReferenceRepository",
    "RequestRecordRepository",
    "UpsertResult",
    "covers",
]
