"""The database schema, declared with SQLModel.

Times are naive UTC (DateTime columns without zone) on both backends.

`resource` holds each resource's current version (or its tombstone); `resource_version`
every version ever written, in write order (`seq`), for history and vread. The `idx_*`
tables hold search index values of current versions, one row per value, rewritten in
the same transaction as the resource itself.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

TYPE_LEN = 64
ID_LEN = 64


class ResourceRow(SQLModel, table=True):
    __tablename__ = "resource"
    __table_args__ = (Index("ix_resource_type_updated", "res_type", "last_updated"),)

    res_type: str = Field(sa_column=Column(String(TYPE_LEN), primary_key=True))
    res_id: str = Field(sa_column=Column(String(ID_LEN), primary_key=True))
    version_id: int
    last_updated: datetime = Field(sa_column=Column(DateTime, nullable=False, index=True))
    deleted: bool = False
    content: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class VersionRow(SQLModel, table=True):
    __tablename__ = "resource_version"
    __table_args__ = (
        UniqueConstraint("res_type", "res_id", "version_id", name="uq_version"),
        Index("ix_version_type_seq", "res_type", "seq"),
    )

    seq: int | None = Field(default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True))
    res_type: str = Field(sa_column=Column(String(TYPE_LEN), nullable=False))
    res_id: str = Field(sa_column=Column(String(ID_LEN), nullable=False))
    version_id: int
    last_updated: datetime = Field(sa_column=Column(DateTime, nullable=False, index=True))
    method: str = Field(sa_column=Column(String(8), nullable=False))
    deleted: bool = False
    content: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


def _idx_args(name: str, *value_cols: str) -> tuple:
    return (
        Index(f"ix_{name}_res", "res_type", "res_id"),
        Index(f"ix_{name}_value", "res_type", "param", *value_cols),
    )


class StringIndex(SQLModel, table=True):
    __tablename__ = "idx_string"
    __table_args__ = _idx_args("string", "value")

    row_id: int | None = Field(default=None, primary_key=True)
    res_type: str = Field(sa_column=Column(String(TYPE_LEN), nullable=False))
    res_id: str = Field(sa_column=Column(String(ID_LEN), nullable=False))
    param: str = Field(sa_column=Column(String(100), nullable=False))
    value: str = Field(sa_column=Column(String(400), nullable=False))  # normalised
    exact: str = Field(sa_column=Column(String(400), nullable=False))


class TokenIndex(SQLModel, table=True):
    __tablename__ = "idx_token"
    __table_args__ = _idx_args("token", "code", "system")

    row_id: int | None = Field(default=None, primary_key=True)
    res_type: str = Field(sa_column=Column(String(TYPE_LEN), nullable=False))
    res_id: str = Field(sa_column=Column(String(ID_LEN), nullable=False))
    param: str = Field(sa_column=Column(String(100), nullable=False))
    system: str | None = Field(default=None, sa_column=Column(String(400), nullable=True))
    code: str | None = Field(default=None, sa_column=Column(String(400), nullable=True))
    text: str | None = Field(default=None, sa_column=Column(String(400), nullable=True))  # normalised


class ReferenceIndex(SQLModel, table=True):
    __tablename__ = "idx_reference"
    __table_args__ = (
        Index("ix_reference_res", "res_type", "res_id"),
        Index("ix_reference_target", "target_type", "target_id", "param"),
        Index("ix_reference_url", "url"),
    )

    row_id: int | None = Field(default=None, primary_key=True)
    res_type: str = Field(sa_column=Column(String(TYPE_LEN), nullable=False))
    res_id: str = Field(sa_column=Column(String(ID_LEN), nullable=False))
    param: str = Field(sa_column=Column(String(100), nullable=False))
    target_type: str | None = Field(default=None, sa_column=Column(String(TYPE_LEN), nullable=True))
    target_id: str | None = Field(default=None, sa_column=Column(String(ID_LEN), nullable=True))
    url: str | None = Field(default=None, sa_column=Column(String(1000), nullable=True))


class DateIndex(SQLModel, table=True):
    __tablename__ = "idx_date"
    __table_args__ = _idx_args("date", "low", "high")

    row_id: int | None = Field(default=None, primary_key=True)
    res_type: str = Field(sa_column=Column(String(TYPE_LEN), nullable=False))
    res_id: str = Field(sa_column=Column(String(ID_LEN), nullable=False))
    param: str = Field(sa_column=Column(String(100), nullable=False))
    low: datetime = Field(sa_column=Column(DateTime, nullable=False))
    high: datetime = Field(sa_column=Column(DateTime, nullable=False))


class NumberIndex(SQLModel, table=True):
    """Numbers and quantities: the value with its implicit precision range."""

    __tablename__ = "idx_number"
    __table_args__ = _idx_args("number", "value")

    row_id: int | None = Field(default=None, primary_key=True)
    res_type: str = Field(sa_column=Column(String(TYPE_LEN), nullable=False))
    res_id: str = Field(sa_column=Column(String(ID_LEN), nullable=False))
    param: str = Field(sa_column=Column(String(100), nullable=False))
    value: Decimal = Field(sa_column=Column(Numeric(asdecimal=True), nullable=False))
    low: Decimal = Field(sa_column=Column(Numeric(asdecimal=True), nullable=False))
    high: Decimal = Field(sa_column=Column(Numeric(asdecimal=True), nullable=False))
    system: str | None = Field(default=None, sa_column=Column(String(400), nullable=True))
    code: str | None = Field(default=None, sa_column=Column(String(100), nullable=True))


class SchemaVersion(SQLModel, table=True):
    __tablename__ = "schema_version"

    version: int = Field(primary_key=True)
    applied: datetime = Field(sa_column=Column(DateTime, nullable=False))


resource_table = ResourceRow.__table__
version_table = VersionRow.__table__
reference_index_table = ReferenceIndex.__table__
INDEX_TABLES = {
    "string": StringIndex.__table__,
    "token": TokenIndex.__table__,
    "uri": TokenIndex.__table__,
    "reference": ReferenceIndex.__table__,
    "date": DateIndex.__table__,
    "number": NumberIndex.__table__,
    "quantity": NumberIndex.__table__,
}


class OutboxRow(SQLModel, table=True):
    """A message to a partner, written in the transaction of the change that caused it.

    Delivery claims a row by setting `claimed_by` and a lease (`claimed_until`); a worker
    that dies leaves the lease to expire and another worker takes the message over.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_patient", "patient"),
    )

    id: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(sa_column=Column(String(64), nullable=False, unique=True))  # X-Request-Id
    correlation_id: str = Field(sa_column=Column(String(64), nullable=False))           # X-Correlation-Id
    destination: str = Field(sa_column=Column(String(64), nullable=False))              # partner ODS code
    method: str = Field(sa_column=Column(String(8), nullable=False))
    path: str = Field(sa_column=Column(String(1000), nullable=False))                   # under the partner's base
    content_type: str = Field(sa_column=Column(String(100), nullable=False))
    body: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    kind: str = Field(sa_column=Column(String(64), nullable=False))                     # e.g. "assessment-request"
    patient: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    status: str = Field(sa_column=Column(String(16), nullable=False))  # pending|delivering|delivered|dead|cancelled
    attempts: int = 0
    created: datetime = Field(sa_column=Column(DateTime, nullable=False))
    next_attempt_at: datetime = Field(sa_column=Column(DateTime, nullable=False))
    claimed_by: str | None = Field(default=None, sa_column=Column(String(100), nullable=True))
    claimed_until: datetime | None = Field(default=None, sa_column=Column(DateTime, nullable=True))
    delivered_at: datetime | None = Field(default=None, sa_column=Column(DateTime, nullable=True))
    last_status: int | None = None
    last_error: str | None = Field(default=None, sa_column=Column(String(2000), nullable=True))


