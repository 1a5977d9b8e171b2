"""Items, locations and markets over the native API."""

from __future__ import annotations

from urllib.parse import quote

from tests.support import Tenant, assert_problem

FULL_ITEM = {
    "title": "Trail Boot",
    "variant_title": "Brown / 42 / Wide",
    "upc": "012345678905",
    "product_id": "prod-77",
    "variant_id": "var-42w",
    "size": "42",
    "width": "W",
    "part_number": "TB-42-W",
    "generic_part_number": "TB",
    "pricing": [
        {"currency": "USD", "price_breaks": [
            {"quantity": 1, "price": "129.90"},
            {"quantity": 10, "price": "100"},
            {"quantity": 100, "price": 99.5},
        ]},
        {"currency": "EUR", "price_breaks": [{"quantity": 1, "price": "0.000001"}]},
    ],
    "attributes": {"description": "Waterproof", "minimumOrderQuantity": 1,
                   "lifeCycle": "Active", "nested": {"htsCode": "6403.99"}, "tags": ["a", "b"]},
}
EXPECTED_PRICING = [
    {"currency": "USD", "price_breaks": [
        {"quantity": 1, "price": "129.9"},
        {"quantity": 10, "price": "100"},
        {"quantity": 100, "price": "99.5"},
    ]},
    {"currency": "EUR", "price_breaks": [{"quantity": 1, "price": "0.000001"}]},
]


def test_put_item_with_every_field_round_trips(tenant: Tenant) -> None:
    r = tenant.put("/v1/items/TB-42W", json=FULL_ITEM)
    assert r.status_code == 200, r.text
    item = r.json()
    assert item["sku_code"] == "TB-42W"
    assert item["id"]
    for field in ("title", "variant_title", "upc", "product_id", "variant_id", "size", "width",
                  "part_number", "generic_part_number", "attributes"):
        assert item[field] == FULL_ITEM[field], field
    assert item["pricing"] == EXPECTED_PRICING
    assert item["created_at"].endswith("Z")
    assert item["updated_at"].endswith("Z")

    got = tenant.get("/v1/items/TB-42W")
    assert got.status_code == 200
    assert got.json() == item


def test_put_item_again_updates_in_place(tenant: Tenant) -> None:
    first = tenant.put("/v1/items/SKU-U", json=FULL_ITEM).json()
    second = tenant.put("/v1/items/SKU-U", json={"title": "Renamed", "upc": "999"})
    assert second.status_code == 200, second.text
    item = second.json()
    assert item["id"] == first["id"]
    assert item["created_at"] == first["created_at"]
    assert item["updated_at"] >= first["updated_at"]
    assert item["title"] == "Renamed"
    assert item["upc"] == "999"
    # PUT replaces the representation: fields not sent are cleared
    assert item["size"] is None
    assert item["pricing"] == []
    assert item["attributes"] == {}
    assert tenant.get("/v1/items/SKU-U").json() == item
    assert len(tenant.get("/v1/items").json()["data"]) == 1


def test_list_items_by_each_identifier(tenant: Tenant) -> None:
    a = {"upc": "111", "product_id": "P1", "variant_id": "V1", "size": "40", "width": "N",
         "part_number": "PN-A", "generic_part_number": "G-1"}
    b = {"upc": "222", "product_id": "P1", "variant_id": "V2", "size": "41", "width": "N",
         "part_number": "PN-B", "generic_part_number": "G-1"}
    c = {"upc": "333", "product_id": "P2", "variant_id": "V3", "size": "40", "width": "W",
         "part_number": "PN-C", "generic_part_number": "G-2"}
    for sku, body in (("A", a), ("B", b), ("C", c)):
        assert tenant.put(f"/v1/items/{sku}", json=body).status_code == 200

    def skus(**params: str) -> list[str]:
        r = tenant.get("/v1/items", params=params)
        assert r.status_code == 200, r.text
        return [i["sku_code"] for i in r.json()["data"]]

    assert skus() == ["A", "B", "C"]
    assert skus(sku_code="B") == ["B"]
    assert skus(upc="333") == ["C"]
    assert skus(product_id="P1") == ["A", "B"]
    assert skus(product_id="P1", variant_id="V2") == ["B"]
    assert skus(variant_id="V3") == ["C"]
    assert skus(size="40") == ["A", "C"]
    assert skus(size="40", width="N") == ["A"]
    assert skus(width="W") == ["C"]
    assert skus(part_number="PN-A") == ["A"]
    assert skus(generic_part_number="G-1") == ["A", "B"]
    assert skus(upc="000") == []


