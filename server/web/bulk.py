"""Many labels per keystroke: the cluster bootstrap (/bootstrap/) and grid verify (/verify/).

Both show a grid of thumbnails; the person toggles the odd ones out (arrow keys and space,
or clicks) and labels the rest with one key (static/grid.js). A cluster page is labeled
with the class the person picks, or the cluster is marked mixed and left alone; a verify
page accepts the latest round's prediction. Votes come from `store.bulk`, one transaction
per page; clustering runs in the worker like a round.
"""

from __future__ import annotations

from flask import (
    Blueprint,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user

from .. import store
from ..jobs.queue import enqueue_clustering, maybe_auto_retrain
from ..store import bulk, clusterings
from .annotate import keyed_classes
from .auth import login_required
from .context import get_db, get_project

bp = Blueprint("bulk", __name__)

PAGE = 48  # thumbnails per grid
MAX_IDS = 4 * PAGE  # more ids than a page can hold is not a page
MAX_SECONDS = 3600.0
CLUSTER_KINDS = ("cluster", "mixed")
GRID_KINDS = ("grid",)


def _htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def _int(raw: str | None, what: str, low: int = 0) -> int:
    """A non-negative integer typed as ASCII digits, else a 400 naming the field."""
    raw = (raw or "").strip()
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18 or int(raw) < low:
        abort(400, f"Missing or malformed {what}: expected a whole number, got {raw[:20]!r}.")
    return int(raw)


def _ids(name: str) -> list[int]:
    values = request.form.getlist(name)
    if len(values) > MAX_IDS:
        abort(400, f"Too many images in one grid ({len(values)}; at most {MAX_IDS}).")
    return [_int(v, "image id", 1) for v in values]


def _seconds() -> float | None:
    """How long the grid was on screen, measured in the browser; ignored if absurd."""
    try:
        seconds = float(request.form.get("elapsed_ms", "")) / 1000.0
    except ValueError:
        return None
    return round(seconds, 3) if 0.0 <= seconds <= MAX_SECONDS else None


def _class_id() -> int:
    raw = request.form.get("class_id", "")
    if not raw:
        abort(400, "Pick the class first (press its key or click it); nothing was saved.")
    class_id = _int(raw, "class id", 1)
    if store.class_by_id(get_db(), class_id) is None:
        abort(400, f"Unknown class id {class_id}. Reload the page: the classes may have"
                   " changed. Nothing was saved.")
    return class_id


def _outcome(result: bulk.BulkResult, class_name: str) -> str:
    text = f"Labeled {result.labeled} as “{class_name}”"
    if result.set_aside:
        text += f"; {result.set_aside} went back to the queue to be labeled one by one"
    if result.passed:
        text += (f"; {result.passed} were already answered (by you, or completed by others"
                 " meanwhile) and were left as they were")
    return text + "."


def _store_call(call, *args, **kwargs):
    """Run a store write; its refusals become clear HTTP errors (409 for a stale grid)."""
    try:
        return call(*args, **kwargs)
    except bulk.StaleGrid as exc:
        abort(409, f"This grid is out of date: {exc}. Reload the page; nothing was saved.")
    except store.StoreError as exc:
        abort(400, f"{exc}. Nothing was saved.")


# --- cluster bootstrap ----------------------------------------------------------------------


def _status_context() -> dict:
    db = get_db()
    active = clusterings.active_clustering(db)
    if active and active["status"] == "running":
        from ..jobs.round import STALE_SECONDS

        if clusterings.fail_stale_clusterings(db, STALE_SECONDS):
            active = clusterings.active_clustering(db)
    return {"active": active, "latest": clusterings.latest_clustering(db),
            "current": clusterings.current_clustering(db)}


def _cluster_context(cluster: int | None = None, message: str | None = None,
                     pinned: bool = False) -> dict:
    """The card: a page of `cluster`, or else of the cluster `next_cluster` picks (the
    first page of every cluster before any second page). A `pinned` card (opened from the
    list of clusters) stays on its cluster while it has images left for this user."""
    db = get_db()
    current = clusterings.current_clustering(db)
    context = {"current": current, "message": message, "page": None, "cluster": None,
               "pinned": pinned, "classes": keyed_classes(store.classes(db)),
               "undo": bulk.last_action(db, current_user.id, CLUSTER_KINDS)}
    if current is None:
        return context
    if cluster is None:
        cluster = bulk.next_cluster(db, current["id"], current_user.id)
    context["count"] = current["clusters"]
    lease = get_project().config.lease_seconds
    page = bulk.cluster_page(db, current["id"], cluster, current_user.id, PAGE, lease) \
        if cluster is not None else None
    if pinned and page is not None and not page["members"]:
        context["pinned"] = False
        cluster = bulk.next_cluster(db, current["id"], current_user.id)
        page = bulk.cluster_page(db, current["id"], cluster, current_user.id, PAGE, lease) \
            if cluster is not None else None
    context.update(cluster=cluster, page=page)
    return context


def _cluster_card(cluster: int | None = None, message: str | None = None,
                  pinned: bool = False):
    context = _cluster_context(cluster, message, pinned)
    if _htmx():
        return render_template("_cluster_card.html", **context)
    if current_user.is_admin:
        context.update(_status_context())
    return render_template("bootstrap.html", **context)


@bp.get("/bootstrap/")
@login_required()
def bootstrap():
    return _cluster_card()


@bp.get("/bootstrap/<int:clustering_id>/<int:cluster>")
@login_required()
def cluster_view(clustering_id: int, cluster: int):
    current = clusterings.current_clustering(get_db())
    if current is None or current["id"] != clustering_id:
        abort(404, f"Clustering {clustering_id} is not the current one: open the bootstrap"
                   " page for the clusters people label now.")
    if not 0 <= cluster < (current["clusters"] or 0):
        abort(404, f"Clustering {clustering_id} has no cluster {cluster}.")
    return _cluster_card(cluster, pinned=True)


@bp.get("/bootstrap/clusters")
@login_required()
def clusters():
    db = get_db()
    current = clusterings.current_clustering(db)
    rows = bulk.cluster_overview(db, current["id"], current_user.id) if current else []
    return render_template("clusters.html", current=current, rows=rows)


@bp.post("/bootstrap/<int:clustering_id>/<int:cluster>")
@login_required()
def decide_cluster(clustering_id: int, cluster: int):
    """Label the page shown (all but the toggled odd ones out) with the class picked, or
    mark the cluster mixed; then the next cluster's page (or this cluster's next page when
    the card was opened on it from the list)."""
    decision = request.form.get("decision", "label")
    pinned = request.form.get("pinned") == "1"
    db = get_db()
    if decision == "mixed":
        _store_call(bulk.mark_mixed, db, current_user.id, clustering_id, cluster)
        return _cluster_card(message=f"Cluster {cluster + 1} is left alone (mixed); its"
                                     " images stay in the queue.")
    if decision != "label":
        abort(400, f"Unknown decision {decision[:20]!r}: expected 'label' or 'mixed'.")
    shown = _ids("shown")
    if not shown:
        abort(400, "The grid named no images; reload the page. Nothing was saved.")
    class_id = _class_id()
    result = _store_call(bulk.confirm_cluster, db, current_user.id, clustering_id, cluster,
                         class_id, shown, _ids("wrong"), _seconds())
    maybe_auto_retrain(get_project(), current_app.extensions["huey"], db)
    name = store.class_by_id(db, class_id)["name"]
    return _cluster_card(cluster if pinned else None, _outcome(result, name), pinned)


@bp.post("/bootstrap/undo")
@login_required()
def undo_cluster():
    action = bulk.undo_last(get_db(), current_user.id, CLUSTER_KINDS,
                            get_project().config.lease_seconds)
    if action is None:
        abort(400, "Nothing to undo.")
    current = clusterings.current_clustering(get_db())
    same = current is not None and current["id"] == action["clustering_id"]
    what = "mixed mark" if action["kind"] == "mixed" else f"{action['labeled']} labels"
    return _cluster_card(action["cluster"] if same else None, f"Undid the {what}.")


@bp.post("/bootstrap/run")
@login_required("admin")
def run_clustering():
    raw = request.form.get("k", "").strip()
    k = _int(raw, "number of clusters", 1) if raw else None
    if k is not None and k > 100_000:
        abort(400, "At most 100,000 clusters.")
    enqueue_clustering(get_project(), current_app.extensions["huey"], k, current_user.id)
    if _htmx():
        return render_template("_clustering_status.html", **_status_context())
    return redirect(url_for("bulk.bootstrap"))


@bp.get("/bootstrap/status")
@login_required("admin")
def clustering_status():
    context = _status_context()
    response = current_app.make_response(render_template("_clustering_status.html", **context))
    watching = request.args.get("watching", "")
    # The clustering the page was waiting for is done: reload it to show the clusters.
    if watching and context["active"] is None and context["current"] is not None \
            and str(context["current"]["id"]) == watching:
        response.headers["HX-Refresh"] = "true"
    return response


# --- grid verify ------------------------------------------------------------------------------


def _verify_context(class_id: int | None, order: str, message: str | None = None) -> dict:
    db = get_db()
    counts = bulk.verify_counts(db, current_user.id, PAGE)
    classes = keyed_classes(store.classes(db))
    for c in classes:
        c["count"] = counts.get(c["id"], {}).get("count", 0)
    if class_id is None:
        class_id = bulk.surest_class(counts)  # the page with the fewest toggles expected
    round_id, items, upcoming = None, [], []
    if class_id is not None:
        round_id, items = bulk.verify_page(db, current_user.id, class_id, order, PAGE,
                                           get_project().config.lease_seconds, upcoming)
        for item in items:
            item["caption"] = f"{item['confidence'] * 100:.0f}%"
    return {
        "round_id": round_id or bulk.latest_round_id(db), "items": items, "classes": classes,
        "chosen": next((c for c in classes if c["id"] == class_id), None), "order": order,
        "message": message, "undo": bulk.last_action(db, current_user.id, GRID_KINDS),
        "upcoming": upcoming,  # the next page's thumbnails, fetched while this one is seen
    }


def _order(raw: str | None) -> str:
    order = raw or "confident"
    if order not in bulk.ORDERS:
        abort(400, f"Unknown order {order[:20]!r}: use one of {', '.join(bulk.ORDERS)}.")
    return order


def _verify_card(class_id: int | None, order: str, message: str | None = None):
    template = "_verify_card.html" if _htmx() else "verify.html"
    return render_template(template, **_verify_context(class_id, order, message))


@bp.get("/verify/")
@login_required()
def verify():
    raw = request.args.get("class", "")
    class_id = None
    if raw:
        class_id = _int(raw, "class id", 1)
        if store.class_by_id(get_db(), class_id) is None:
            abort(404, f"No class with id {class_id}.")
    return _verify_card(class_id, _order(request.args.get("order")))


@bp.post("/verify/")
@login_required()
def accept():
    """Accept the page as the predicted class, but for the images toggled wrong (they go
    back to the one-by-one queue); then the next page of that class."""
    order = _order(request.form.get("order"))
    shown = _ids("shown")
    if not shown:
        abort(400, "The grid named no images; reload the page. Nothing was saved.")
    class_id = _class_id()
    round_id = _int(request.form.get("round_id"), "round id", 1)
    db = get_db()
    result = _store_call(bulk.accept_grid, db, current_user.id, round_id, class_id, shown,
                         _ids("wrong"), _seconds())
    maybe_auto_retrain(get_project(), current_app.extensions["huey"], db)
    name = store.class_by_id(db, class_id)["name"]
    return _verify_card(class_id, order, _outcome(result, name))


@bp.post("/verify/undo")
@login_required()
def undo_grid():
    order = _order(request.form.get("order"))
    action = bulk.undo_last(get_db(), current_user.id, GRID_KINDS,
                            get_project().config.lease_seconds)
    if action is None:
        abort(400, "Nothing to undo.")
    return _verify_card(action["class_id"], order, f"Undid {action['labeled']} labels.")