class InboundRow(SQLModel, table=True):
    """A write request already processed, by sender and X-Request-Id, with its response."""

    __tablename__ = "inbound_message"
    __table_args__ = (UniqueConstraint("sender", "request_id", name="uq_inbound"),)

    id: int | None = Field(default=None, primary_key=True)
    sender: str = Field(sa_column=Column(String(100), nullable=False))
    request_id: str = Field(sa_column=Column(String(200), nullable=False))
    received: datetime = Field(sa_column=Column(DateTime, nullable=False))
    status: int
    headers: str = Field(sa_column=Column(String(4000), nullable=False))   # JSON object
    body: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class CompartmentRow(SQLModel, table=True):
    """Which child (Patient id) a current resource is about: its Patient compartment."""

    __tablename__ = "access_compartment"
    __table_args__ = (Index("ix_access_compartment_patient", "patient_id", "res_type"),)

    res_type: str = Field(sa_column=Column(String(TYPE_LEN), primary_key=True))
    res_id: str = Field(sa_column=Column(String(ID_LEN), primary_key=True))
    patient_id: str = Field(sa_column=Column(String(ID_LEN), primary_key=True))


class AuthorRow(SQLModel, table=True):
    """An organisation (ODS code) that wrote a version of a resource."""

    __tablename__ = "access_author"
    __table_args__ = (Index("ix_access_author_org", "organisation", "res_type"),)

    res_type: str = Field(sa_column=Column(String(TYPE_LEN), primary_key=True))
    res_id: str = Field(sa_column=Column(String(ID_LEN), primary_key=True))
    organisation: str = Field(sa_column=Column(String(64), primary_key=True))


