"""Uploading images on the admin page, through the real app (CSRF on) and real SQLite, with
real digit PNGs: plain files and zips are imported with the CLI's checks and report; every
bad upload (not an image, truncated, zip slip, too many entries, a huge declared size, a
zip bomb, no token, not an admin) is refused with its own message, and then the database
and the project folder are as they were."""

from __future__ import annotations

import io
import itertools
import re
import struct
import zipfile
from pathlib import Path

import pytest
from conftest import csrf_token, htmx_headers, login

from server import store
from server.app import create_app
from server.dataset.demo import digit_image
from server.dataset.uploads import UploadLimits, safe_name

URL = "/admin/upload"


def png(digits, index: int) -> bytes:
    """A real digit as PNG bytes; images from index 40 on are not in the fixture project."""
    buffer = io.BytesIO()
    digit_image(digits.images[index]).save(buffer, format="PNG")
    return buffer.getvalue()


def zipped(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def patched_directory(data: bytes, **fields: list[int]) -> bytes:
    """The zip with central-directory fields of its entries, in order, replaced: `flags`,
    `packed` or `unpacked` sizes (what zipfile believes about an entry)."""
    offsets = {"flags": (8, "<H"), "packed": (20, "<L"), "unpacked": (24, "<L")}
    data = bytearray(data)
    starts = [m.start() for m in re.finditer(b"PK\x01\x02", bytes(data))]
    for field, values in fields.items():
        offset, layout = offsets[field]
        for start, value in zip(starts, values, strict=True):
            struct.pack_into(layout, data, start + offset, value)
    return bytes(data)


def many_entries_zip(count: int) -> bytes:
    """A real zip (zip64 end records, as zipfile writes past 65,535 entries) of `count`
    empty stored entries, built as bytes: seconds faster than zipfile.writestr each."""
    names = [f"{index}.png".encode() for index in range(count)]
    local = [struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, len(n), 0) + n
             for n in names]
    offsets = [0, *itertools.accumulate(len(entry) for entry in local)]
    directory = b"".join(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 45, 20, 0, 0, 0, 0, 0, 0,
                                     0, len(n), 0, 0, 0, 0, 0, at) + n
                         for n, at in zip(names, offsets))
    start = offsets[-1]
    return b"".join([*local, directory, struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(directory), start),
        struct.pack("<4sLQL", b"PK\x06\x07", 0, start + len(directory), 1),
        struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, len(directory), start, 0)])


BOUNDARY = "----upload-test-boundary-7d1f"


def multipart(parts: list[tuple[str, str | None, bytes]]) -> bytes:
    """A multipart/form-data body of (field name, file name or None, bytes), in this order,
    as a browser sends it. Built here, not by the test client, which puts fields before
    files and spools a large body to a temporary file."""
    body = b""
    for name, filename, content in parts:
        disposition = f'name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; {disposition}\r\n\r\n"
                 .encode() + content + b"\r\n")
    return body + f"--{BOUNDARY}--\r\n".encode()


def upload(client, token: str | None, files: list[tuple[str, bytes]], *, htmx: bool = True,
           token_last: bool = False):
    """Post files as the admin page's form does: the token field first, then the files;
    htmx also sends the token in a header."""
    parts = [("files", name, content) for name, content in files]
    if token:
        token_part = ("csrf_token", None, token.encode())
        parts = parts + [token_part] if token_last else [token_part, *parts]
    headers = htmx_headers(token) if htmx and token else {}
    return client.post(URL, data=multipart(parts), headers=headers,
                       content_type=f"multipart/form-data; boundary={BOUNDARY}")


def state(project) -> dict:
    """What a refused upload must not change: the rows, and every path in the project
    folder."""
    db = store.connect(project.db_path, migrate=False)
    try:
        rows = {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("images", "import_runs", "import_issues", "annotations")}
    finally:
        db.conn.close()
    files = sorted(p.relative_to(project.root).as_posix() for p in project.root.rglob("*"))
    return {"rows": rows, "files": files}


def images_of(project, import_id: int) -> list[dict]:
    db = store.connect(project.db_path, migrate=False)
    try:
        return list(db.query(
            "SELECT i.path, i.rel_path, c.name AS label FROM images i"
            " LEFT JOIN annotations a ON a.image_id = i.id AND a.source = 'import'"
            " LEFT JOIN classes c ON c.id = a.class_id"
            " WHERE i.import_id = ? ORDER BY i.rel_path", [import_id]))
    finally:
        db.conn.close()


