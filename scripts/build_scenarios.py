#!/usr/bin/env python3
"""Regenerate fixtures/scenarios/*/fhir/*.json from the scenarios' XML with the real mappers.

Each scenario's documents (notifications/*.xml, then forms/*.xml, in file order) are mapped with
adapter.mapping.documents.MAPPERS; the transaction Bundle of the N-th document is written to
fhir/NN-<document name>.json (sorted keys, indent 2), its urn:uuids replaced by stable ones
derived from the document identifier and the entry index (adapter.cli_fixtures.normalise_bundle).
Stale fhir/*.json files are removed. tests/test_scenarios.py checks the files are up to date.

    /tmp/venv/bin/python scripts/build_scenarios.py [SCENARIOS_FOLDER] [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapter.cli_fixtures import (DEFAULT_SCENARIOS, bundle_json, bundle_name, document_key,  # noqa: E402
                                  map_document, normalise_bundle, scenarios)


def expected_files(scenario_folder: Path) -> dict[Path, str]:
    """fhir/*.json path -> the text it must hold, for one scenario."""
    from adapter.cli_fixtures import documents_of

    out: dict[Path, str] = {}
    for position, document in enumerate(documents_of(scenario_folder), start=1):
        doc = map_document(document.read_bytes())
        bundle = normalise_bundle(doc.bundle, document_key(doc))
        out[scenario_folder / "fhir" / bundle_name(position, document)] = bundle_json(bundle)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_SCENARIOS)
    parser.add_argument("--check", action="store_true", help="only report files that are out of date")
    args = parser.parse_args(argv)
    stale = 0
    for scenario in scenarios(args.folder):
        wanted = expected_files(scenario.folder)
        for extra in sorted(set(scenario.bundles) - set(wanted)):
            stale += 1
            print(f"{'stale' if args.check else 'removed'}: {extra}")
            if not args.check:
                extra.unlink()
        for path, text in wanted.items():
            current = path.read_text(encoding="utf-8") if path.exists() else None
            if current == text:
                continue
            stale += 1
            print(f"{'out of date' if args.check else 'wrote'}: {path}")
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
