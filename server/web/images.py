"""Images are served by id, from resized copies cached on disk; never by a path from the
request."""

from __future__ import annotations

from flask import Blueprint, abort, request, send_file

from .. import store
from ..dataset.imaging import ImageRejected, cached_copy
from .auth import login_required
from .context import get_db, get_project

bp = Blueprint("images", __name__)

SIZES = ("display", "thumb")


@bp.get("/images/<int:image_id>")
@login_required()
def show(image_id: int):
    size = request.args.get("size", "display")
    if size not in SIZES:
        abort(400, f"Unknown size {size[:20]!r}: use one of {', '.join(SIZES)}.")
    image = store.get_image(get_db(), image_id)
    if image is None:
        abort(404, f"No image with id {image_id}.")
    config = get_project().config
    side = config.display_size if size == "display" else config.thumb_size
    try:
        cached = cached_copy(get_project().cache_dir, size, image_id, image["path"], side,
                             config.max_pixels)
    except ImageRejected as exc:
        abort(404, f"Image {image_id} cannot be shown: its file is missing or unreadable"
                   f" ({exc}).")
    response = send_file(cached, mimetype="image/jpeg", max_age=30 * 86400, conditional=True)
    response.cache_control.private = True  # only logged-in users may see the images
    return response