def import_id_in(html: str) -> int:
    return int(re.search(r'href="/admin/imports/(\d+)"', html).group(1))


@pytest.fixture
def admin(as_user):
    return as_user("admin")


# --- what is taken ------------------------------------------------------------------------


def test_plain_images_are_streamed_into_a_fresh_folder_and_imported_with_the_report(
        admin, project, digits):
    client, token = admin
    response = upload(client, token, [(f"scan {i}.png", png(digits, 100 + i)) for i in range(3)])
    html = response.get_data(as_text=True)
    assert response.status_code == 200, html
    assert "3 added (0 labeled from class folders), 0 duplicates, 0 skipped" in html
    assert 'id="upload-result"' in html
    images = images_of(project, import_id_in(html))
    assert [i["rel_path"] for i in images] == ["scan_0.png", "scan_1.png", "scan_2.png"]
    folder = Path(images[0]["path"]).parent
    assert folder.parent == project.root / "uploads"
    assert re.fullmatch(r"\d{8}-\d{6}-\d+", folder.name)
    assert all(Path(i["path"]).is_file() for i in images)
    # The report page is the CLI import's: it names the upload folder.
    report = client.get(f"/admin/imports/{import_id_in(html)}").get_data(as_text=True)
    assert str(folder) in report and "3 added" in report


def test_a_plain_form_post_with_the_token_field_only_goes_to_the_import_report(
        admin, project, digits):
    client, token = admin
    response = upload(client, token, [("one.png", png(digits, 200))], htmx=False)
    assert response.status_code == 303
    assert re.fullmatch(r"/admin/imports/\d+", response.headers["Location"])
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "1 added" in page


def test_a_zipped_folder_of_class_folders_arrives_labeled_and_hidden_files_stay_out(
        admin, project, digits):
    client, token = admin
    entries = {f"batch/{digits.target[i]}/digit-{i}.png": png(digits, i) for i in range(50, 60)}
    entries["batch/unsorted/digit-60.png"] = png(digits, 60)
    entries["batch/.DS_Store"] = b"\0\0\0\1Bud1"
    entries["__MACOSX/batch/._digit-50.png"] = b"resource fork"
    entries["batch/notes.txt"] = b"taken with the flatbed scanner"
    response = upload(client, token, [("batch.zip", zipped(entries))])
    html = response.get_data(as_text=True)
    assert response.status_code == 200, html
    assert "11 added (10 labeled from class folders)" in html
    assert "1 other files ignored" in html  # notes.txt, as a CLI import would ignore it
    images = images_of(project, import_id_in(html))
    # The wrapping folder is dropped, so the class folders are the first level.
    labels = {i["rel_path"]: i["label"] for i in images}
    assert labels["unsorted/digit-60.png"] is None
    assert all(labels[f"{digits.target[i]}/digit-{i}.png"] == str(digits.target[i])
               for i in range(50, 60))
    folder = Path(images[0]["path"]).parents[1]
    on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert not any(part.startswith(".") or part == "__MACOSX" for name in on_disk
                   for part in name.split("/"))


def test_a_zip_keeps_its_folders_made_safe_and_a_class_folder_its_exact_name(
        admin, project, digits):
    db = store.connect(project.db_path)
    store.add_classes(db, ["big cats"])
    db.conn.close()
    client, token = admin
    archive = zipped({"big cats/tiger.png": png(digits, 250),
                      "Scans/Week 1/Still Deeper/a.png": png(digits, 251),
                      "Scans/Week 1/b.png": png(digits, 252)})
    response = upload(client, token, [("mixed.zip", archive)])
    html = response.get_data(as_text=True)
    assert response.status_code == 200, html
    labels = {i["rel_path"]: i["label"] for i in images_of(project, import_id_in(html))}
    assert labels == {"big cats/tiger.png": "big cats",
                      "Scans/Week_1/Still_Deeper/a.png": None, "Scans/Week_1/b.png": None}


