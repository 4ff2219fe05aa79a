from conftest import card_images, htmx_headers


def test_annotator_labels_one_image(as_user):
    client, token = as_user("ann")
    first, _prefetched = card_images(client.get("/label").get_data(as_text=True))
    response = client.post(f"/label/{first}", data={"choice": "1"}, headers=htmx_headers(token))
    assert response.status_code == 200
    assert first not in card_images(response.get_data(as_text=True))
