"""Training rounds: what a round trains on and ranks, publishing its ranking to the queue in
one transaction, and the predictions it leaves. Its job row lives as every job's does
(job_rows.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from sqlite_utils import Database

from . import job_rows
from .connection import StoreError, insert_columns, now_iso, pause_for_writers, read, write

# Images no round has ranked come after every ranked one, in their seeded shuffle order.
UNRANKED = 1e9
KEY_SCALE = float(2**56)

def unranked_priority(shuffle_key: int) -> float:
    return UNRANKED + shuffle_key / KEY_SCALE


def serving_round(db: Database) -> dict | None:
    """The latest finished round: the one whose ranking the queue follows."""
    return job_rows.latest(db, "rounds", status="done")


def training_set(db: Database) -> list[dict]:
    """Images with a consensus label (agreed or adjudicated) and that label: only these
    train the model."""
    return list(db.query(
        "SELECT i.id, i.path, s.class_id FROM image_state s JOIN images i ON i.id = s.image_id"
        " WHERE s.status IN ('agreed', 'adjudicated') ORDER BY i.id"
    ))


def trained_class_count(db: Database) -> int:
    """How many classes have a consensus label: a model needs two (else a cold start)."""
    return db.execute(
        "SELECT count(DISTINCT class_id) FROM image_state"
        " WHERE status IN ('agreed', 'adjudicated')"
    ).fetchone()[0]


def pool(db: Database) -> list[dict]:
    """Images still waiting for votes: the ones a round ranks."""
    return [{"id": image_id, "path": path} for image_id, path in db.execute(
        "SELECT i.id, i.path FROM queue q JOIN images i ON i.id = q.image_id ORDER BY i.id"
    )]


@dataclass
class RoundInput:
    """What a round trains on and ranks, as of one moment: image ids (ascending) and, for
    the labeled ones, their consensus class. Files' paths are looked up only for the images
    that need them (paths_of): a round over cached embeddings needs none, and reading 98,000
    paths cost 0.04 s of the 100,000-image round."""

    labeled_ids: np.ndarray
    labels: np.ndarray
    pool_ids: np.ndarray
    # Which labeled images the model labeled (auto-labels, with train_on_auto_labels);
    # None: people's labels only.
    by_model: np.ndarray | None = None

    def without(self, ids) -> RoundInput:
        """The same input less `ids` (images whose files could not be read)."""
        ids = np.asarray(list(ids), dtype=np.int64)
        keep = ~np.isin(self.labeled_ids, ids)
        return RoundInput(self.labeled_ids[keep], self.labels[keep],
                          self.pool_ids[~np.isin(self.pool_ids, ids)],
                          None if self.by_model is None else self.by_model[keep])


def snapshot(db: Database, auto_labels: bool = False) -> RoundInput:
    """(training set, pool) as of one moment: read in one read transaction, so a vote
    landing between the two reads cannot leave its image in neither (or, undone, in both),
    while votes and leases go on being written (a write transaction here held them up for
    2 s at 1,000,000 images). With `auto_labels`, the training set holds the model's
    labels too (status 'auto'; not those a spot check has in the queue)."""
    statuses = "('agreed', 'adjudicated', 'auto')" if auto_labels else "('agreed', 'adjudicated')"
    with read(db):
        trained = db.execute(
            "SELECT s.image_id, s.class_id, s.status = 'auto' FROM image_state s"
            f" WHERE s.status IN {statuses} AND NOT (s.status = 'auto' AND EXISTS"
            " (SELECT 1 FROM queue q WHERE q.image_id = s.image_id)) ORDER BY s.image_id"
        ).fetchall()
        pool_ids = np.fromiter((row[0] for row in db.execute(
            "SELECT image_id FROM queue ORDER BY image_id")), np.int64)
    labeled = np.array(trained, dtype=np.int64).reshape(-1, 3)
    return RoundInput(labeled[:, 0].copy(), labeled[:, 1].copy(), pool_ids,
                      labeled[:, 2].astype(bool) if auto_labels else None)


# Rows per write transaction while a round stores its predictions: a vote or a lease waits
# for one chunk at most (20,000 rows, about 30 ms here). Chunks of 5,000 cost 0.08 s more
# at 100,000 images (four times the commits and the pauses between them).
PREDICTION_CHUNK = 20_000


def publish_round(
    db: Database,
    round_id: int,
    image_ids: np.ndarray,
    class_ids: np.ndarray,
    confidence: np.ndarray,
    scores: np.ndarray,
    ranks: np.ndarray,
    summary: dict,
) -> None:
    """Store the round's predictions, then switch the queue to its ranking in one
    transaction: annotators see either the old order or the new one, never a mix. The
    predictions go in first, with the queue in the new order built beside the old one,
    PREDICTION_CHUNK rows per transaction, so annotators' votes and leases wait for at most
    one chunk, not for all of them; nothing reads a round's predictions before the round is
    done, nor the new queue before the switch. Rewriting the queue's rows (and their index)
    in place held the switching transaction 0.35 s at 100,000 images, every vote and lease
    waiting behind it; the swap takes a fifth of that."""
    if not job_rows.is_running(db, "rounds", round_id):
        raise StoreError(f"round {round_id} is not running; its results are dropped")
    with write(db):
        db.execute("DROP TABLE IF EXISTS queue_next")
        db.execute("CREATE TABLE queue_next (image_id INTEGER PRIMARY KEY, priority FLOAT)")
    n = len(image_ids)
    columns = ([int(round_id)] * n, image_ids.tolist(), class_ids.tolist(), confidence.tolist(),
               scores.tolist(), ranks.tolist())
    # The new queue's rows go in by image id and its index is made once they are all in:
    # filling an index on priority row by row, in random order, took 9 s at 1,000,000
    # images, building it afterwards 0.4 s.
    by_id = np.argsort(image_ids, kind="stable")
    queue_rows = (image_ids[by_id].tolist(), ranks[by_id].tolist())
    for start in range(0, n, PREDICTION_CHUNK):
        stop = start + PREDICTION_CHUNK
        with write(db):
            insert_columns(db, "predictions", ("round_id", "image_id", "class_id", "confidence",
                                               "score", "rank"), columns, start, stop)
            insert_columns(db, "queue_next", ("image_id", "priority"), queue_rows, start, stop)
        pause_for_writers()
    with write(db):
        # A fresh index name each time: after the swap, this index belongs to `queue`.
        db.execute(f"CREATE INDEX queue_priority_r{int(round_id)} ON queue_next (priority)")
    pause_for_writers()
    with write(db):
        if not job_rows.is_running(db, "rounds", round_id):
            db.execute("DROP TABLE IF EXISTS queue_next")
            raise StoreError(f"round {round_id} is not running; its results are dropped")
        # Bring the new queue up to date: images answered since the snapshot leave it; any
        # other image still queued (one that arrived or came back after the snapshot) goes
        # after every ranked one, in its seeded order. Then it takes the old one's place.
        db.execute("DELETE FROM queue_next WHERE NOT EXISTS"
                   " (SELECT 1 FROM queue q WHERE q.image_id = queue_next.image_id)")
        db.execute(
            "INSERT INTO queue_next (image_id, priority) SELECT q.image_id,"
            " i.shuffle_key / ? + ? FROM queue q JOIN images i ON i.id = q.image_id"
            " WHERE NOT EXISTS (SELECT 1 FROM queue_next x WHERE x.image_id = q.image_id)",
            [KEY_SCALE, UNRANKED],
        )
        db.execute("DROP TABLE queue")
        db.execute("ALTER TABLE queue_next RENAME TO queue")
        db.execute(
            "UPDATE rounds SET status = 'done', finished_at = ?, progress = 1, message = ?,"
            " labels_used = ?, pool_size = ?, accuracy = ?, per_class = ?, mode = ?,"
            " seconds = ?, auto_labels = (SELECT count(*) FROM image_state"
            " WHERE status = 'auto') WHERE id = ?",
            [
                now_iso(), summary.get("message", "done"), summary["labels_used"],
                len(image_ids), summary.get("accuracy"),
                json.dumps(summary.get("per_class", {})), summary.get("mode"),
                summary.get("seconds"), round_id,
            ],
        )


def record_estimate(db: Database, round_id: int, accuracy: float | None, per_class: dict,
                    message: str | None = None, seconds: float | None = None) -> None:
    """Add a finished round's cross-validated accuracy (computed after it published)."""
    with write(db):
        db.execute(
            "UPDATE rounds SET accuracy = ?, per_class = ?, message = coalesce(?, message),"
            " seconds = coalesce(?, seconds) WHERE id = ?",
            [accuracy, json.dumps(per_class), message, seconds, round_id],
        )


