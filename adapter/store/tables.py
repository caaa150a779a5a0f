"""The database schema, declared with SQLModel.

Times are naive UTC (DateTime columns without zone) on both backends.

`resource` holds each resource's current version (or its tombstone); `resource_version`
every version ever written, in write order (`seq`), for history and vread. The `idx_*`
tables hold search index values of current versions, one row per value, rewritten in
the same transaction as the resource itself.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, LargeBinary, Numeric, String, UniqueConstraint
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
INDEX_TABLES = {
    "string": StringIndex.__table__,
    "token": TokenIndex.__table__,
    "uri": TokenIndex.__table__,
    "reference": ReferenceIndex.__table__,
    "date": DateIndex.__table__,
    "number": NumberIndex.__table__,
    "quantity": NumberIndex.__table__,
}
