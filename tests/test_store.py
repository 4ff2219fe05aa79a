"""The store against the real project database: the queue, leases, append-only
annotations, undo as retraction, and several annotators at once."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from conftest import CLASSES

from server import store
from server.projects import add_user, init_project


@pytest.fixture
def db(project):
    connection = store.connect(project.db_path)
    yield connection
    connection.conn.close()


def user_id(db, name: str) -> int:
    return store.get_user_by_name(db, name)["id"]


def class_id(db, name: str) -> int:
    return next(c["id"] for c in store.classes(db) if c["name"] == name)


def annotation_rows(db) -> list[dict]:
    return list(db.query("SELECT * FROM annotations ORDER BY id"))


def leases_of(db, uid: int) -> set[int]:
    return {r["image_id"] for r in db.query("SELECT image_id FROM leases WHERE user_id = ?", [uid])}


def queued(db) -> set[int]:
    return {r["image_id"] for r in db.query("SELECT image_id FROM queue")}


# --- leases -------------------------------------------------------------------------------


def test_two_annotators_get_different_images_and_keep_their_own(db):
    ann, bob = user_id(db, "ann"), user_id(db, "bob")
    ann_images = store.next_images(db, ann, n=2)
    bob_images = store.next_images(db, bob, n=2)
    assert len(ann_images) == len(bob_images) == 2
    assert not set(ann_images) & set(bob_images)
    # Asking again (a reload) gives the same images, in the same order, not new ones.
    assert store.next_images(db, ann, n=2) == ann_images
    assert leases_of(db, ann) == set(ann_images)


def test_queue_order_is_seeded_and_stable(db):
    ann = user_id(db, "ann")
    expected = [
        r["image_id"] for r in db.query("SELECT image_id FROM queue ORDER BY priority, image_id")
    ]
    assert store.next_images(db, ann, n=5) == expected[:5]


def test_an_expired_lease_frees_the_image_for_someone_else(db):
    ann, bob = user_id(db, "ann"), user_id(db, "bob")
    [held] = store.next_images(db, ann, n=1, lease_seconds=1)
    [other] = store.next_images(db, bob, n=1)
    assert other != held
    assert held not in store.next_images(db, bob, n=2)[1:]  # still ann's
    time.sleep(1.1)
    assert held in store.next_images(db, bob, n=3)
    assert held not in leases_of(db, ann)


def test_a_live_lease_is_renewed_when_asked_again(db):
    ann, bob = user_id(db, "ann"), user_id(db, "bob")
    [held] = store.next_images(db, ann, n=1, lease_seconds=1)
    time.sleep(0.6)
    assert store.next_images(db, ann, n=1, lease_seconds=1) == [held]  # renewed for 1 s
    time.sleep(0.6)
    assert held not in store.next_images(db, bob, n=3)


def test_answering_releases_the_lease_and_the_image_leaves_the_queue(db):
    ann, bob = user_id(db, "ann"), user_id(db, "bob")
    first, second = store.next_images(db, ann, n=2)
    store.add_vote(db, ann, first, "label", class_id(db, "3"))
    assert leases_of(db, ann) == {second}
    assert first not in queued(db)
    assert store.state_of(db, first)["status"] == "agreed"
    assert store.state_of(db, first)["class_id"] == class_id(db, "3")
    assert first not in store.next_images(db, bob, n=40)
    assert store.next_images(db, ann, n=1) == [second]


def test_release_leases_gives_back_everything_a_user_holds(db):
    ann, bob = user_id(db, "ann"), user_id(db, "bob")
    held = store.next_images(db, ann, n=2)
    store.release_leases(db, ann)
    assert leases_of(db, ann) == set()
    assert store.next_images(db, bob, n=2) == held


def test_everything_answered_leaves_nothing_to_hand_out(db):
    ann, bob = user_id(db, "ann"), user_id(db, "bob")
    images = store.next_images(db, ann, n=100)
    assert len(images) == 40
    assert store.next_images(db, bob, n=2) == []
    for image_id in images:
        store.add_vote(db, ann, image_id, "label", class_id(db, "0"))
    assert store.next_images(db, ann, n=2) == []
    assert store.next_images(db, bob, n=2) == []
    assert store.images_left(db, ann) == store.images_left(db, bob) == 0
    assert store.status_counts(db) == {"needs_votes": 0, "agreed": 40, "disputed": 0,
                                       "adjudicated": 0, "auto": 0}


def test_a_late_answer_from_a_stale_tab_drops_other_leases_on_that_image(db):
    ann, bob = user_id(db, "ann"), user_id(db, "bob")
    [image] = store.next_images(db, ann, n=1, lease_seconds=1)
    time.sleep(1.1)
    assert store.next_images(db, bob, n=1) == [image]
    # ann's tab still shows the image and she answers it after her lease ran out.
    store.add_vote(db, ann, image, "label", class_id(db, "1"))
    assert leases_of(db, bob) == set()
    assert image not in store.next_images(db, bob, n=2)


# --- votes --------------------------------------------------------------------------------


def test_a_vote_records_who_what_when_and_how_long(db):
    ann = user_id(db, "ann")
    [image] = store.next_images(db, ann, n=1)
    before = store.now_iso()
    vote = store.add_vote(db, ann, image, "label", class_id(db, "7"), seconds=2.5)
    [row] = annotation_rows(db)
    assert row["id"] == vote
    assert (row["user_id"], row["image_id"], row["kind"]) == (ann, image, "label")
    assert row["class_id"] == class_id(db, "7")
    assert row["seconds"] == 2.5
    assert row["source"] == "web"
    assert row["created_at"] >= before
    assert row["retracts_id"] is None


def test_a_second_answer_on_the_same_image_is_refused_and_the_first_stands(db):
    ann = user_id(db, "ann")
    [image] = store.next_images(db, ann, n=1)
    store.add_vote(db, ann, image, "label", class_id(db, "2"))
    with pytest.raises(store.AlreadyAnswered):
        store.add_vote(db, ann, image, "label", class_id(db, "5"))
    with pytest.raises(store.AlreadyAnswered):
        store.add_vote(db, ann, image, "skip")
    assert len(annotation_rows(db)) == 1
    assert store.state_of(db, image)["class_id"] == class_id(db, "2")


def test_a_vote_on_an_unknown_image_writes_nothing(db):
    ann = user_id(db, "ann")
    for image_id in (0, -1, 999_999, 2**70):
        with pytest.raises(store.StoreError, match="no image"):
            store.add_vote(db, ann, image_id, "label", class_id(db, "1"))
        assert store.get_image(db, image_id) is None
    assert annotation_rows(db) == []


def test_a_vote_for_an_unknown_class_writes_nothing(db):
    ann = user_id(db, "ann")
    [image] = store.next_images(db, ann, n=1)
    for bad_class in (0, 999, 2**70):
        with pytest.raises(store.StoreError, match="no class"):
            store.add_vote(db, ann, image, "label", bad_class)
        assert store.class_by_id(db, bad_class) is None
    assert annotation_rows(db) == []
    assert store.state_of(db, image)["status"] == "needs_votes"


def test_malformed_votes_are_refused(db):
    ann = user_id(db, "ann")
    [image] = store.next_images(db, ann, n=1)
    for kind, cls in (("label", None), ("skip", 1), ("retract", None), ("maybe", None)):
        with pytest.raises(store.StoreError):
            store.add_vote(db, ann, image, kind, cls)
    assert annotation_rows(db) == []


def test_skip_keeps_the_image_from_that_user_but_not_from_others(db):
    ann, bob = user_id(db, "ann"), user_id(db, "bob")
    left_before = store.images_left(db, ann)
    [image] = store.next_images(db, ann, n=1)
    store.add_vote(db, ann, image, "skip")
    assert store.state_of(db, image)["status"] == "needs_votes"
    assert image in queued(db)
    assert image not in store.next_images(db, ann, n=40)
    assert store.next_images(db, bob, n=1) == [image]
    assert store.images_left(db, ann) == left_before - 1
    assert store.images_left(db, bob) == left_before
    assert store.count_today(db, ann) == 0  # a skip is not an answer


def test_unsure_counts_as_an_answer(db):
    ann, bob = user_id(db, "ann"), user_id(db, "bob")
    [image] = store.next_images(db, ann, n=1)
    store.add_vote(db, ann, image, "unsure")
    state = store.state_of(db, image)
    assert (state["status"], state["unsure"], state["votes"], state["class_id"]) == (
        "disputed", 1, 0, None
    )
    assert image not in queued(db)
    assert image not in store.next_images(db, bob, n=40)
    assert store.count_today(db, ann) == 1
    assert store.status_counts(db)["disputed"] == 1


def test_counts_today_and_left_follow_the_answers(db):
    ann, bob = user_id(db, "ann"), user_id(db, "bob")
    assert (store.count_today(db, ann), store.images_left(db, ann)) == (0, 40)
    images = store.next_images(db, ann, n=3)
    store.add_vote(db, ann, images[0], "label", class_id(db, "1"))
    store.add_vote(db, ann, images[1], "unsure")
    store.add_vote(db, ann, images[2], "skip")
    assert store.count_today(db, ann) == 2
    assert store.images_left(db, ann) == 37
    assert (store.count_today(db, bob), store.images_left(db, bob)) == (0, 38)


# --- append-only and undo -----------------------------------------------------------------


def test_annotations_cannot_be_updated_or_deleted_even_with_raw_sql(project, db):
    ann = user_id(db, "ann")
    [image] = store.next_images(db, ann, n=1)
    store.add_vote(db, ann, image, "label", class_id(db, "4"))
    [original] = annotation_rows(db)
    raw = sqlite3.connect(project.db_path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute("UPDATE annotations SET class_id = ?", [class_id(db, "9")])
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute("DELETE FROM annotations")
        raw.commit()
    finally:
        raw.close()
    assert annotation_rows(db) == [original]


def test_undo_appends_a_retraction_and_leaves_the_answer_untouched(db):
    ann, bob = user_id(db, "ann"), user_id(db, "bob")
    first, second = store.next_images(db, ann, n=2)
    vote = store.add_vote(db, ann, first, "label", class_id(db, "8"))
    [original] = annotation_rows(db)
    assert store.last_answer(db, ann)["id"] == vote

    assert store.retract(db, ann, vote) == first

    rows = annotation_rows(db)
    assert len(rows) == 2
    assert rows[0] == original
    assert (rows[1]["kind"], rows[1]["retracts_id"], rows[1]["user_id"]) == ("retract", vote, ann)
    assert rows[1]["image_id"] == first
    state = store.state_of(db, first)
    assert (state["status"], state["votes"], state["class_id"]) == ("needs_votes", 0, None)
    assert first in queued(db)
    assert store.last_answer(db, ann) is None
    # The undone image comes back to ann first, and to nobody else meanwhile.
    assert store.next_images(db, ann, n=2) == [first, second]
    assert first not in store.next_images(db, bob, n=40)
    # ann can answer it again, differently.
    store.add_vote(db, ann, first, "label", class_id(db, "6"))
    assert store.state_of(db, first)["class_id"] == class_id(db, "6")


def test_undo_twice_with_the_same_id_undoes_once(db):
    ann = user_id(db, "ann")
    first, second = store.next_images(db, ann, n=2)
    older = store.add_vote(db, ann, first, "label", class_id(db, "1"))
    newer = store.add_vote(db, ann, second, "label", class_id(db, "2"))
    assert store.retract(db, ann, newer) == second
    assert store.retract(db, ann, newer) is None
    assert len(annotation_rows(db)) == 3
    assert store.last_answer(db, ann)["id"] == older
    assert store.state_of(db, first)["status"] == "agreed"


def test_undo_of_someone_elses_answer_is_refused_and_writes_nothing(db):
    ann, bob = user_id(db, "ann"), user_id(db, "bob")
    [image] = store.next_images(db, ann, n=1)
    vote = store.add_vote(db, ann, image, "label", class_id(db, "1"))
    with pytest.raises(store.StoreError, match="not one of yours"):
        store.retract(db, bob, vote)
    assert len(annotation_rows(db)) == 1
    assert store.state_of(db, image)["status"] == "agreed"
    assert image not in leases_of(db, bob)


def test_a_retraction_itself_cannot_be_undone(db):
    ann = user_id(db, "ann")
    [image] = store.next_images(db, ann, n=1)
    vote = store.add_vote(db, ann, image, "label", class_id(db, "1"))
    store.retract(db, ann, vote)
    retraction = annotation_rows(db)[-1]["id"]
    for bad in (retraction, 999_999, 2**70):
        with pytest.raises(store.StoreError):
            store.retract(db, ann, bad)
    assert len(annotation_rows(db)) == 2


def test_undoing_a_skip_does_not_hand_over_an_image_someone_else_now_holds(db):
    ann, bob = user_id(db, "ann"), user_id(db, "bob")
    [image] = store.next_images(db, ann, n=1)
    skip = store.add_vote(db, ann, image, "skip")
    assert store.next_images(db, bob, n=1) == [image]
    store.retract(db, ann, skip)
    assert image not in store.next_images(db, ann, n=3)
    holders = list(db.query("SELECT user_id FROM leases WHERE image_id = ?", [image]))
    assert holders == [{"user_id": bob}]


def test_undone_seconds_and_counts(db):
    """Undone answers leave today's count; the seconds field is stored as given."""
    ann = user_id(db, "ann")
    [image] = store.next_images(db, ann, n=1)
    vote = store.add_vote(db, ann, image, "label", class_id(db, "1"), seconds=1.25)
    assert store.count_today(db, ann) == 1
    store.retract(db, ann, vote)
    assert store.count_today(db, ann) == 0
    assert annotation_rows(db)[0]["seconds"] == 1.25


