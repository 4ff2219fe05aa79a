"""Auto-labels: answers the model gives itself (kind 'auto', source 'model'), appended like a
person's, with the round that made them and their calibrated confidence beside them
(auto_answers). They decide an image only while no person has answered it
(consensus.rules.decide: status 'auto'), train nothing unless model.train_on_auto_labels
says so, and are not exported unless asked for; a person's vote supersedes them, and
withdrawing them appends retractions.

Also the round's held-out predictions of its consensus labels, which choose the thresholds
(autolabel/plan.py)."""

from __future__ import annotations

import json
import time

import numpy as np
from sqlite_utils import Database

from . import job_rows
from .connection import StoreError, insert_columns, now_iso, pause_for_writers, write
from .labels import EFFECTIVE, SPOT_CHECK_PRIORITY
from .rounds import KEY_SCALE, PREDICTION_CHUNK, UNRANKED

# An image the model may label: nobody has an effective answer on it, nobody holds it now
# (their answer would find it gone), it is not a QA or gold image (those measure people),
# and no auto-label of this round was withdrawn from it.
_ELIGIBLE = (
    "s.status = 'needs_votes' AND i.qa = 0"
    " AND NOT EXISTS (SELECT 1 FROM annotations a WHERE a.image_id = i.id"
    f"   AND a.kind != 'retract' AND {EFFECTIVE})"
    " AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.image_id = i.id AND l.expires_at > ?)"
    " AND NOT EXISTS (SELECT 1 FROM gold g WHERE g.image_id = i.id AND g.class_id IS NOT NULL"
    "   AND g.id = (SELECT max(g2.id) FROM gold g2 WHERE g2.image_id = i.id))"
    " AND NOT EXISTS (SELECT 1 FROM auto_answers x WHERE x.image_id = i.id"
    "   AND x.round_id = ?)"
)


# --- the held-out predictions a round leaves ----------------------------------------------


def record_held_out(db: Database, round_id: int, image_ids, given, predicted,
                    confidence) -> None:
    """A round's held-out predictions of its consensus labels (calibrated confidences),
    PREDICTION_CHUNK rows per transaction."""
    n = len(image_ids)
    columns = ([int(round_id)] * n, np.asarray(image_ids).tolist(), np.asarray(given).tolist(),
               np.asarray(predicted).tolist(), np.asarray(confidence, float).tolist())
    for start in range(0, n, PREDICTION_CHUNK):
        with write(db):
            insert_columns(db, "held_out", ("round_id", "image_id", "given_id", "class_id",
                                            "confidence"), columns, start,
                           start + PREDICTION_CHUNK)
        pause_for_writers()