class GrantRow(SQLModel, table=True):
    """An organisation may see a child, because of a source resource (config/access.toml)."""

    __tablename__ = "access_grant"
    __table_args__ = (Index("ix_access_grant_org", "organisation", "patient_id"),)

    source_type: str = Field(sa_column=Column(String(TYPE_LEN), primary_key=True))
    source_id: str = Field(sa_column=Column(String(ID_LEN), primary_key=True))
    patient_id: str = Field(sa_column=Column(String(ID_LEN), primary_key=True))
    organisation: str = Field(sa_column=Column(String(64), primary_key=True))


class ConsentStateRow(SQLModel, table=True):
    """A child's current information-sharing decision, from its Consents (adapter/consent)."""

    __tablename__ = "access_consent"

    patient_id: str = Field(sa_column=Column(String(ID_LEN), primary_key=True))
    permitted: bool
    valid_until: datetime | None = Field(default=None, sa_column=Column(DateTime, nullable=True))
    consent_id: str | None = Field(default=None, sa_column=Column(String(ID_LEN), nullable=True))
    reason: str = Field(sa_column=Column(String(1000), nullable=False))


class ExportJobRow(SQLModel, table=True):
    """A Bulk Data export (FHIR Bulk Data Access, asynchronous request pattern) and who asked."""

    __tablename__ = "export_job"

    id: str = Field(sa_column=Column(String(36), primary_key=True))
    client_id: str = Field(sa_column=Column(String(200), nullable=False))
    caller: str = Field(sa_column=Column(String(4000), nullable=False))   # JSON: the Caller, to run as
    request: str = Field(sa_column=Column(String(2000), nullable=False))  # the kick-off URL
    level: str = Field(sa_column=Column(String(16), nullable=False))      # system | patient | group
    group_id: str | None = Field(default=None, sa_column=Column(String(ID_LEN), nullable=True))
    types: str = Field(sa_column=Column(String(4000), nullable=False))    # JSON list
    since: datetime | None = Field(default=None, sa_column=Column(DateTime, nullable=True))
    status: str = Field(sa_column=Column(String(16), nullable=False))     # accepted|in-progress|completed|failed|cancelled
    progress: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    created: datetime = Field(sa_column=Column(DateTime, nullable=False))
    transaction_time: datetime = Field(sa_column=Column(DateTime, nullable=False))
    finished: datetime | None = Field(default=None, sa_column=Column(DateTime, nullable=True))
    error: str | None = Field(default=None, sa_column=Column(String(2000), nullable=True))


class ExportFileRow(SQLModel, table=True):
    """One NDJSON output file of an export (at most FILE_LINES resources of one type)."""

    __tablename__ = "export_file"

    job_id: str = Field(sa_column=Column(String(36), primary_key=True))
    seq: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    res_type: str = Field(sa_column=Column(String(TYPE_LEN), nullable=False))
    count: int
    content: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


outbox_table = OutboxRow.__table__
inbound_table = InboundRow.__table__
V1_TABLES = [ResourceRow.__table__, VersionRow.__table__, StringIndex.__table__, TokenIndex.__table__,
             ReferenceIndex.__table__, DateIndex.__table__, NumberIndex.__table__, SchemaVersion.__table__]