def record_calibration(db: Database, round_id: int, image_ids: np.ndarray,
                       confidence: np.ndarray, temperature: float, error_before: float,
                       error_after: float, held_out_class_ids: np.ndarray,
                       held_out_confidence: np.ndarray) -> None:
    """A finished round's calibrated confidences (the temperature fitted on held-out
    predictions applied) and the held-out models' calibrated prediction of each image
    (what auto-labels are given from), PREDICTION_CHUNK rows per transaction so votes
    never wait long, and the temperature with the held-out calibration error before and
    after it."""
    rows = list(zip(confidence.tolist(), np.asarray(held_out_class_ids).tolist(),
                    np.asarray(held_out_confidence, float).tolist(),
                    (int(round_id) for _ in range(len(image_ids))), image_ids.tolist()))
    for start in range(0, len(rows), PREDICTION_CHUNK):
        with write(db):
            db.conn.executemany(
                "UPDATE predictions SET confidence = ?, held_out_class_id = ?,"
                " held_out_confidence = ? WHERE round_id = ? AND image_id = ?",
                rows[start:start + PREDICTION_CHUNK])
        pause_for_writers()
    with write(db):
        db.execute(
            "UPDATE rounds SET temperature = ?, calibration = ? WHERE id = ?",
            [temperature, json.dumps({"error_before": error_before,
                                      "error_after": error_after}), round_id],
        )