def _two_ids_and_a_value(rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of (id, id, float) as three columns; empty ones for no rows."""
    table = np.array(rows, dtype=np.float64).reshape(-1, 3)
    return table[:, 0].astype(np.int64), table[:, 1].astype(np.int64), table[:, 2]


def held_out(db: Database, round_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(given class ids, predicted class ids, calibrated confidences) of a round's
    held-out predictions; empty arrays when it left none."""
    rows = db.execute("SELECT given_id, class_id, confidence FROM held_out WHERE round_id = ?"
                      " ORDER BY image_id", [round_id]).fetchall()
    return _two_ids_and_a_value(rows)


# --- what the model may label -------------------------------------------------------------


def eligible(db: Database, round_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image ids, predicted class ids, calibrated confidences) of the round's held-out
    models for the images the model may label now (_ELIGIBLE): the same models, and the
    same temperature, as the held-out predictions the thresholds are chosen on."""
    rows = db.execute(
        "SELECT p.image_id, p.held_out_class_id, p.held_out_confidence FROM predictions p"
        " JOIN images i ON i.id = p.image_id JOIN image_state s ON s.image_id = i.id"
        f" WHERE p.round_id = ? AND p.held_out_class_id IS NOT NULL AND {_ELIGIBLE}"
        " ORDER BY p.image_id", [round_id, time.time(), round_id]).fetchall()
    return _two_ids_and_a_value(rows)


def answers_after(db: Database, round_row: dict) -> int:
    """People's answers (labels, unsure votes, adjudications) given since the round took
    its snapshot, undone ones excluded: the labels it did not learn from."""
    return db.execute(
        "SELECT count(*) FROM annotations a WHERE a.kind IN ('label', 'unsure', 'adjudicate')"
        f" AND a.source != 'model' AND a.created_at > ? AND {EFFECTIVE}",
        [round_row["started_at"] or round_row["created_at"]]).fetchone()[0]


def add_auto_labels(db: Database, run_id: int, round_id: int, image_ids: np.ndarray,
                    class_ids: np.ndarray, confidence: np.ndarray) -> int:
    """Append a running auto-label run's labels: how many were written. PREDICTION_CHUNK
    images per transaction; each chunk is checked again inside its transaction, so an image
    a person answered (or took) meanwhile is left to them."""
    written = 0
    columns = (np.asarray(image_ids).tolist(), np.asarray(class_ids).tolist(),
               np.asarray(confidence, float).tolist())
    for start in range(0, len(columns[0]), PREDICTION_CHUNK):
        with write(db):
            if not job_rows.is_running(db, "auto_label_runs", run_id):
                raise StoreError(f"auto-label run {run_id} is not running; it stops here")
            written += _write_chunk(db, run_id, round_id, columns, start)
        pause_for_writers()
    return written


def finish_run(db: Database, run_id: int, round_id: int | None, plan: dict, labeled: int,
               spot_checked: int, message: str) -> None:
    """Mark an auto-label run done with what it did."""
    with write(db):
        db.execute(
            "UPDATE auto_label_runs SET status = 'done', finished_at = ?, progress = 1,"
            " message = ?, round_id = ?, plan = ?, labeled = ?, spot_checked = ? WHERE id = ?",
            [now_iso(), message, round_id, json.dumps(plan), labeled, spot_checked, run_id])


def _write_chunk(db: Database, run_id: int, round_id: int, columns, start: int) -> int:
    db.execute("CREATE TEMP TABLE IF NOT EXISTS auto_next (image_id INTEGER PRIMARY KEY,"
               " class_id INTEGER, confidence REAL)")
    db.execute("DELETE FROM temp.auto_next")
    insert_columns(db, "temp.auto_next", ("image_id", "class_id", "confidence"), columns,
                   start, start + PREDICTION_CHUNK)
    db.execute(
        "DELETE FROM temp.auto_next WHERE image_id NOT IN (SELECT i.id FROM temp.auto_next n"
        " JOIN images i ON i.id = n.image_id JOIN image_state s ON s.image_id = i.id"
        f" WHERE {_ELIGIBLE})", [time.time(), round_id])
    before = db.execute("SELECT coalesce(max(id), 0) FROM annotations").fetchone()[0]
    created = now_iso()
    db.execute(
        "INSERT INTO annotations (image_id, user_id, kind, class_id, source, created_at)"
        " SELECT image_id, NULL, 'auto', class_id, 'model', ? FROM temp.auto_next"
        " ORDER BY image_id", [created])
    db.execute(
        "INSERT INTO auto_answers (annotation_id, run_id, round_id, image_id, confidence)"
        " SELECT a.id, ?, ?, a.image_id, n.confidence FROM annotations a"
        " JOIN temp.auto_next n ON n.image_id = a.image_id WHERE a.id > ? AND a.kind = 'auto'",
        [run_id, round_id, before])
    # What consensus.rules.decide says of an image whose only answer is the model's.
    db.execute(
        "INSERT INTO image_state (image_id, status, class_id, votes, unsure, agreement,"
        " updated_at) SELECT image_id, 'auto', class_id, 0, 0, NULL, ? FROM temp.auto_next"
        " WHERE true ON CONFLICT (image_id) DO UPDATE SET status = excluded.status,"
        " class_id = excluded.class_id, votes = 0, unsure = 0, agreement = NULL,"
        " updated_at = excluded.updated_at", [created])
    db.execute("DELETE FROM queue WHERE image_id IN (SELECT image_id FROM temp.auto_next)")
    db.execute("DELETE FROM leases WHERE image_id IN (SELECT image_id FROM temp.auto_next)")
    return db.execute("SELECT count(*) FROM temp.auto_next").fetchone()[0]


def withdraw(db: Database, class_ids: list[int] | None = None, run_id: int | None = None,
             user_id: int | None = None, source: str = "cli",
             image_ids: list[int] | None = None) -> int:
    """Retract the effective auto-labels (of these classes, of this run, of these images;
    all by default): each gets a 'retract' row, and an image the model alone had labeled
    goes back to the queue at its latest rank. One transaction (the caller's, if it is in
    one). Returns how many were withdrawn."""
    conditions, params = ["a.kind = 'auto'", EFFECTIVE], []
    if image_ids is not None:
        conditions.append(f"a.image_id IN ({', '.join('?' * len(image_ids))})")
        params += [int(i) for i in image_ids]
    if class_ids is not None:
        conditions.append(f"a.class_id IN ({', '.join('?' * len(class_ids))})")
        params += [int(c) for c in class_ids]
    if run_id is not None:
        conditions.append("a.id IN (SELECT annotation_id FROM auto_answers WHERE run_id = ?)")
        params.append(int(run_id))
    created = now_iso()
    with write(db):
        db.execute("CREATE TEMP TABLE IF NOT EXISTS auto_gone (annotation_id INTEGER"
                   " PRIMARY KEY, image_id INTEGER)")
        db.execute("DELETE FROM temp.auto_gone")
        db.execute("INSERT INTO temp.auto_gone SELECT a.id, a.image_id FROM annotations a"
                   f" WHERE {' AND '.join(conditions)}", params)
        db.execute(
            "INSERT INTO annotations (image_id, user_id, kind, source, created_at, retracts_id)"
            " SELECT image_id, ?, 'retract', ?, ?, annotation_id FROM temp.auto_gone"
            " ORDER BY annotation_id", [user_id, source, created])
        # The model's label was the image's only answer: it needs votes again (what
        # refresh_state decides with no answers), back in the queue at its latest rank
        # (rounds.queue_priority, for all of them in one statement).
        back = ("SELECT s.image_id FROM image_state s WHERE s.status = 'auto'"
                " AND s.image_id IN (SELECT image_id FROM temp.auto_gone)")
        db.execute(
            "INSERT INTO queue (image_id, priority) SELECT i.id, coalesce((SELECT p.rank FROM"
            " predictions p WHERE p.image_id = i.id AND p.round_id = (SELECT max(id) FROM"
            " rounds WHERE status = 'done')), ? + i.shuffle_key / ?) FROM images i"
            f" WHERE i.id IN ({back}) ON CONFLICT (image_id) DO NOTHING",
            [UNRANKED, KEY_SCALE])
        db.execute(
            "UPDATE image_state SET status = 'needs_votes', class_id = NULL, votes = 0,"
            f" unsure = 0, agreement = NULL, updated_at = ? WHERE image_id IN ({back})",
            [created])
        return db.execute("SELECT count(*) FROM temp.auto_gone").fetchone()[0]


# --- the spot check ---------------------------------------------------------------------------


def run_image_ids(db: Database, run_id: int) -> np.ndarray:
    """The images a run labeled (its auto-labels, withdrawn or not), ascending."""
    return np.fromiter((r[0] for r in db.execute(
        "SELECT image_id FROM auto_answers WHERE run_id = ? ORDER BY image_id", [run_id])),
        np.int64)


def start_spot_check(db: Database, run_id: int, image_ids) -> int:
    """Send these images of the run (a random sample) to people: each goes to the front of
    the queue, and stays there until a person answers it (labels.refresh_state). One
    transaction. Returns how many were sent (an image whose auto-label was superseded or
    withdrawn meanwhile is not)."""
    created = now_iso()
    with write(db):
        db.execute("CREATE TEMP TABLE IF NOT EXISTS spot_next (image_id INTEGER PRIMARY KEY)")
        db.execute("DELETE FROM temp.spot_next")
        db.conn.executemany("INSERT OR IGNORE INTO temp.spot_next (image_id) VALUES (?)",
                            [(int(i),) for i in image_ids])
        db.execute(
            "INSERT OR IGNORE INTO spot_checks (run_id, image_id, annotation_id, created_at)"
            " SELECT x.run_id, x.image_id, x.annotation_id, ? FROM auto_answers x"
            " JOIN annotations a ON a.id = x.annotation_id JOIN image_state s"
            " ON s.image_id = x.image_id WHERE x.run_id = ? AND s.status = 'auto'"
            f" AND x.image_id IN (SELECT image_id FROM temp.spot_next) AND {EFFECTIVE}",
            [created, run_id])
        db.execute(
            "INSERT INTO queue (image_id, priority) SELECT image_id, ? FROM spot_checks"
            " WHERE run_id = ? AND created_at = ? ON CONFLICT (image_id) DO UPDATE SET"
            " priority = excluded.priority", [SPOT_CHECK_PRIORITY, run_id, created])
        return db.execute("SELECT count(*) FROM spot_checks WHERE run_id = ? AND"
                          " created_at = ?", [run_id, created]).fetchone()[0]


# The first answer a person gave the image after the model's label (undone ones excluded).
_FIRST_ANSWER = (
    "SELECT h.{column} FROM annotations h WHERE h.image_id = c.image_id"
    " AND h.user_id IS NOT NULL AND h.kind IN ('label', 'unsure') AND h.id > c.annotation_id"
    " AND NOT EXISTS (SELECT 1 FROM annotations r WHERE r.retracts_id = h.id)"
    " ORDER BY h.id LIMIT 1"
)


def spot_check_rows(db: Database) -> list[dict]:
    """Per spot-checked image whose auto-label stands (not withdrawn): its run, the model's
    class and confidence, and the first person's answer since (class id, or unsure), None
    while nobody has answered."""
    rows = db.query(
        "SELECT c.run_id, c.image_id, a.class_id, x.confidence,"
        f" ({_FIRST_ANSWER.format(column='kind')}) AS kind,"
        f" ({_FIRST_ANSWER.format(column='class_id')}) AS answer"
        " FROM spot_checks c JOIN annotations a ON a.id = c.annotation_id"
        f" JOIN auto_answers x ON x.annotation_id = c.annotation_id WHERE {EFFECTIVE}"
        " ORDER BY c.image_id")
    return [{"run_id": r["run_id"], "image_id": r["image_id"], "class_id": r["class_id"],
             "confidence": r["confidence"], "unsure": r["kind"] == "unsure",
             "answer": r["answer"] if r["kind"] == "label" else None} for r in rows]


def populations(db: Database) -> list[dict]:
    """Per (run, class): the auto-labels that stand (not withdrawn; a person's later vote
    may have superseded them) and their summed confidence: what the spot checks measure."""
    return list(db.query(
        "SELECT x.run_id, a.class_id, count(*) AS labels, sum(x.confidence) AS confidence"
        " FROM auto_answers x JOIN annotations a ON a.id = x.annotation_id"
        f" WHERE {EFFECTIVE} GROUP BY x.run_id, a.class_id ORDER BY x.run_id, a.class_id"))


def expected_errors(db: Database) -> float:
    """How many of the images labeled by the model alone (status 'auto': a person's answer
    has not superseded its label) the calibration expects wrong: the sum of one less their
    confidence (what finishing the dataset counts against its allowance)."""
    return float(db.execute(
        "SELECT coalesce(sum(1.0 - x.confidence), 0) FROM auto_answers x JOIN annotations a"
        " ON a.id = x.annotation_id JOIN image_state s ON s.image_id = a.image_id"
        f" AND s.status = 'auto' AND s.class_id = a.class_id WHERE {EFFECTIVE}").fetchone()[0])


# --- what there is --------------------------------------------------------------------------


def auto_label_counts(db: Database) -> dict[int, int]:
    """Per class id: images labeled by the model alone (status 'auto')."""
    return {row[0]: row[1] for row in db.execute(
        "SELECT class_id, count(*) FROM image_state WHERE status = 'auto' GROUP BY class_id")}


def latest_run(db: Database) -> dict | None:
    """The latest auto-label run that finished, its plan decoded."""
    row = job_rows.latest(db, "auto_label_runs", status="done")
    return row | {"plan": json.loads(row["plan"] or "{}")} if row else None


def auto_answer(db: Database, image_id: int) -> dict | None:
    """The image's effective auto-label, with its confidence and round, if any."""
    rows = list(db.query(
        "SELECT a.id, a.class_id, x.confidence, x.round_id, x.run_id FROM annotations a"
        " JOIN auto_answers x ON x.annotation_id = a.id WHERE a.image_id = ?"
        f" AND a.kind = 'auto' AND {EFFECTIVE} ORDER BY a.id DESC LIMIT 1", [image_id]))
    return rows[0] if rows else None

