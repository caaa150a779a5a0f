"""Bearer tokens the test servers accept (`serve --dev` static tokens, see running_server).

ADMIN_TOKEN is an administrator: it sees every record, as the tests of FHIR behaviour need.
ROLE_TOKENS act as the partner organisations of config/partners.toml, for access tests.
"""

from __future__ import annotations

from adapter.config import DevToken

ADMIN_TOKEN = "test-admin-token"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

ALL = ("system/*.cruds",)
ROLE_TOKENS = {
    "la": DevToken(token="test-la-token", organisation="LA-DEMO-1", role="local-authority", scopes=ALL),
    "dhc": DevToken(token="test-dhc-token", organisation="RDY", role="community-trust", scopes=ALL),
    "phft": DevToken(token="test-phft-token", organisation="RD3", role="hospital-trust", scopes=ALL),
    "ooa": DevToken(token="test-ooa-token", organisation="ZZ901", role="ooa-trust", scopes=ALL),
    "other-la": DevToken(token="test-other-la-token", organisation="LA-OTHER-2", role="local-authority",
                         scopes=ALL),
    "la-read-only": DevToken(token="test-la-read-token", organisation="LA-DEMO-1", role="local-authority",
                             scopes=("system/*.rs",)),
    # may read Measures and Tasks but not Patients: too little for the dashboard, which names children
    "la-no-patients": DevToken(token="test-la-no-patients-token", organisation="LA-DEMO-1",
                               role="local-authority", scopes=("system/Measure.rs", "system/Task.rs")),
}
TEST_TOKENS = (DevToken(token=ADMIN_TOKEN, organisation="TEST-ADMIN", role="administrator", scopes=ALL),
               *ROLE_TOKENS.values())


def headers_for(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {ROLE_TOKENS[role].token}"}


def admin_session():
    """A requests Session that authenticates as the test administrator."""
    import requests

    session = requests.Session()
    session.headers.update(ADMIN_HEADERS)
    return session
