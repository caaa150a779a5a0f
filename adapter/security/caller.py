"""The identity of whoever asks the store for something.

Every repository call takes a Caller, so access and consent rules can be enforced in
one place over every path. Until authentication is configured, requests arrive as the
anonymous caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Caller:
    client_id: str
    organisation: str | None = None  # ODS code of the calling organisation
    scopes: frozenset[str] = field(default_factory=frozenset)
    user: str | None = None  # end user asserted by the client, if any

    @property
    def is_anonymous(self) -> bool:
        return self.client_id == ANONYMOUS.client_id


ANONYMOUS = Caller(client_id="anonymous")
SYSTEM = Caller(client_id="system", scopes=frozenset({"system/*.*"}))
