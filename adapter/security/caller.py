"""The identity of whoever asks the store for something.

Every repository call takes a Caller, so access and consent rules can be enforced in
one place over every path. A Caller is built by authentication (adapter/security/auth.py)
from a bearer token; in-process work (start-up publishing, `lac-adapter load`, the delivery
worker) runs as SYSTEM.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Caller:
    client_id: str
    organisation: str | None = None  # ODS code of the calling organisation
    scopes: frozenset[str] = field(default_factory=frozenset)
    user: str | None = None  # end user asserted by the client, if any
    role: str | None = None  # the organisation's role in the partner registry, e.g. "local-authority"
    # ODS codes of the local authorities whose children this organisation serves (registry `serves`).
    serves: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_anonymous(self) -> bool:
        return self.client_id == ANONYMOUS.client_id

    @property
    def unrestricted(self) -> bool:
        """In-process system work and the registry's administrators see every resource."""
        return self.role in UNRESTRICTED_ROLES


UNRESTRICTED_ROLES = frozenset({"system", "administrator"})

ANONYMOUS = Caller(client_id="anonymous")
SYSTEM = Caller(client_id="system", scopes=frozenset({"system/*.cruds"}), role="system")