# --- several votes per image --------------------------------------------------------------


@pytest.fixture
def two_vote_db(tmp_path, image_folder):
    created, _report = init_project(
        tmp_path / "two-votes", image_folder, CLASSES, seed=3, votes_per_image=2
    )
    for name in ("ann", "bob", "cat"):
        add_user(created, name, "annotator", f"{name}-password")
    connection = store.connect(created.db_path)
    yield connection
    connection.conn.close()


def test_an_image_needing_two_votes_goes_to_two_annotators_but_never_twice_to_one(two_vote_db):
    db = two_vote_db
    ann, bob, cat = (user_id(db, n) for n in ("ann", "bob", "cat"))
    [image] = store.next_images(db, ann, n=1)
    assert store.next_images(db, bob, n=1) == [image]  # both may hold it at once
    assert image not in store.next_images(db, cat, n=2)  # two holders are enough

    store.add_vote(db, ann, image, "label", class_id(db, "5"))
    assert image in queued(db)  # still needs bob's vote
    assert image not in store.next_images(db, ann, n=40)
    store.add_vote(db, bob, image, "label", class_id(db, "5"))
    assert image not in queued(db)
    assert store.state_of(db, image)["votes"] == 2
    assert image not in store.next_images(db, cat, n=40)


def test_undoing_one_of_two_votes_puts_the_image_back_for_its_voter(two_vote_db):
    db = two_vote_db
    ann, bob, cat = (user_id(db, n) for n in ("ann", "bob", "cat"))
    [image] = store.next_images(db, ann, n=1)
    store.next_images(db, bob, n=1)
    vote = store.add_vote(db, ann, image, "label", class_id(db, "5"))
    store.add_vote(db, bob, image, "label", class_id(db, "5"))
    store.retract(db, ann, vote)
    assert image in queued(db)
    assert store.next_images(db, ann, n=1) == [image]
    assert image not in store.next_images(db, cat, n=40)  # bob's vote + ann's lease


