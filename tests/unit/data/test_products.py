"""Data products through the SDK: publish, discover (metadata only), request, grant, read, revoke."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

from selfserve.client import Client
from selfserve.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from tests.support import Platform, upload_table

SECRET = "churn-private-4411"


@dataclass
class World:
    platform: Platform
    owner: Client  # owns churn
    engineer: Client  # engineer in churn
    consumer: Client  # owns marketing, no role in churn
    tmp: Path


@pytest.fixture
def world(platform: Platform, tmp_path: Path) -> World:
    admin = platform.admin()
    owner = platform.user("olga", admin_client=admin)
    engineer = platform.user("eric", admin_client=admin)
    consumer = platform.user("carl", admin_client=admin)
    owner.projects.create("churn")
    owner.members.add("churn", "eric", "engineer")
    consumer.projects.create("marketing")
    upload_table(owner, "churn", "features", pa.table({"customer": ["a", "b"], "score": [0.1, 0.9]}), tmp_path)
    upload_table(owner, "churn", "private", pa.table({"note": [SECRET]}), tmp_path)
    upload_table(
        consumer, "marketing", "leads", pa.table({"customer": ["a", "b"], "channel": ["web", "mail"]}), tmp_path
    )
    return World(platform, owner, engineer, consumer, tmp_path)


def publish(w: World, **kwargs: object) -> None:
    w.engineer.products.publish(
        "churn",
        "features",
        description="churn scores per customer",
        tags=["Churn", "ML"],
        **kwargs,  # type: ignore[arg-type]
    )


def test_owner_and_engineer_publish_viewer_cannot(world: World) -> None:
    product = world.engineer.products.publish("churn", "features", description="scores", tags=["ML", " churn "])
    assert (product.project, product.dataset, product.owner) == ("churn", "features", "eric")
    assert product.tags == ["churn", "ml"] and product.freshness == "no-sla"
    assert world.owner.datasets.get("churn", "features").published
    again = world.owner.products.publish("churn", "features", description="scores v2", sla_freshness="1d")
    assert again.description == "scores v2" and again.sla_freshness_seconds == 86400

    viewer = world.platform.user("vera")
    world.owner.members.add("churn", "vera", "viewer")
    with pytest.raises(PermissionDenied):
        viewer.products.publish("churn", "private")
    with pytest.raises(NotFound):
        world.consumer.products.publish("churn", "private")
    with pytest.raises(NotFound):
        world.owner.products.publish("churn", "nope")
    with pytest.raises(InvalidInput, match="duration"):
        world.owner.products.publish("churn", "features", sla_freshness="soon")


def test_another_projects_user_finds_the_metadata_and_no_data(world: World) -> None:
    publish(world)
    [found] = world.consumer.products.search("churn")
    assert (found.project, found.dataset, found.description) == ("churn", "features", "churn scores per customer")
    assert found.access is None
    assert set(found.model_dump()) == {
        "project",
        "dataset",
        "description",
        "tags",
        "owner",
        "sla_freshness_seconds",
        "last_updated",
        "freshness",
        "published_at",
        "access",
    }
    assert [p.dataset for p in world.consumer.products.search(tag="ml")] == ["features"]
    assert [p.dataset for p in world.consumer.products.search("scores per")] == ["features"]
    assert world.consumer.products.search("private") == []  # not published, not found
    assert world.consumer.products.search(tag="nothing") == []
    # Metadata only: the data, and the project itself, stay invisible.
    with pytest.raises(NotFound):
        world.consumer.datasets.preview("churn", "features")
    with pytest.raises(NotFound):
        world.consumer.projects.get("churn")
    with pytest.raises(InvalidInput, match="unknown table"):
        world.consumer.datasets.query("marketing", "SELECT * FROM churn.features")


def test_request_grant_read_revoke(world: World) -> None:
    publish(world)
    c, o = world.consumer, world.owner
    access = c.products.request("churn/features", for_project="marketing", reason="campaign targeting")
    assert (access.product, access.consumer, access.status, access.requested_by) == (
        "churn/features",
        "marketing",
        "requested",
        "carl",
    )
    assert c.products.search("churn")[0].access == "requested"
    with pytest.raises(Conflict):
        c.products.request("churn/features", for_project="marketing")
    with pytest.raises(InvalidInput, match="unknown table"):  # not before the grant
        c.datasets.query("marketing", "SELECT * FROM churn.features")

    [seen] = o.products.requests("churn")
    assert (seen.id, seen.reason, seen.status) == (access.id, "campaign targeting", "requested")
    assert o.products.requests("churn", status="granted") == []
    with pytest.raises(PermissionDenied):  # engineers publish, owners grant
        world.engineer.products.grant("churn", access.id)

    granted = o.products.grant("churn", access.id)
    assert (granted.status, granted.decided_by) == ("granted", "olga")
    assert c.products.search("churn")[0].access == "granted"
    joined = c.datasets.query(
        "marketing",
        "SELECT l.customer, l.channel, f.score FROM leads l JOIN churn.features f USING (customer) ORDER BY 1",
    )
    assert joined.rows == [["a", "web", 0.1], ["b", "mail", 0.9]]

    # Read-only: the grant opens nothing else of churn.
    with pytest.raises(InvalidInput, match="unknown table"):
        c.datasets.query("marketing", "SELECT * FROM churn.private")
    with pytest.raises(NotFound):
        upload_table(c, "churn", "features", pa.table({"customer": ["x"], "score": [0.0]}), world.tmp)
    with pytest.raises(NotFound):
        c.datasets.delete("churn", "features")
    with pytest.raises(NotFound):
        c.datasets.history("churn", "features")
    # A transform in the consumer's project reads the product and writes only there.
    job = c.datasets.transform("marketing", "features", sql="SELECT * FROM churn.features WHERE score > 0.5")
    assert job.result and job.result["inputs"] == [{"project": "churn", "dataset": "features", "version": 0}]
    assert c.datasets.get("marketing", "features").rows == 1
    assert o.datasets.get("churn", "features").current_version == 0
    assert o.datasets.get("churn", "features").rows == 2

    revoked = o.products.revoke("churn", access.id)
    assert revoked.status == "revoked"
    with pytest.raises(InvalidInput, match="unknown table"):
        c.datasets.query("marketing", "SELECT * FROM churn.features")
    assert c.products.search("churn")[0].access is None
    with pytest.raises(Conflict):
        o.products.revoke("churn", access.id)
    # A revoked project may ask again, and be denied.
    again = c.products.request("churn/features", for_project="marketing")
    assert again.id == access.id and again.status == "requested"
    assert o.products.deny("churn", access.id).status == "denied"
    with pytest.raises(InvalidInput, match="unknown table"):
        c.datasets.query("marketing", "SELECT * FROM churn.features")


def test_the_grant_follows_the_products_latest_version(world: World) -> None:
    publish(world)
    access = world.consumer.products.request("churn/features", for_project="marketing")
    world.owner.products.grant("churn", access.id)
    upload_table(world.owner, "churn", "features", pa.table({"customer": ["c"], "score": [0.5]}), world.tmp)
    count = world.consumer.datasets.query("marketing", "SELECT count(*) FROM churn.features")
    assert count.rows == [[3]]
    world.owner.products.unpublish("churn", "features")
    with pytest.raises(InvalidInput, match="unknown table"):
        world.consumer.datasets.query("marketing", "SELECT count(*) FROM churn.features")


def test_grants_are_for_the_producing_projects_owner_only(world: World) -> None:
    publish(world)
    access = world.consumer.products.request("churn/features", for_project="marketing")
    outsider = world.platform.user("otto")
    with pytest.raises(NotFound):
        outsider.products.grant("churn", access.id)
    with pytest.raises(NotFound):
        outsider.products.requests("churn")
    with pytest.raises(NotFound):  # the consumer may not grant itself either
        world.consumer.products.grant("churn", access.id)
    with pytest.raises(NotFound):  # nor through its own project
        world.consumer.products.grant("marketing", access.id)
    with pytest.raises(NotFound):
        world.owner.products.grant("churn", 999_999)
    assert world.owner.products.requests("churn")[0].status == "requested"


def test_bad_requests(world: World) -> None:
    publish(world)
    with pytest.raises(NotFound, match="no published product"):
        world.consumer.products.request("churn/private", for_project="marketing")
    with pytest.raises(NotFound):
        world.consumer.products.request("churn/features", for_project="churn")  # not a member of churn
    with pytest.raises(InvalidInput, match="already belongs"):
        world.owner.products.request("churn/features", for_project="churn")
    with pytest.raises(InvalidInput):
        world.consumer.products.request("churn/features", for_project="Bad Name")


def test_freshness_against_the_sla(world: World) -> None:
    publish(world, sla_freshness="1h")
    assert world.consumer.products.search("churn")[0].freshness == "fresh"
    publish(world, sla_freshness="3s")
    time.sleep(3.2)
    stale = world.consumer.products.search("churn")[0]
    assert stale.freshness == "stale"
    upload_table(world.owner, "churn", "features", pa.table({"customer": ["c"], "score": [0.5]}), world.tmp)
    fresh = world.consumer.products.search("churn")[0]
    assert fresh.freshness == "fresh" and fresh.last_updated and stale.last_updated
    assert fresh.last_updated > stale.last_updated
