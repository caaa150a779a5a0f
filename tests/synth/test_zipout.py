"""StoredZip writes the bytes zipfile writes for the same stored entries (the generator's
archives must not change with how they are written)."""

from __future__ import annotations

import zipfile

import pytest

from adapter.synth.zipout import StoredZip

DATE = (1980, 1, 1, 0, 0, 0)
ENTRIES = [("000001/notifications/01-entered-care.xml", b"<a/>\n"), ("000001/fhir/01-entered-care.json", b"{}\n"),
           ("000002/forms/02-iha-c.xml", bytes(range(256)) * 40), ("empty.txt", b"")]


def test_same_bytes_as_zipfile(tmp_path):
    with zipfile.ZipFile(tmp_path / "theirs.zip", "w") as archive:
        for name, data in ENTRIES:
            info = zipfile.ZipInfo(name, date_time=DATE)
            info.external_attr = 0o644 << 16
            archive.writestr(info, data, compress_type=zipfile.ZIP_STORED)
    with StoredZip(tmp_path / "ours.zip", DATE) as archive:
        for name, data in ENTRIES:
            archive.add(name, data)
    assert (tmp_path / "ours.zip").read_bytes() == (tmp_path / "theirs.zip").read_bytes()
    with zipfile.ZipFile(tmp_path / "ours.zip") as archive:
        assert archive.testzip() is None
        assert [(i.filename, archive.read(i)) for i in archive.infolist()] == ENTRIES


def test_empty_archive(tmp_path):
    zipfile.ZipFile(tmp_path / "theirs.zip", "w").close()
    with StoredZip(tmp_path / "ours.zip", DATE):
        pass
    assert (tmp_path / "ours.zip").read_bytes() == (tmp_path / "theirs.zip").read_bytes()


def test_non_ascii_names_are_refused(tmp_path):
    with pytest.raises(UnicodeEncodeError), StoredZip(tmp_path / "ours.zip", DATE) as archive:
        archive.add("café.xml", b"")
