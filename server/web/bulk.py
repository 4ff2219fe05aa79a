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
from ..jobs import runner
from ..jobs.queue import enqueue, maybe_auto_retrain
from ..store import bulk, cluster_pages, clusterings, verify_pages
from .annotate import keyed_classes
from .auth import login_required
from .context import get_db, get_project, get_tasks
from .htmx import elapsed_seconds, is_htmx, whole_number

bp = Blueprint("bulk", __name__)

PAGE = 48  # thumbnails per grid
MAX_IDS = 4 * PAGE  # more ids than a page can hold is not a page
CLUSTER_KINDS = ("cluster", "mixed")
GRID_KINDS = ("grid",)


def _ids(name: str) -> list[int]:
    values = request.form.getlist(name)
    if len(values) > MAX_IDS:
        abort(400, f"Too many images in one grid ({len(values)}; at most {MAX_IDS}).")
    return [whole_number(v, "image id", 1) for v in values]


def _elapsed() -> float | None:
    """How long the grid was on screen, measured in the browser."""
    return elapsed_seconds(request.form.get("elapsed_ms"))


def _class_id() -> int:
    raw = request.form.get("class_id", "")
    if not raw:
        abort(400, "Pick the class first (press its key or click it); nothing was saved.")
    class_id = whole_number(raw, "class id", 1)
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
    """Run a store write; its refusals become clear HTTP errors (409 for a stale grid, or
    for images not handed to this person)."""
    try:
        return call(*args, **kwargs)
    except bulk.StaleGrid as exc:
        abort(409, f"This grid is out of date: {exc}. Reload the page; nothing was saved.")
    except store.NotHanded as exc:
        abort(409, f"This grid was not handed to you: {exc}. Reload the page; nothing was"
                   " saved.")
    except store.StoreError as exc:
        abort(400, f"{exc}. Nothing was saved.")


# --- cluster bootstrap ----------------------------------------------------------------------


def _status_context() -> dict:
    db = get_db()
    return {**runner.status(db, runner.CLUSTERING),
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
        cluster = cluster_pages.next_cluster(db, current["id"], current_user.id)
    context["count"] = current["clusters"]
    lease = get_project().config.lease_seconds
    page = cluster_pages.cluster_page(db, current["id"], cluster, current_user.id, PAGE, lease) \
        if cluster is not None else None
    if pinned and page is not None and not page["members"]:
        context["pinned"] = False
        cluster = cluster_pages.next_cluster(db, current["id"], current_user.id)
        page = cluster_pages.cluster_page(db, current["id"], cluster, current_user.id, PAGE,
                                          lease) if cluster is not None else None
    context.update(cluster=cluster, page=page)
    return context


def _cluster_card(cluster: int | None = None, message: str | None = None,
                  pinned: bool = False):
    context = _cluster_context(cluster, message, pinned)
    if is_htmx():
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
    rows = cluster_pages.cluster_overview(db, current["id"], current_user.id) if current else []
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
        _store_call(cluster_pages.mark_mixed, db, current_user.id, clustering_id, cluster)
        return _cluster_card(message=f"Cluster {cluster + 1} is left alone (mixed); its"
                                     " images stay in the queue.")
    if decision != "label":
        abort(400, f"Unknown decision {decision[:20]!r}: expected 'label' or 'mixed'.")
    shown = _ids("shown")
    if not shown:
        abort(400, "The grid named no images; reload the page. Nothing was saved.")
    class_id = _class_id()
    result = _store_call(cluster_pages.confirm_cluster, db, current_user.id, clustering_id,
                         cluster, class_id, shown, _ids("wrong"), _elapsed())
    maybe_auto_retrain(get_project(), get_tasks(), db)
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
    k = whole_number(raw, "number of clusters", 1) if raw else None
    if k is not None and k > 100_000:
        abort(400, "At most 100,000 clusters.")
    enqueue(get_project(), get_tasks(), runner.CLUSTERING.name, current_user.id, k=k)
    if is_htmx():
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
    model = order == "model"  # the model's own labels, least confident first
    counts = (verify_pages.auto_counts(db, current_user.id) if model
              else verify_pages.verify_counts(db, current_user.id, PAGE))
    classes = keyed_classes(store.classes(db))
    for c in classes:
        c["count"] = counts.get(c["id"], {}).get("count", 0)
    if class_id is None:
        class_id = verify_pages.surest_class(counts)  # the page with the fewest toggles expected
    round_id, items, upcoming = None, [], []
    lease = get_project().config.lease_seconds
    if class_id is not None and model:
        items = verify_pages.auto_page(db, current_user.id, class_id, PAGE, lease)
    elif class_id is not None:
        round_id, items = verify_pages.verify_page(db, current_user.id, class_id, order, PAGE,
                                                   lease, upcoming)
    for item in items:
        item["caption"] = f"{item['confidence'] * 100:.0f}%"
    return {
        "round_id": round_id or verify_pages.latest_round_id(db), "items": items,
        "classes": classes,
        "chosen": next((c for c in classes if c["id"] == class_id), None), "order": order,
        "message": message, "undo": bulk.last_action(db, current_user.id, GRID_KINDS),
        "upcoming": upcoming,  # the next page's thumbnails, fetched while this one is seen
    }


def _order(raw: str | None) -> str:
    order = raw or "confident"
    if order not in verify_pages.ORDERS:
        abort(400, f"Unknown order {order[:20]!r}: use one of {', '.join(verify_pages.ORDERS)}.")
    return order


def _verify_card(class_id: int | None, order: str, message: str | None = None):
    template = "_verify_card.html" if is_htmx() else "verify.html"
    return render_template(template, **_verify_context(class_id, order, message))


@bp.get("/verify/")
@login_required()
def verify():
    raw = request.args.get("class", "")
    class_id = None
    if raw:
        class_id = whole_number(raw, "class id", 1)
        if store.class_by_id(get_db(), class_id) is None:
            abort(404, f"No class with id {class_id}.")
    return _verify_card(class_id, _order(request.args.get("order")))


@bp.post("/verify/")
@login_required()
def accept():
    """Accept the page as the predicted class, but for the images toggled wrong (they go
    back to the one-by-one queue); then the next page of that class. order=model: the page
    of the model's own labels (toggled ones are withdrawn)."""
    order = _order(request.form.get("order"))
    shown = _ids("shown")
    if not shown:
        abort(400, "The grid named no images; reload the page. Nothing was saved.")
    class_id = _class_id()
    db = get_db()
    if order == "model":  # confirm the model's labels, withdraw the toggled ones
        result = _store_call(verify_pages.review_auto_labels, db, current_user.id, class_id,
                             shown, _ids("wrong"), _elapsed())
    else:
        round_id = whole_number(request.form.get("round_id"), "round id", 1)
        result = _store_call(verify_pages.accept_grid, db, current_user.id, round_id,
                             class_id, shown, _ids("wrong"), _elapsed())
    maybe_auto_retrain(get_project(), get_tasks(), db)
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