def record_auto_ready(db: Database, round_id: int, ready: int, target: float) -> None:
    """How many of the round's pool its held-out models could label at `target`."""
    with write(db):
        db.execute("UPDATE rounds SET auto_ready = ?, auto_ready_target = ? WHERE id = ?",
                   [ready, target, round_id])


def queue_priority(db: Database, image_id: int) -> float:
    """Where an image returning to the queue goes: its rank in the latest round, else
    after every ranked image."""
    row = db.execute(
        "SELECT p.rank FROM predictions p WHERE p.image_id = ? AND p.round_id ="
        " (SELECT max(id) FROM rounds WHERE status = 'done')",
        [image_id],
    ).fetchone()
    if row is not None:
        return float(row[0])
    key = db.execute("SELECT shuffle_key FROM images WHERE id = ?", [image_id]).fetchone()[0]
    return unranked_priority(key)


def latest_prediction(db: Database, image_id: int) -> dict | None:
    """The latest finished round's guess for an image, for the labeling card."""
    rows = list(db.query(
        "SELECT p.class_id, p.confidence, p.round_id, c.name AS class_name FROM predictions p"
        " JOIN classes c ON c.id = p.class_id WHERE p.image_id = ? AND p.round_id ="
        " (SELECT max(id) FROM rounds WHERE status = 'done')",
        [image_id],
    ))
    return rows[0] if rows else None


def card_suggestion(db: Database, image_id: int) -> dict | None:
    """The guess a labeling card shows: the latest round's, except on an image a spot check
    sent (store/auto_labels.py), whose answer measures the model's label and so must not
    see it."""
    if db.execute("SELECT 1 FROM spot_checks WHERE image_id = ?", [image_id]).fetchone():
        return None
    return latest_prediction(db, image_id)


def labels_since_last_round(db: Database) -> int:
    """Labels given since the latest round was queued, not counting undone ones: what
    triggers automatic retraining."""
    last = db.execute("SELECT max(created_at) FROM rounds").fetchone()[0] or ""
    return db.execute(
        "SELECT count(*) FROM annotations a WHERE a.kind = 'label' AND a.created_at > ?"
        " AND NOT EXISTS (SELECT 1 FROM annotations r WHERE r.retracts_id = a.id)", [last]
    ).fetchone()[0]


def round_predictions(db: Database, round_id: int) -> list[dict]:
    """Every prediction of a round, best-ranked first, with the image's file and class name
    (none after a cold start, which ranks without a model)."""
    return list(db.query(
        "SELECT p.image_id, i.rel_path AS file, c.name AS predicted, p.confidence, p.score,"
        " p.rank FROM predictions p JOIN images i ON i.id = p.image_id"
        " LEFT JOIN classes c ON c.id = p.class_id WHERE p.round_id = ? ORDER BY p.rank",
        [round_id],
    ))