# --- several annotators at once -----------------------------------------------------------


def test_concurrent_annotators_never_share_an_image_and_never_see_a_lock_error(project):
    names = [f"worker{i}" for i in range(6)]
    setup = store.connect(project.db_path)
    for name in names:
        store.add_user(setup, name, "annotator", "not-a-real-hash")  # logins are not used here
    ids = [user_id(setup, n) for n in names]
    label = class_id(setup, "0")
    setup.conn.close()

    start = threading.Barrier(len(ids))
    handed: dict[int, list[int]] = {uid: [] for uid in ids}
    errors: list[BaseException] = []

    def work(uid: int) -> None:
        db = store.connect(project.db_path)
        try:
            start.wait()
            while images := store.next_images(db, uid, n=2):
                handed[uid].extend(images[:1])
                time.sleep(0.01)  # looking at the image, while the others ask for theirs
                store.add_vote(db, uid, images[0], "label", label)
        except BaseException as exc:  # report it from the main thread
            errors.append(exc)
        finally:
            db.conn.close()

    threads = [threading.Thread(target=work, args=(uid,)) for uid in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    answered = [image for images in handed.values() for image in images]
    assert sorted(answered) == sorted(set(answered))  # nobody got another's image
    assert len(answered) == 40
    check = store.connect(project.db_path)
    try:
        per_image = check.execute(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM annotations GROUP BY image_id)"
        ).fetchone()[0]
        assert per_image == 1
        assert sum(1 for uid in ids if handed[uid]) > 1  # the work really was shared
    finally:
        check.conn.close()


