"""The labeling page and its endpoints, through the real app with CSRF on: cards, keys,
answers, undo, counts, and images served by id."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from conftest import CLASSES, card_images, htmx_headers, login, write_digits
from PIL import Image

from server import store
from server.app import create_app
from server.projects import add_user, init_project


@pytest.fixture
def db(project):
    connection = store.connect(project.db_path)
    yield connection
    connection.conn.close()


def class_id(db, name: str) -> int:
    return next(c["id"] for c in store.classes(db) if c["name"] == name)


def user_id(db, name: str) -> int:
    return store.get_user_by_name(db, name)["id"]


def annotations(db) -> list[dict]:
    return list(db.query("SELECT * FROM annotations ORDER BY id"))


def counts(html: str) -> tuple[int, int]:
    """(today, left) as the card shows them."""
    today = re.search(r'class="today">(\d+)<', html)
    left = re.search(r'class="left">(\d+)<', html)
    assert today and left, html
    return int(today.group(1)), int(left.group(1))


def undo_id(html: str) -> str:
    match = re.search(r'name="annotation_id" value="(\d*)"', html)
    assert match, html
    return match.group(1)


def card(client, token) -> str:
    response = client.get("/label", headers=htmx_headers(token))
    assert response.status_code == 200
    return response.get_data(as_text=True)


def answer(client, token, image_id, choice, **extra):
    return client.post(
        f"/label/{image_id}", data={"choice": choice, **extra}, headers=htmx_headers(token)
    )


def fetch(client, path: str) -> tuple[int, str, str, bytes]:
    """GET a file response and close it (send_file keeps the file open until then)."""
    with client.get(path) as response:
        return (
            response.status_code,
            response.mimetype,
            response.headers.get("Cache-Control", ""),
            response.data,
        )


# --- the page -----------------------------------------------------------------------------


def test_label_page_shows_one_image_a_key_per_class_and_prefetches_the_next(as_user, db):
    client, _token = as_user("ann")
    response = client.get("/label")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert "label.js" in html
    current, prefetched = card_images(html)
    assert current != prefetched
    assert html.count('class="current"') == 1
    assert f'class="prefetch" src="/images/{prefetched}"' in html
    assert store.next_images(db, user_id(db, "ann"), n=2) == [current, prefetched]

    keys = "0123456789"  # a class named by a single key character gets that key
    for name, key in zip(CLASSES, keys, strict=True):
        button = re.search(
            rf'<button type="submit" name="choice" value="{class_id(db, name)}"'
            rf' data-key="{key}">\s*<kbd>{key}</kbd> {name}\s*</button>',
            html,
        )
        assert button, f"no button for class {name} with key {key}"
    for value, key in (("skip", "s"), ("unsure", "u")):
        assert re.search(rf'value="{value}" data-key="{key}"[^>]*><kbd>{key}</kbd>', html)
    assert re.search(r'data-key="z"[^>]*disabled><kbd>z</kbd> undo', html)  # nothing yet
    assert counts(html) == (0, 40)


def test_many_classes_get_letters_after_the_digits_and_skip_the_command_keys(tmp_path, digits):
    folder = tmp_path / "few"
    write_digits(folder, digits, 3)
    names = [f"class{i:02d}" for i in range(34)]
    created, _ = init_project(tmp_path / "many", folder, names)
    add_user(created, "ann", "annotator", "ann-password")
    client = create_app(created.root, {"TESTING": True}).test_client()
    login(client, "ann")
    html = client.get("/label").get_data(as_text=True)
    keys = re.findall(r'name="choice" value="\d+" data-key="(\w)"', html)
    assert keys == list("123456789abcdefghijklmnopqrtvwxy")
    assert not {"s", "u", "z"} & set(keys)
    assert "class33" in html  # the classes past the keys still get a button


def test_classes_named_by_a_key_keep_it_and_the_rest_fill_in_order(tmp_path, digits):
    folder = tmp_path / "few"
    write_digits(folder, digits, 3)
    created, _ = init_project(tmp_path / "mixed", folder, ["cat", "b", "dog", "s", "1"])
    add_user(created, "ann", "annotator", "ann-password")
    client = create_app(created.root, {"TESTING": True}).test_client()
    login(client, "ann")
    html = client.get("/label").get_data(as_text=True)
    keys = dict(re.findall(r'data-key="(\w)">\s*<kbd>\w</kbd> (\w+)', html))
    # 'b' and '1' are their own keys; 's' is skip's, so that class takes the next free key.
    assert keys == {"2": "cat", "b": "b", "3": "dog", "4": "s", "1": "1"}


def test_an_htmx_request_gets_the_card_alone(as_user):
    client, token = as_user("ann")
    html = card(client, token)
    assert html.startswith('<section id="card"')
    assert "<html" not in html and "<body" not in html


# --- answers ------------------------------------------------------------------------------


def test_an_answer_records_it_and_returns_the_next_card_with_the_one_after(as_user, db):
    client, token = as_user("ann")
    first, second = card_images(card(client, token))
    response = answer(client, token, first, str(class_id(db, "4")), elapsed_ms="1534")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert html.startswith('<section id="card"') and "<html" not in html
    current, prefetched = card_images(html)
    assert current == second  # what was prefetched is shown now
    assert prefetched not in (first, second)
    [row] = annotations(db)
    assert (row["user_id"], row["image_id"], row["kind"]) == (user_id(db, "ann"), first, "label")
    assert row["class_id"] == class_id(db, "4")
    assert row["seconds"] == 1.534
    assert undo_id(html) == str(row["id"])
    assert store.state_of(db, first)["status"] == "agreed"


def test_the_answer_goes_to_the_image_named_in_the_url(as_user, db):
    """A stale tab or a late click answers the image it showed, never the current one."""
    client, token = as_user("ann")
    first, second = card_images(card(client, token))
    answer(client, token, second, str(class_id(db, "2")))
    [row] = annotations(db)
    assert row["image_id"] == second
    assert store.state_of(db, first)["status"] == "needs_votes"
    assert card_images(card(client, token))[0] == first


def test_a_repeated_answer_is_harmless_and_the_first_one_stands(as_user, db):
    client, token = as_user("ann")
    first, _ = card_images(card(client, token))
    assert answer(client, token, first, str(class_id(db, "1"))).status_code == 200
    again = answer(client, token, first, str(class_id(db, "7")))
    assert again.status_code == 200
    assert first not in card_images(again.get_data(as_text=True))
    assert len(annotations(db)) == 1
    assert store.state_of(db, first)["class_id"] == class_id(db, "1")
    assert counts(again.get_data(as_text=True)) == (1, 39)


def test_counts_today_and_left_follow_each_answer(as_user, db):
    ann, ann_token = as_user("ann")
    bob, bob_token = as_user("bob")
    html = card(ann, ann_token)
    assert counts(html) == (0, 40)

    html = answer(ann, ann_token, card_images(html)[0], str(class_id(db, "3"))).get_data(True)
    assert counts(html) == (1, 39)
    html = answer(ann, ann_token, card_images(html)[0], "skip").get_data(as_text=True)
    assert counts(html) == (1, 38)  # a skip is no answer, but that image is done for ann
    html = answer(ann, ann_token, card_images(html)[0], "unsure").get_data(as_text=True)
    assert counts(html) == (2, 37)
    # bob has answered nothing; only the skipped image is still there for him.
    assert counts(card(bob, bob_token)) == (0, 38)

    html = ann.post(
        "/label/undo", data={"annotation_id": undo_id(html)}, headers=htmx_headers(ann_token)
    ).get_data(as_text=True)
    assert counts(html) == (1, 38)


def test_skip_passes_the_image_on_to_others(as_user, db):
    ann, ann_token = as_user("ann")
    first, _ = card_images(card(ann, ann_token))
    html = answer(ann, ann_token, first, "skip").get_data(as_text=True)
    assert first not in card_images(html)
    [row] = annotations(db)
    assert (row["kind"], row["class_id"]) == ("skip", None)
    assert store.state_of(db, first)["status"] == "needs_votes"
    bob, bob_token = as_user("bob")  # logging in opens the labeling page
    assert card_images(card(bob, bob_token))[0] == first
    for _ in range(5):  # ann keeps going and never sees it again
        html = answer(ann, ann_token, card_images(html)[0], "skip").get_data(as_text=True)
        assert first not in card_images(html)


def test_unsure_is_an_answer(as_user, db):
    client, token = as_user("ann")
    first, _ = card_images(card(client, token))
    answer(client, token, first, "unsure")
    assert store.state_of(db, first)["status"] == "disputed"
    [row] = annotations(db)
    assert (row["kind"], row["class_id"]) == ("unsure", None)


def test_seconds_come_from_elapsed_ms_and_absurd_values_are_ignored(as_user, db):
    cases = [("2500", 2.5), ("0", 0.0), ("1", 0.001), ("-5", None), ("1e12", None),
             ("nan", None), ("inf", None), ("soon", None), ("", None)]
    client, token = as_user("ann")
    html = card(client, token)
    for elapsed_ms, _stored in cases:
        response = answer(client, token, card_images(html)[0], "unsure", elapsed_ms=elapsed_ms)
        assert response.status_code == 200
        html = response.get_data(as_text=True)
    stored = [row["seconds"] for row in annotations(db)]
    assert stored == [expected for _ms, expected in cases]


def test_an_unknown_class_is_refused_with_a_message_and_nothing_written(as_user, db):
    client, token = as_user("ann")
    first, _ = card_images(card(client, token))
    for choice in ("0", "999", "99999999999999999999999"):
        response = answer(client, token, first, choice)
        assert response.status_code == 400, choice
        assert f"Unknown class id {choice[:20]}" in response.get_data(as_text=True)
    assert annotations(db) == []
    assert store.state_of(db, first)["status"] == "needs_votes"


def test_a_malformed_choice_is_refused(as_user, db):
    client, token = as_user("ann")
    first, _ = card_images(card(client, token))
    for choice in (None, "", "abc", "1.5", "-1", "²", "١", " 1", "SKIP", "label"):
        data = {} if choice is None else {"choice": choice}
        response = client.post(f"/label/{first}", data=data, headers=htmx_headers(token))
        assert response.status_code == 400, choice
        assert "malformed" in response.get_data(as_text=True)
    assert annotations(db) == []


def test_a_forged_image_id_is_not_found_and_nothing_written(as_user, db):
    client, token = as_user("ann")
    for image_id in ("999999", "99999999999999999999999"):
        for choice in (str(class_id(db, "1")), "skip", "unsure"):
            response = answer(client, token, image_id, choice)
            assert response.status_code == 404, (image_id, choice)
            assert "Nothing was saved" in response.get_data(as_text=True)
    assert annotations(db) == []


def test_answers_need_a_post(as_user):
    client, _token = as_user("ann")
    assert client.get("/label/1?choice=1").status_code == 405


# --- undo ---------------------------------------------------------------------------------


def test_undo_appends_a_retraction_and_shows_the_image_again(as_user, db):
    client, token = as_user("ann")
    first, second = card_images(card(client, token))
    html = answer(client, token, first, str(class_id(db, "5"))).get_data(as_text=True)
    [original] = annotations(db)
    response = client.post(
        "/label/undo", data={"annotation_id": undo_id(html)}, headers=htmx_headers(token)
    )
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert card_images(html) == [first, second]
    rows = annotations(db)
    assert len(rows) == 2 and rows[0] == original
    assert (rows[1]["kind"], rows[1]["retracts_id"]) == ("retract", original["id"])
    assert store.state_of(db, first)["status"] == "needs_votes"
    assert undo_id(html) == ""  # nothing left to undo

    # Relabel it: the new answer counts, the undone one does not.
    answer(client, token, first, str(class_id(db, "6")))
    assert store.state_of(db, first)["class_id"] == class_id(db, "6")


def test_undo_posted_twice_undoes_once(as_user, db):
    client, token = as_user("ann")
    first, _ = card_images(card(client, token))
    html = answer(client, token, first, str(class_id(db, "1"))).get_data(as_text=True)
    second = card_images(html)[0]
    html = answer(client, token, second, str(class_id(db, "2"))).get_data(as_text=True)
    undo = {"annotation_id": undo_id(html)}
    assert client.post("/label/undo", data=undo, headers=htmx_headers(token)).status_code == 200
    assert client.post("/label/undo", data=undo, headers=htmx_headers(token)).status_code == 200
    assert len(annotations(db)) == 3  # two answers, one retraction
    assert store.state_of(db, first)["status"] == "agreed"
    assert store.state_of(db, second)["status"] == "needs_votes"


def test_undo_of_someone_elses_answer_is_refused_and_writes_nothing(as_user, db):
    ann, ann_token = as_user("ann")
    bob, bob_token = as_user("bob")
    first, _ = card_images(card(ann, ann_token))
    html = answer(ann, ann_token, first, str(class_id(db, "1"))).get_data(as_text=True)
    response = bob.post(
        "/label/undo", data={"annotation_id": undo_id(html)}, headers=htmx_headers(bob_token)
    )
    assert response.status_code == 400
    assert "Cannot undo" in response.get_data(as_text=True)
    assert len(annotations(db)) == 1
    assert store.state_of(db, first)["status"] == "agreed"


def test_undo_with_a_malformed_or_unknown_id_is_refused(as_user, db):
    client, token = as_user("ann")
    for value in (None, "", "x", "²", "-1", "0", "12345", "99999999999999999999999"):
        data = {} if value is None else {"annotation_id": value}
        response = client.post("/label/undo", data=data, headers=htmx_headers(token))
        assert response.status_code == 400, value
    assert annotations(db) == []


# --- several votes per image over HTTP ---------------------------------------------------


def test_with_two_votes_per_image_two_annotators_see_the_same_image(tmp_path, image_folder):
    created, _ = init_project(tmp_path / "double", image_folder, CLASSES, votes_per_image=2)
    for name in ("ann", "bob"):
        add_user(created, name, "annotator", f"{name}-password")
    app = create_app(created.root, {"TESTING": True})
    ann, bob = app.test_client(), app.test_client()
    ann_token, bob_token = login(ann, "ann", "ann-password"), login(bob, "bob", "bob-password")
    first, _ = card_images(card(ann, ann_token))
    assert card_images(card(bob, bob_token))[0] == first
    html = answer(ann, ann_token, first, "1").get_data(as_text=True)
    seen = set(card_images(html))
    for _ in range(10):
        html = answer(ann, ann_token, card_images(html)[0], "1").get_data(as_text=True)
        seen.update(card_images(html))
    assert first not in seen


# --- running out of images ----------------------------------------------------------------


@pytest.fixture
def small_app(tmp_path, digits):
    folder = tmp_path / "three"
    write_digits(folder, digits, 3)
    created, _ = init_project(tmp_path / "small", folder, CLASSES)
    for name in ("ann", "bob"):
        add_user(created, name, "annotator", f"{name}-password")
    return create_app(created.root, {"TESTING": True})


def test_the_card_says_when_others_hold_the_rest_and_when_all_is_done(small_app):
    ann, bob = small_app.test_client(), small_app.test_client()
    ann_token, bob_token = login(ann, "ann", "ann-password"), login(bob, "bob", "bob-password")
    ann_images = card_images(card(ann, ann_token))
    [bob_image] = card_images(card(bob, bob_token))
    assert bob_image not in ann_images

    html = answer(ann, ann_token, ann_images[0], "1").get_data(as_text=True)
    html = answer(ann, ann_token, card_images(html)[0], "1").get_data(as_text=True)
    assert card_images(html) == []
    assert "held by other annotators" in html
    assert counts(html) == (2, 1)

    html = answer(bob, bob_token, bob_image, "2").get_data(as_text=True)
    assert card_images(html) == []
    assert "Everything is labeled" in html
    assert counts(card(ann, ann_token)) == (2, 0)


# --- images -------------------------------------------------------------------------------


def test_images_are_served_by_id_from_a_resized_copy_cached_on_disk(project, as_user, db):
    client, token = as_user("ann")
    first, _ = card_images(card(client, token))
    status, mimetype, cache_control, shown = fetch(client, f"/images/{first}")
    assert (status, mimetype) == (200, "image/jpeg")
    assert "private" in cache_control
    assert Image.open(io.BytesIO(shown)).format == "JPEG"
    cached = list(project.cache_dir.rglob(f"{first}.jpg"))
    assert len(cached) == 1 and cached[0].is_relative_to(project.cache_dir / "display")

    # Later requests are served from the cache: the original is no longer read.
    original = Path(store.get_image(db, first)["path"])
    original.rename(original.with_suffix(".moved"))
    assert fetch(client, f"/images/{first}")[::3] == (200, shown)


def test_thumbnails_are_a_separate_smaller_copy(project, as_user, db):
    client, _token = as_user("ann")
    image_id = next(iter(db.query("SELECT id FROM images ORDER BY id")))["id"]
    status, _mimetype, _cache, thumb = fetch(client, f"/images/{image_id}?size=thumb")
    assert status == 200
    assert list((project.cache_dir / "thumb").rglob(f"{image_id}.jpg"))
    assert max(Image.open(io.BytesIO(thumb)).size) <= 160


def test_an_unknown_image_id_is_not_found(as_user):
    client, _token = as_user("ann")
    for path in ("/images/999999", "/images/0", "/images/99999999999999999999999"):
        assert client.get(path).status_code == 404, path


def test_a_size_that_is_not_one_of_ours_is_rejected(project, as_user, db):
    client, _token = as_user("ann")
    image_id = next(iter(db.query("SELECT id FROM images ORDER BY id")))["id"]
    before = sorted(p for p in project.root.rglob("*") if p.is_file())
    for size in ("../../x", "/etc/passwd", "display/../../secret", "huge", ""):
        response = client.get(f"/images/{image_id}", query_string={"size": size})
        assert response.status_code == 400, size
    assert sorted(p for p in project.root.rglob("*") if p.is_file()) == before


def test_images_are_not_served_by_path(as_user, image_folder):
    client, _token = as_user("ann")
    some_file = next(image_folder.iterdir())
    for path in (f"/images/{some_file}", f"/images/{some_file.name}", "/images/../activelabel.db"):
        assert client.get(path).status_code == 404
