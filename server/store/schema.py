"""The database schema, as numbered sqlite-utils migrations. Never edit one once released:
add the next."""

from __future__ import annotations

from sqlite_utils import Database, Migrations

migrations = Migrations("activelabel")


@migrations()
def m001_initial(db: Database) -> None:
    db["classes"].create(
        {"id": int, "name": str, "position": int}, pk="id", not_null={"name", "position"}
    )
    db["classes"].create_index(["name"], unique=True)

    db["import_runs"].create(
        {
            "id": int,
            "source": str,
            "started_at": str,
            "finished_at": str,
            "added": int,
            "labeled": int,
            "duplicates": int,
            "skipped": int,
            "ignored": int,
        },
        pk="id",
    )
    db["import_issues"].create(
        {"id": int, "import_id": int, "path": str, "kind": str, "reason": str},
        pk="id",
        foreign_keys=[("import_id", "import_runs", "id")],
    )
    db["import_issues"].create_index(["import_id"])

    db["images"].create(
        {
            "id": int,
            "sha256": str,
            "path": str,  # absolute path of the original file, read only by the server
            "rel_path": str,  # relative to the folder it was imported from
            "width": int,
            "height": int,
            "format": str,
            "mode": str,
            "bytes": int,
            "import_id": int,
            "added_at": str,
            "votes_needed": int,
            "shuffle_key": int,  # seeded, stable order of the queue before any model exists
        },
        pk="id",
        not_null={"sha256", "path", "votes_needed", "shuffle_key"},
        foreign_keys=[("import_id", "import_runs", "id")],
    )
    db["images"].create_index(["sha256"], unique=True)

    db["users"].create(
        {
            "id": int,
            "name": str,
            "role": str,
            "password_hash": str,
            "created_at": str,
            "active": int,
        },
        pk="id",
        not_null={"name", "role", "password_hash"},
    )
    db["users"].create_index(["name"], unique=True)

    # Append-only: a person's every answer, and every undo as a 'retract' row.
    db["annotations"].create(
        {
            "id": int,
            "image_id": int,
            "user_id": int,  # NULL for labels that came with the import (folder per class)
            "kind": str,  # label | skip | unsure | retract
            "class_id": int,
            "source": str,  # web | import | cli | simulate
            "created_at": str,
            "seconds": float,
            "retracts_id": int,
        },
        pk="id",
        not_null={"image_id", "kind", "source", "created_at"},
        foreign_keys=[
            ("image_id", "images", "id"),
            ("user_id", "users", "id"),
            ("class_id", "classes", "id"),
            ("retracts_id", "annotations", "id"),
        ],
    )
    db["annotations"].create_index(["image_id", "user_id"])
    db["annotations"].create_index(["user_id", "created_at"])
    db["annotations"].create_index(["retracts_id"])
    db.execute(
        "CREATE TRIGGER annotations_no_update BEFORE UPDATE ON annotations "
        "BEGIN SELECT RAISE(ABORT, 'annotations are append-only'); END"
    )
    db.execute(
        "CREATE TRIGGER annotations_no_delete BEFORE DELETE ON annotations "
        "BEGIN SELECT RAISE(ABORT, 'annotations are append-only'); END"
    )

    # Derived from annotations, kept in step inside the same transaction as each vote.
    db["image_state"].create(
        {
            "image_id": int,
            "status": str,  # unlabeled | labeled | unsure
            "class_id": int,
            "votes": int,
            "unsure": int,
            "updated_at": str,
        },
        pk="image_id",
        not_null={"status", "votes", "unsure"},
        foreign_keys=[("image_id", "images", "id"), ("class_id", "classes", "id")],
    )
    db["image_state"].create_index(["status", "class_id"])

    # Images that still need votes, in the order annotators get them.
    db["queue"].create({"image_id": int, "priority": float}, pk="image_id")
    db["queue"].create_index(["priority"])

    # Who holds which image for now, so two annotators are not handed the same one.
    db["leases"].create(
        {"image_id": int, "user_id": int, "handed_at": float, "expires_at": float},
        pk=("image_id", "user_id"),
    )
    db["leases"].create_index(["user_id", "handed_at"])
    db["leases"].create_index(["expires_at"])


