"""The official FHIR R4 (4.0.1) examples, fetched once with npm into .cache/r4-examples/.

The examples are ~5,300 JSON resources covering every resource type; they are the best
corpus we have for checking that the XML codec agrees with the definitions. They are
downloaded (not vendored) because they are large and published by HL7 as an npm package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "hl7.fhir.r4.examples@4.0.1"
REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "r4-examples"


def examples_dir() -> Path:
    """The unpacked `package/` directory; downloads on first use.

    Safe when several processes race: each unpacks into its own temporary directory
    and renames it into place; the losers discard theirs.
    """
    target = CACHE / "package"
    if target.is_dir():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fetch-", dir=CACHE))
    try:
        subprocess.run(["npm", "pack", PACKAGE, "--pack-destination", str(work)],
                       check=True, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=600)
        tarballs = list(work.glob("*.tgz"))
        if len(tarballs) != 1:
            raise RuntimeError(f"npm pack {PACKAGE} produced {len(tarballs)} tarballs in {work}")
        unpacked = work / "unpacked"
        with tarfile.open(tarballs[0]) as tar:
            tar.extractall(unpacked, filter="data")
        try:
            os.rename(unpacked / "package", target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target
