"""NHS identifier conventions: systems and the NHS number check digit."""

from __future__ import annotations

import re

NHS_NUMBER = "https://fhir.nhs.uk/Id/nhs-number"
ODS_ORGANISATION = "https://fhir.nhs.uk/Id/ods-organization-code"

_TEN_DIGITS = re.compile(r"[0-9]{10}")


def nhs_number_valid(value: str) -> bool:
    """Ten digits with a modulus-11 check digit: weights 10..2 on the first nine, 11 → 0, 10 → invalid."""
    if not _TEN_DIGITS.fullmatch(value):
        return False
    total = sum(int(d) * w for d, w in zip(value[:9], range(10, 1, -1)))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(value[9])