def test_names_are_made_safe_and_clashing_ones_numbered(admin, project, digits):
    client, token = admin
    names = ["holiday photo (1).PNG", "holiday_photo_1.png", "C:\\Users\\me\\-x;rm -rf.png",
             "ünïcødé ✓.png"]
    files = [(name, png(digits, 300 + i)) for i, name in enumerate(names)]
    response = upload(client, token, files)
    html = response.get_data(as_text=True)
    assert response.status_code == 200, html
    names = sorted(i["rel_path"] for i in images_of(project, import_id_in(html)))
    assert names == ["holiday_photo_1-2.png", "holiday_photo_1.png", "x_rm_-rf.png",
                     "ünïcødé.png"]
    assert safe_name("../../etc/passwd") == "etc_passwd"
    assert safe_name("...") == "file"
    assert len(safe_name("a" * 300 + ".jpeg")) == 100
    assert safe_name("Photos.Old", folder=True) == "Photos.Old"


def test_bad_files_among_good_ones_are_skipped_and_repeats_are_duplicates_as_on_import(
        admin, project, digits):
    client, token = admin
    broken = png(digits, 401)
    files = [("good.png", png(digits, 400)), ("cut.png", broken[: len(broken) // 2])]
    html = upload(client, token, files).get_data(as_text=True)
    assert "1 added" in html and "1 skipped" in html
    assert "cut.png" in html and "truncated" in html
    again = upload(client, token, files).get_data(as_text=True)
    assert "0 added" in again and "1 duplicates, 1 skipped" in again


def test_only_this_route_takes_large_bodies(admin, digits):
    client, token = admin
    big = [(f"{i}.png", png(digits, 600 + i)) for i in range(700)]  # about 1.2 MB
    assert upload(client, token, big).status_code == 200
    response = client.post("/admin/users", data={"name": "x" * 2_000_000, "csrf_token": token})
    assert response.status_code == 413


# --- what is refused, leaving everything as it was ----------------------------------------


def refused(client, token, project, files, status: int, *expected: str, **options) -> str:
    before = state(project)
    response = upload(client, token, files, **options)
    message = response.get_data(as_text=True)
    assert response.status_code == status, message
    for text in expected:
        assert text in message, message
    assert state(project) == before
    assert not (project.root / "uploads").exists()
    return message


@pytest.mark.parametrize("name, content, reason", [
    ("cat.png", b"<html>not a cat</html>", "cat.png: not a recognised image file"),
    ("notes.txt", b"hello", "notes.txt: not an image file (.txt; images are .bmp"),
    ("cut.png", "the first 200 bytes of a PNG", "cut.png: corrupt or truncated image"),
])
def test_an_upload_that_is_not_an_image_or_is_truncated_is_refused(admin, project, digits,
                                                                    name, content, reason):
    client, token = admin
    content = png(digits, 700)[:200] if isinstance(content, str) else content
    message = refused(client, token, project, [(name, content)], 400, reason)
    # Plain text for htmx (the panel shows it), saying what happened and what did not.
    assert message.startswith("Upload refused: nothing in it is an image that can be imported")
    assert message.endswith("Nothing in the project changed.")


@pytest.mark.parametrize("name", ["../escape.png", "ok/../../escape.png", "/etc/escape.png",
                                  "..\\escape.png", "C:/escape.png"])
def test_a_zip_with_a_name_outside_its_folder_is_refused_whole(admin, project, digits, name):
    client, token = admin
    archive = zipped({"fine.png": png(digits, 701), name: png(digits, 702)})
    refused(client, token, project, [("slip.zip", archive)], 400,
            f"slip.zip: entry {name!r} names a place outside the zip's own folder")
    assert not (project.root.parent / "escape.png").exists()


def test_a_zip_of_100000_entries_is_refused_before_its_table_is_read(admin, project):
    client, token = admin
    archive = many_entries_zip(100_000)
    assert len(zipfile.ZipFile(io.BytesIO(archive)).infolist()) == 100_000  # a real zip
    refused(client, token, project, [("many.zip", archive)], 413,
            "many.zip holds 100,000 entries; one upload takes at most 50,000 files")


def test_a_zip_declaring_10_gb_is_refused_before_anything_is_unpacked(admin, project, digits):
    client, token = admin
    archive = zipped({f"{i}.png": png(digits, 710 + i) for i in range(3)})
    archive = patched_directory(archive, unpacked=[3_500_000_000, 3_500_000_000, 3_000_000_000])
    refused(client, token, project, [("huge.zip", archive)], 413,
            "huge.zip declares 10.0 GB unpacked; one upload takes at most 4.0 GB")


def test_a_zip_bomb_is_refused_by_its_compression_ratio(admin, project):
    client, token = admin
    archive = zipped({"flat.bmp": b"\0" * (4 * 1024 * 1024)})
    assert len(archive) < 10_000
    refused(client, token, project, [("bomb.zip", archive)], 413,
            "bomb.zip: entry 'flat.bmp' unpacks to", "times its packed size (a zip bomb?)")


def test_an_entry_that_unpacks_to_more_than_it_declares_stops_the_unpacking(
        admin, project, digits):
    client, token = admin
    archive = zipped({"a.png": png(digits, 720), "b.png": png(digits, 721)})
    archive = patched_directory(archive, unpacked=[100, 100])
    refused(client, token, project, [("lies.zip", archive)], 400,
            "lies.zip: entry 'a.png' cannot be unpacked", "the zip is damaged")


def test_an_encrypted_or_cut_short_zip_is_refused(admin, project, digits):
    client, token = admin
    archive = zipped({"a.png": png(digits, 730)})
    refused(client, token, project, [("locked.zip", patched_directory(archive, flags=[1]))],
            400, "locked.zip: entry 'a.png' is encrypted")
    refused(client, token, project, [("cut.zip", archive[: len(archive) // 2])], 400,
            "cut.zip is not a readable zip")


def test_an_upload_of_nothing_is_refused(admin, project):
    client, token = admin
    refused(client, token, project, [], 400, "it holds no files")
    refused(client, token, project, [("empty.zip", zipped({"folder/.hidden.png": b"x"}))], 400,
            "it holds no files to import")


@pytest.mark.parametrize("limit, files, expected", [
    ({"max_bytes": 40_000}, 30, "it is larger than 40.0 KB, the most one upload may be"),
    ({"max_files": 5}, 6, "it holds more than 5 files; one upload takes at most 5 files"),
    ({"max_unpacked_bytes": 10_000}, "zip", "declares 17.6 KB unpacked; one upload takes at"
                                            " most 10.0 KB"),
])
def test_the_limits_hold_as_set_in_the_config(project, digits, limit, files, expected):
    app = create_app(project.root, {"TESTING": True, "UPLOAD_LIMITS": UploadLimits(**limit)})
    client = app.test_client()
    token = login(client, "admin")
    if files == "zip":
        sent = [("ten.zip", zipped({f"{i}.png": png(digits, 800 + i) for i in range(10)},
                                   zipfile.ZIP_STORED))]
    else:
        sent = [(f"{i}.png", png(digits, 800 + i)) for i in range(files)]
    refused(client, token, project, sent, 413, expected)


def test_a_body_cut_off_before_its_end_is_refused(admin, project, digits):
    client, token = admin
    before = state(project)
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + png(digits, 900))  # no closing boundary
    response = client.post(URL, data=body, headers=htmx_headers(token),
                           content_type="multipart/form-data; boundary=XyZ")
    assert response.status_code == 400
    assert "it ended before its last part arrived" in response.get_data(as_text=True)
    assert state(project) == before


# --- who may upload -------------------------------------------------------------------------


@pytest.mark.parametrize("token_sent", ["none", "forged", "after the files"])
def test_an_upload_without_a_good_csrf_token_first_is_refused(admin, project, digits,
                                                               token_sent):
    client, token = admin
    # A token after the files comes too late: a file would be written before its check.
    sent, options = {"none": (None, {"htmx": False}), "forged": ("forged-token", {}),
                     "after the files": (token, {"htmx": False, "token_last": True})}[token_sent]
    refused(client, sent, project, [("a.png", png(digits, 950))], 400,
            "lacks its security token", **options)


def test_annotators_and_visitors_cannot_upload(app, project, digits):
    before = state(project)
    files = [("a.png", png(digits, 960))]
    annotator = app.test_client()
    token = login(annotator, "ann")
    assert upload(annotator, token, files).status_code == 403
    visitor = app.test_client()
    token = csrf_token(visitor)
    response = upload(visitor, token, files, htmx=False)
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert upload(visitor, token, files).status_code == 401  # htmx: told to log in
    assert state(project) == before


def test_a_refused_upload_leaves_earlier_uploads_alone(admin, project, digits):
    client, token = admin
    assert upload(client, token, [("kept.png", png(digits, 970))]).status_code == 200
    before = state(project)
    assert upload(client, token, [("bad.png", b"nope")]).status_code == 400
    assert state(project) == before
    assert len(list((project.root / "uploads").iterdir())) == 1
