"""Upload images in the browser (admins): files, or zips of them, streamed from the request
into a fresh folder of the project, checked (dataset.uploads), then imported as
`activelabel import` imports a folder, with the same report."""

from __future__ import annotations

import logging

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_wtf.csrf import CSRFError, ValidationError, same_origin, validate_csrf
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from .. import store
from ..dataset.uploads import (
    UPLOADS,
    UploadFolder,
    UploadLimits,
    UploadRefused,
    UploadTooLarge,
    size_text,
)
from ..projects import import_images
from . import htmx
from .auth import login_required
from .context import get_db, get_project

bp = Blueprint("upload", __name__, url_prefix="/admin")
log = logging.getLogger("activelabel.web")

CHUNK = 256 * 1024  # read from the request, written to disk, never the whole body at once
FIELD_MAX = 64 * 1024  # a form field (only the CSRF token is read)
ISSUES_SHOWN = 20


def init_app(app: Flask) -> None:
    """Register the blueprint outside the app-wide CSRF check: that check reads
    request.form, which parses the whole body, under the app's 1 MiB limit, before the view
    runs. The view checks the token itself (header, or the form's field that comes before
    the files) before it writes a byte of a file."""
    app.config.setdefault("UPLOAD_LIMITS", UploadLimits())
    app.extensions["csrf"].exempt(bp)
    app.register_blueprint(bp)


@bp.post("/upload")
@login_required("admin")
def upload_images():
    limits: UploadLimits = current_app.config["UPLOAD_LIMITS"]
    boundary = request.mimetype_params.get("boundary", "")
    if request.mimetype != "multipart/form-data" or not boundary:
        # Not an upload: a small body, so its token is checked as every other form's is
        # (a post without one is refused for that, first).
        if not _check_header_token():
            _check_token(request.form.get(current_app.config["WTF_CSRF_FIELD_NAME"]))
        abort(400, "Send images as a file upload (multipart/form-data), as the admin page's"
                   " upload form does. Nothing was saved.")
    # This one view takes large bodies; every other keeps the app's MAX_CONTENT_LENGTH.
    request.max_content_length = limits.max_bytes
    project, db = get_project(), get_db()
    folder = UploadFolder(project.root / UPLOADS, limits,
                          [c["name"] for c in store.classes(db)])
    try:
        _receive(folder, boundary, limits)
        images = folder.finish(project.config.max_pixels)
    except UploadRefused as exc:
        folder.discard()
        log.info("upload refused: %s", exc)
        abort(exc.status, f"Upload refused: {exc}. Nothing in the project changed.")
    except OSError as exc:
        folder.discard()
        log.warning("upload not written: %s", exc)
        abort(503, f"The upload could not be written to the project folder "
                   f"({exc.strerror or exc}). Nothing in the project changed.")
    except BaseException:
        folder.discard()  # a bad token, a client gone: nothing of it stays
        raise
    report = import_images(project, images, db=db)
    if not htmx.is_htmx():
        return redirect(url_for("admin.import_report", import_id=report.import_id), 303)
    return render_template("_upload.html", upload_run=store.import_run(db, report.import_id),
                           upload_issues=store.import_issues(db, report.import_id,
                                                             limit=ISSUES_SHOWN))


def _receive(folder: UploadFolder, boundary: str, limits: UploadLimits) -> None:
    """Stream the multipart body's files into `folder`, in order, checking the CSRF token
    before the first file."""
    token_checked = _check_header_token()
    field_name = current_app.config["WTF_CSRF_FIELD_NAME"]
    decoder = MultipartDecoder(boundary.encode("latin-1"), max_form_memory_size=4 * CHUNK,
                               max_parts=2 * limits.max_files + 16)
    field: tuple[str, bytearray] | None = None  # the form field being read, if any
    try:
        for event in _events(decoder):
            if isinstance(event, Field):
                field = (event.name, bytearray())
            elif isinstance(event, File):
                if not token_checked:
                    _check_token(None)
                field = None
                folder.start_file(event.filename or "")
            elif isinstance(event, Data) and field is None:
                folder.write(event.data)
            elif isinstance(event, Data):
                field[1].extend(event.data)
                if len(field[1]) > FIELD_MAX:
                    raise UploadTooLarge(f"its form field {field[0]!r} is too long")
                if not event.more_data and field[0] == field_name and not token_checked:
                    _check_token(field[1].decode("utf-8", "replace"))
                    token_checked = True
    except RequestEntityTooLarge:
        raise UploadTooLarge(f"it is larger than {size_text(limits.max_bytes)}, the most one"
                             " upload may be; send fewer files at a time") from None
    except (ClientDisconnected, ValueError):  # ValueError: the decoder's end of the body
        raise UploadRefused("it ended before its last part arrived (the connection was cut"
                            " or the form is malformed)") from None
    folder.end_file()
    if not token_checked:
        _check_token(None)


def _events(decoder: MultipartDecoder):
    """The decoder's events over the request body, read CHUNK bytes at a time."""
    stream = request.stream  # here the per-view limit applies: Content-Length is checked
    while True:
        chunk = stream.read(CHUNK)
        decoder.receive_data(chunk or None)
        while not isinstance(event := decoder.next_event(), (NeedData, Epilogue)):
            yield event
        if isinstance(event, Epilogue) or not chunk:
            return


def _check_header_token() -> bool:
    """Check a token sent in a header (htmx sends X-CSRFToken); False when none was."""
    for header in current_app.config["WTF_CSRF_HEADERS"]:
        if token := request.headers.get(header):
            _check_token(token)
            return True
    return False


def _check_token(token: str | None) -> None:
    """What CSRFProtect.protect checks, for a token found without reading request.form."""
    if not current_app.config["WTF_CSRF_ENABLED"]:
        return
    try:
        validate_csrf(token)
    except ValidationError as exc:
        raise CSRFError(exc.args[0]) from None
    if request.is_secure and current_app.config["WTF_CSRF_SSL_STRICT"]:
        if not request.referrer:
            raise CSRFError("The referrer header is missing.")
        if not same_origin(request.referrer, f"https://{request.host}/"):
            raise CSRFError("The referrer does not match the host.")