@migrations()
def m002_rounds(db: Database) -> None:
    # One row per training round: a job whose progress the admin page polls.
    db["rounds"].create(
        {
            "id": int,
            "status": str,  # queued | running | done | failed
            "strategy": str,
            "mode": str,  # head | finetune, once known
            "requested_by": int,
            "created_at": str,
            "started_at": str,
            "finished_at": str,
            "heartbeat": float,  # unix time of the last progress report
            "progress": float,  # 0..1
            "message": str,
            "error": str,
            "labels_used": int,
            "pool_size": int,
            "accuracy": float,  # cross-validated on the labeled images
            "per_class": str,  # JSON {class name: accuracy}
            "seconds": float,
        },
        pk="id",
        not_null={"status", "strategy", "created_at"},
    )
    db["rounds"].create_index(["status"])
    # What each round predicted for each pool image, and where it ranked it.
    db["predictions"].create(
        {
            "round_id": int,
            "image_id": int,
            "class_id": int,
            "confidence": float,
            "score": float,
            "rank": int,
        },
        pk=("round_id", "image_id"),
        foreign_keys=[("round_id", "rounds", "id")],
    )
    db["predictions"].create_index(["image_id", "round_id"])


@migrations()
def m003_consensus(db: Database) -> None:
    # Several votes per image: the consensus status replaces 'labeled/unsure/unlabeled'.
    #   needs_votes: fewer decided votes than the image needs (none at all included)
    #   agreed:      enough votes, and they agree (the label trains and exports)
    #   disputed:    a tie, agreement below the threshold, an unsure vote, or a review request
    #   adjudicated: a reviewer gave the final label (trains and exports)
    db["image_state"].add_column("agreement", float)  # votes for the label / decided votes
    db.execute(
        "UPDATE image_state SET status = CASE status WHEN 'labeled' THEN 'agreed'"
        " WHEN 'unsure' THEN 'disputed' ELSE 'needs_votes' END"
    )
    db.execute("UPDATE image_state SET agreement = 1.0 WHERE status = 'agreed'")
    # Images drawn for the QA sample (more votes than the norm, so agreement is measured).
    db["images"].add_column("qa", int, not_null_default=0)
    # The consensus rules in force, copied from activelabel.toml by whoever opens the project
    # (server, worker, CLI), so every process judges votes the same way.
    db["rules"].create({"key": str, "value": str}, pk="key")
    # Gold images: the admin's known answer. Append-only; the latest row per image counts,
    # a NULL class takes the image out of the gold set.
    db["gold"].create(
        {"id": int, "image_id": int, "class_id": int, "user_id": int, "created_at": str},
        pk="id",
        not_null={"image_id", "created_at"},
        foreign_keys=[("image_id", "images", "id"), ("class_id", "classes", "id"),
                      ("user_id", "users", "id")],
    )
    db["gold"].create_index(["image_id"])
    # Annotator quality (Dawid-Skene) fitted over all votes: each fit is a new row, the
    # latest is used to weigh votes.
    db["annotator_models"].create(
        {"id": int, "created_at": str, "votes": int, "trusted": int, "model": str},
        pk="id",
        not_null={"created_at", "model"},
    )
    db["annotations"].create_index(["kind", "image_id"])


@migrations()
def m004_bulk(db: Database) -> None:
    # Many labels per keystroke. A clustering is a job like a round: the pool's embeddings
    # grouped into clusters for the cluster bootstrap.
    db["clusterings"].create(
        {
            "id": int,
            "status": str,  # queued | running | done | failed
            "k": int,  # clusters asked for; NULL = the silhouette's suggestion
            "clusters": int,  # clusters made
            "suggested_k": int,
            "silhouettes": str,  # JSON {k: silhouette score} behind the suggestion
            "method": str,  # ward | minibatch-kmeans
            "pool_size": int,
            "requested_by": int,
            "created_at": str,
            "started_at": str,
            "finished_at": str,
            "heartbeat": float,
            "progress": float,
            "message": str,
            "error": str,
            "seconds": float,
        },
        pk="id",
        not_null={"status", "created_at"},
    )
    db["clusterings"].create_index(["status"])
    db["cluster_members"].create(
        {"clustering_id": int, "cluster": int, "image_id": int, "position": int,
         "distance": float},
        pk=("clustering_id", "image_id"),
        foreign_keys=[("clustering_id", "clusterings", "id"), ("image_id", "images", "id")],
    )
    db["cluster_members"].create_index(["clustering_id", "cluster", "position"])
    # One row per grid a person decided (a cluster page labeled or marked mixed, a verify
    # page accepted), so it can be undone as one, and so a cluster resumes where it was left.
    db["bulk_actions"].create(
        {
            "id": int,
            "user_id": int,
            "kind": str,  # cluster | mixed | grid
            "clustering_id": int,
            "cluster": int,
            "last_position": int,  # the cluster page's last member: the next page starts after
            "round_id": int,  # the round whose predictions a grid showed
            "class_id": int,
            "labeled": int,  # votes written
            "set_aside": int,  # images toggled as odd ones out / wrong: back to the queue
            "passed": int,  # images someone else completed meanwhile, or already answered
            "seconds": float,
            "created_at": str,
            "undone_at": str,
        },
        pk="id",
        not_null={"user_id", "kind", "created_at"},
        foreign_keys=[("user_id", "users", "id"), ("clustering_id", "clusterings", "id"),
                      ("round_id", "rounds", "id"), ("class_id", "classes", "id")],
    )
    db["bulk_actions"].create_index(["user_id", "kind", "id"])
    db["bulk_actions"].create_index(["clustering_id", "cluster", "user_id"])
    # The images of each action: a vote (annotation_id) or set aside (NULL).
    db["bulk_items"].create(
        {"action_id": int, "image_id": int, "annotation_id": int},
        pk=("action_id", "image_id"),
        foreign_keys=[("action_id", "bulk_actions", "id"), ("image_id", "images", "id"),
                      ("annotation_id", "annotations", "id")],
    )
    db["bulk_items"].create_index(["image_id"])