def test_concurrent_first_requests_hand_out_disjoint_images(project):
    setup = store.connect(project.db_path)
    for i in range(8):
        store.add_user(setup, f"burst{i}", "annotator", "not-a-real-hash")
    ids = [user_id(setup, f"burst{i}") for i in range(8)]
    setup.conn.close()
    start = threading.Barrier(len(ids))
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def first_card(uid: int) -> None:
        db = store.connect(project.db_path)
        try:
            start.wait()
            results[uid] = store.next_images(db, uid, n=2)
        except BaseException as exc:
            errors.append(exc)
        finally:
            db.conn.close()

    threads = [threading.Thread(target=first_card, args=(uid,)) for uid in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    everything = [image for images in results.values() for image in images]
    assert len(everything) == 16
    assert len(set(everything)) == 16


def test_a_rounds_snapshot_is_one_moment_and_holds_no_writer_up(project):
    # The round reads its training set and pool in one read transaction: a vote written by
    # someone else meanwhile goes through at once, and is not half-seen by the snapshot.
    from server.store import rounds as round_store
    from server.store.connection import read

    reader, voter = store.connect(project.db_path), store.connect(project.db_path)
    ann = user_id(voter, "ann")
    image = min(queued(voter))
    with read(reader):
        before = round_store.training_set(reader)
        started = time.monotonic()
        store.add_vote(voter, ann, image, "label", class_id(voter, "0"))  # not held up
        assert time.monotonic() - started < 1.0
        pool = {r["id"] for r in round_store.pool(reader)}
        assert image in pool and image not in {r["id"] for r in before}  # as before the vote
    assert image not in {r["id"] for r in round_store.pool(reader)}  # the next read sees it
    assert image in {r["id"] for r in round_store.training_set(reader)}
    reader.conn.close()
    voter.conn.close()


def test_a_rounds_snapshot_holds_the_training_set_and_pool_and_paths_come_on_request(db):
    # A round reads ids and classes only; the files' paths are read for the images that
    # need them (unembedded ones, or every one for a fine-tune), in the order asked.
    from server.store import rounds as round_store
    from server.store.images import paths_of

    ann = user_id(db, "ann")
    answered = sorted(queued(db))[:3]
    for image in answered:
        store.add_vote(db, ann, image, "label", class_id(db, "1"))
    given = round_store.snapshot(db)
    trained = round_store.training_set(db)
    assert given.labeled_ids.tolist() == [r["id"] for r in trained]
    assert given.labels.tolist() == [r["class_id"] for r in trained]
    assert given.pool_ids.tolist() == [r["id"] for r in round_store.pool(db)]
    assert set(answered) <= set(given.labeled_ids.tolist())
    assert not set(answered) & set(given.pool_ids.tolist())
    wanted = given.pool_ids[::-1][:4]
    by_id = {r["id"]: r["path"] for r in round_store.pool(db)}
    assert paths_of(db, wanted) == [by_id[int(i)] for i in wanted]
    assert paths_of(db, []) == []
    less = given.without([answered[0], int(wanted[0])])
    assert answered[0] not in less.labeled_ids and int(wanted[0]) not in less.pool_ids
    assert len(less.labels) == len(less.labeled_ids) == len(given.labeled_ids) - 1
    with pytest.raises(KeyError):
        paths_of(db, [10**9])