V2_TABLES = [outbox_table, inbound_table]
compartment_table = CompartmentRow.__table__
author_table = AuthorRow.__table__
grant_table = GrantRow.__table__
consent_state_table = ConsentStateRow.__table__
V3_TABLES = [compartment_table, author_table, grant_table, consent_state_table]
export_job_table = ExportJobRow.__table__
export_file_table = ExportFileRow.__table__
V4_TABLES = [export_job_table, export_file_table]


class AssessmentFactRow(SQLModel, table=True):
    """Per IHA/RHA Task, the dates the commissioning measures need (adapter/kpi/rules.py),
    kept by adapter/store/facts_sql.py in the transaction of every write that changes them."""

    __tablename__ = "kpi_assessment"
    __table_args__ = (Index("ix_kpi_assessment_due", "assessment", "due"),
                      Index("ix_kpi_assessment_patient", "patient_id"),
                      Index("ix_kpi_assessment_requested", "placement", "requested"),
                      Index("ix_kpi_assessment_done", "done"))  # schema 6: reports returned in a period

    task_id: str = Field(sa_column=Column(String(ID_LEN), primary_key=True))
    patient_id: str | None = Field(default=None, sa_column=Column(String(ID_LEN), nullable=True))
    assessment: str = Field(sa_column=Column(String(16), nullable=False))       # iha | rha
    status: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))  # Task.status
    counted: bool = True                                                      # not cancelled/rejected/...
    la: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    provider: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    placement: str = Field(sa_column=Column(String(16), nullable=False))        # in-area|out-of-area|placed-in|unknown
    age_band: str | None = Field(default=None, sa_column=Column(String(16), nullable=True))
    birth_date: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    entered_care: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    due: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    notified: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    consent: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    requested: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    accepted: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    appointment: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    did_not_attend: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    dna_count: int = 0
    assessed: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    reported: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    quality_assured: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    completed: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    done: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    turnaround_wd: int | None = None
    age_at_due: int | None = None
    own_consent: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    # schema 6
    offered_consent: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    response_id: str | None = Field(default=None, sa_column=Column(String(ID_LEN), nullable=True))
    audit_score: int | None = None                                            # latest quality audit, %
    audit_passed: bool | None = None                                          # score >= the pass mark
    plan_return_wd: int | None = None                                         # assessment -> report returned


assessment_fact_table = AssessmentFactRow.__table__
V5_TABLES = [assessment_fact_table]


class Oc2FactRow(SQLModel, table=True):
    """Per child in the SSDA903 OC2 cohort (looked after continuously for 12 months at 31 March)
    and census year, the OC2 health outcomes (adapter/kpi/oc2.py), kept by
    adapter/store/oc2_sql.py in the transaction of every write that changes them."""

    __tablename__ = "kpi_oc2"
    __table_args__ = (Index("ix_kpi_oc2_census", "census"),)

    patient_id: str = Field(sa_column=Column(String(ID_LEN), primary_key=True))
    year: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    census: date = Field(sa_column=Column(Date, nullable=False))              # 31 March of `year`
    la: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    placement: str = Field(sa_column=Column(String(16), nullable=False))
    age_band: str | None = Field(default=None, sa_column=Column(String(16), nullable=True))
    birth_date: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    health_check_applies: bool = False                                        # under 5 at 31 March
    sdq_applies: bool = False                                                 # aged 4-16 in the year
    immunisations: bool | None = None                                         # None: not recorded
    teeth_check: bool | None = None
    health_assessment: bool | None = None
    health_check: bool | None = None
    substance_misuse: bool | None = None
    sdq_score: int | None = None
    sdq_reason: str | None = Field(default=None, sa_column=Column(String(16), nullable=True))


oc2_fact_table = Oc2FactRow.__table__
V6_TABLES = [assessment_fact_table, oc2_fact_table]


class AuditJournalRow(SQLModel, table=True):
    """The audit events of reads, searches and refusals, as they are recorded: the AuditEvent
    JSON, appended in batches (adapter/rest/audit.py). They become AuditEvent resources (current
    and version rows, index rows) when the server is idle, and before anything that may return
    AuditEvents is answered; a row is deleted in the transaction that stores its resource."""

    __tablename__ = "audit_journal"

    seq: int | None = Field(default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"),
                                                           primary_key=True, autoincrement=True))
    content: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


audit_journal_table = AuditJournalRow.__table__
V7_TABLES = [audit_journal_table]
