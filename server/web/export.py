"""Export (admin only): GET /export?format=imagefolder|csv|jsonl|disputed&split=0.8,0.1,0.1&seed=N
&labels=human|all

People's consensus labels (agreed or adjudicated) are exported, and with labels=all the
model's auto-labels too (each row says its source); the zip carries DISPUTED.csv
listing the images still disputed, and format=disputed gives that report alone. A group of
near-duplicates (the latest quality run's) never straddles train/val/test; with
drop_duplicates=1 only the copies the admin keeps are exported."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from flask import Blueprint, Response, abort, request, stream_with_context

from .. import store
from ..dataset import exporter
from ..dataset.selection import export_rows
from .auth import login_required
from .context import get_db, get_project

bp = Blueprint("export", __name__)


@bp.get("/export")
@login_required("admin")
def download():
    project = get_project()
    try:
        fmt = exporter.parse_format(request.args.get("format", "imagefolder"), reports=True)
        fractions = exporter.parse_split(request.args.get("split", "0.8,0.1,0.1"))
        seed = exporter.parse_seed(request.args.get("seed"), project.config.seed)
        labels = exporter.parse_labels(request.args.get("labels"),
                                       "all" if project.config.export_model_labels else "human")
    except exporter.ExportError as exc:
        abort(400, f"Cannot export: {exc}.")
    disputed = store.disputed_images(get_db())
    rows: list[dict] = []
    if not fmt.report:  # a report is about the disputed images alone
        rows, _ = export_rows(get_db(), fractions, seed,
                              drop_duplicates=request.args.get("drop_duplicates") == "1",
                              labels=labels)
    chunks = fmt.chunks(rows, disputed, [])  # what the zip leaves out, it lists in MISSING.txt
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    safe_name = re.sub(r"[^A-Za-z0-9._-]+", "_", project.config.name) or "export"
    filename = f"{safe_name}-{stamp}.{fmt.suffix}"
    return Response(
        stream_with_context(chunks),
        content_type=fmt.mimetype,  # whole, charset included: mimetype= would add another
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