@migrations()
def m005_quality(db: Database) -> None:
    # Dataset-quality checks (suspected mislabels, near-duplicates, the sample-size curve)
    # run as a job; each run is a row with its progress, and its findings as JSON.
    db["quality_runs"].create(
        {
            "id": int,
            "status": str,  # queued | running | done | failed
            "requested_by": int,
            "created_at": str,
            "started_at": str,
            "finished_at": str,
            "heartbeat": float,
            "progress": float,
            "message": str,
            "error": str,
            "result": str,  # JSON: {"suspects": [...], "duplicates": [...], "curve": {...}}
        },
        pk="id",
        not_null={"status", "created_at"},
    )
    # The admin's keep/drop decision per image of a duplicate group; append-only, the latest
    # row per image counts.
    db["duplicate_decisions"].create(
        {"id": int, "image_id": int, "keep": int, "user_id": int, "created_at": str},
        pk="id",
        not_null={"image_id", "keep", "created_at"},
        foreign_keys=[("image_id", "images", "id"), ("user_id", "users", "id")],
    )
    db["duplicate_decisions"].create_index(["image_id"])


@migrations()
def m006_sessions(db: Database) -> None:
    # A login is a row here; the signed cookie carries its token, checked on every request,
    # so logging out (or a password change, a deactivation) ends it on the server too.
    db["sessions"].create(
        {"token_hash": str, "user_id": int, "created_at": str, "ended_at": str},
        pk="token_hash",
        not_null={"user_id", "created_at"},
        foreign_keys=[("user_id", "users", "id")],
    )
    db["sessions"].create_index(["user_id"])


@migrations()
def m007_import_layouts(db: Database) -> None:
    # The split an image came with (train | val | test, from a DIR/train/<class>/ layout;
    # NULL when none), so `export --split keep` can give the data set its own split back.
    db["images"].add_column("split", str)
    # What each import understood of its folder, shown before anyone finds out the hard way:
    # JSON {"classes": {name: images}, "unlabeled": n, "maybe": n, "splits": {...}, ...}, and
    # the warnings about it (a class named like a pool folder, one class far above the rest).
    db["import_runs"].add_column("understood", str)
    db["import_runs"].add_column("warnings", str)



@migrations()
def m008_round_calibration(db: Database) -> None:
    # The temperature a round fitted on its held-out predictions (its published confidences
    # are rescaled by it) and the held-out calibration error before and after, as JSON.
    db["rounds"].add_column("temperature", float)
    db["rounds"].add_column("calibration", str)


@migrations()
def m009_predictions_by_key(db: Database) -> None:
    # A round writes a prediction for every pooled image (98,000 rows at a pool of 100,000,
    # while annotators wait for the new queue). Stored in its key's order (WITHOUT ROWID),
    # a row is one b-tree insert fewer (no separate rowid table beside the key's index):
    # 0.19 s instead of 0.27 s for those rows here. Same columns, rows and index.
    db.execute(
        "CREATE TABLE predictions_by_key (round_id INTEGER NOT NULL REFERENCES rounds(id),"
        " image_id INTEGER NOT NULL, class_id INTEGER, confidence REAL, score REAL,"
        " rank INTEGER, PRIMARY KEY (round_id, image_id)) WITHOUT ROWID"
    )
    db.execute(
        "INSERT INTO predictions_by_key (round_id, image_id, class_id, confidence, score, rank)"
        " SELECT round_id, image_id, class_id, confidence, score, rank FROM predictions"
    )
    db.execute("DROP TABLE predictions")
    db.execute("ALTER TABLE predictions_by_key RENAME TO predictions")
    db.execute('CREATE INDEX "idx_predictions_image_id_round_id"'
               ' ON "predictions" ("image_id", "round_id")')



# m010 onwards are in schema_later.py (registered after these, so applied in order).
from . import schema_later  # noqa: E402, F401
