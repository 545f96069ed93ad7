"""Route and key caches: a lookup that started before a change never caches its stale answer after it."""

from __future__ import annotations

from maas.auth.cache import KeyCache
from maas.auth.roles import Principal, Role
from maas.serving.caches import RouteCache
from maas.serving.runtime import ModelIdentity

V1 = ModelIdentity(model_version_id="mv_1", model_name="m", version=1)
V2 = ModelIdentity(model_version_id="mv_2", model_name="m", version=2)


def test_a_route_looked_up_before_a_switch_is_not_cached_after_it() -> None:
    routes = RouteCache(ttl_seconds=60)
    started_at = routes.generation("ten_a")  # a lookup starts and reads version 1 from the database
    routes.invalidate_tenant("ten_a")  # meanwhile the endpoint is switched to version 2
    routes.put("ten_a", "ep", V1, started_at)  # the old lookup finishes
    assert routes.get("ten_a", "ep") is None  # so the next request looks up again, and sees version 2
    routes.put("ten_a", "ep", V2, routes.generation("ten_a"))
    assert routes.get("ten_a", "ep") == V2


def test_routes_of_other_tenants_are_not_dropped_by_a_switch() -> None:
    routes = RouteCache(ttl_seconds=60)
    routes.put("ten_b", "ep", V1, routes.generation("ten_b"))
    routes.invalidate_tenant("ten_a")
    assert routes.get("ten_b", "ep") == V1


def test_routes_expire_after_their_ttl() -> None:
    now = [0.0]
    routes = RouteCache(ttl_seconds=2, clock=lambda: now[0])
    routes.put("ten_a", "ep", V1, 0)
    now[0] = 1.9
    assert routes.get("ten_a", "ep") == V1
    now[0] = 2.0
    assert routes.get("ten_a", "ep") is None


def test_a_key_resolved_before_its_revocation_is_not_cached_after_it() -> None:
    keys = KeyCache(ttl_seconds=60)
    principal = Principal(role=Role.CONSUMER, key_id="key_1", tenant_id="ten_a")
    started_at = keys.generation
    keys.invalidate_key("key_1")
    keys.store("maas_sk_secret", principal, started_at)
    assert keys.peek("maas_sk_secret") is None
    keys.store("maas_sk_secret", None, keys.generation)  # the fresh lookup: revoked
    assert keys.peek("maas_sk_secret") == (None,)