def test_list_items_paginates_without_gaps(tenant: Tenant) -> None:
    codes = [f"P-{i:02d}" for i in range(7)]
    for code in codes:
        assert tenant.put(f"/v1/items/{code}", json={}).status_code == 200
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        body = tenant.get("/v1/items", params=params).json()
        assert len(body["data"]) <= 3
        seen += [i["sku_code"] for i in body["data"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == codes
    assert pages == 3


def test_get_unknown_item_is_404(tenant: Tenant) -> None:
    body = assert_problem(tenant.get("/v1/items/NOPE"), 404)
    assert "NOPE" in body["detail"]


def test_sku_codes_with_reserved_url_characters(tenant: Tenant) -> None:
    sku = "AB 12+ü?#&%"
    path = "/v1/items/" + quote(sku, safe="")
    r = tenant.put(path, json={"title": "odd"})
    assert r.status_code == 200, r.text
    assert r.json()["sku_code"] == sku
    assert tenant.get(path).json()["sku_code"] == sku
    listed = tenant.get("/v1/items", params={"sku_code": sku}).json()["data"]
    assert [i["sku_code"] for i in listed] == [sku]


def test_locations_put_get_list_and_rename(tenant: Tenant) -> None:
    r = tenant.put("/v1/locations/WH-1", json={"name": "Main warehouse"})
    assert r.status_code == 200, r.text
    loc = r.json()
    assert loc["code"] == "WH-1"
    assert loc["name"] == "Main warehouse"
    assert tenant.get("/v1/locations/WH-1").json() == loc
    assert tenant.put("/v1/locations/ST-2", json={}).json()["name"] is None

    renamed = tenant.put("/v1/locations/WH-1", json={"name": "Old warehouse"}).json()
    assert renamed["name"] == "Old warehouse"
    assert renamed["created_at"] == loc["created_at"]
    listed = tenant.get("/v1/locations").json()
    assert [x["code"] for x in listed["data"]] == ["WH-1", "ST-2"]
    assert listed["next_cursor"] is None
    assert_problem(tenant.get("/v1/locations/NOPE"), 404)


def test_markets_put_get_list_replace(seeded: Tenant) -> None:
    r = seeded.put("/v1/markets/NA", json={"name": "North America", "locations": ["L3", "L1"]})
    assert r.status_code == 200, r.text
    market = r.json()
    assert market["code"] == "NA"
    assert market["name"] == "North America"
    assert sorted(market["locations"]) == ["L1", "L3"]
    assert seeded.get("/v1/markets/NA").json() == market

    replaced = seeded.put("/v1/markets/NA", json={"locations": ["L2"]}).json()
    assert replaced["locations"] == ["L2"]
    assert replaced["created_at"] == market["created_at"]
    emptied = seeded.put("/v1/markets/NA", json={"locations": []}).json()
    assert emptied["locations"] == []
    # duplicates are collapsed
    assert seeded.put("/v1/markets/NA", json={"locations": ["L1", "L1"]}).json()[
        "locations"] == ["L1"]

    listed = seeded.get("/v1/markets").json()
    assert {m["code"]: sorted(m["locations"]) for m in listed["data"]} == {
        "EU": ["L1", "L2"], "NA": ["L1"]}
    assert_problem(seeded.get("/v1/markets/NOPE"), 404)


def test_market_with_unknown_location_is_422_and_changes_nothing(seeded: Tenant) -> None:
    body = assert_problem(seeded.put("/v1/markets/EU", json={"locations": ["L1", "L9"]}), 422)
    assert "L9" in body["detail"]
    assert sorted(seeded.get("/v1/markets/EU").json()["locations"]) == ["L1", "L2"]
    assert_problem(seeded.put("/v1/markets/NEW", json={"locations": ["NOPE"]}), 422)
    assert_problem(seeded.get("/v1/markets/NEW"), 404)
