"""The code flow end to end: real OP (node oidc-provider), real Redis, echo upstream, real sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from yarl import URL

from tests.support.op import browser_login
from tests.support.records import open_record

HTML = {"Accept": "text/html"}


def upstream_saw(body: str) -> dict[str, Any]:
    data = json.loads(body)
    data["h"] = {}
    for name, value in data["headers"]:
        data["h"].setdefault(name.lower(), []).append(value)
    return data


def is_callback(url: URL) -> bool:
    return url.path == "/oauth2/callback"


@pytest.mark.parametrize("client_id", ["gateway", "gateway-post", "gateway-public", "gateway-hs", "gateway-es"])
async def test_full_login_reaches_deep_link_with_identity(gateway_factory: Any, op: Any, client_id: str) -> None:
    algs = {"gateway-hs": ["HS256"], "gateway-es": ["ES256"]}.get(client_id, ["RS256"])
    method = {"gateway-post": "client_secret_post", "gateway-public": "none"}.get(client_id, "client_secret_basic")
    gw = await gateway_factory(client_id, oidc={"id_token_signing_algs": algs, "token_endpoint_auth_method": method})
    async with gw.browser() as browser:
        result = await browser_login(browser, f"{gw.url}/app/deep?x=1&y=two")
        assert result.status == 200, result.body
        seen = upstream_saw(result.body)
        assert seen["path"] == "/app/deep" and seen["query_string"] == "x=1&y=two"
        assert seen["h"]["x-auth-request-user"] == ["alice"]
        assert seen["h"]["x-auth-request-email"] == ["alice@example.com"]
        assert seen["h"]["x-auth-request-preferred-username"] == ["alice"]
        assert seen["h"]["x-auth-request-groups"] == ["admins,staff"]
        [authz] = seen["h"]["authorization"]
        assert authz.startswith("Bearer ") and len(authz) > 20
        assert "_oidc_gateway" not in " ".join(seen["h"].get("cookie", []))
        # The authorization request carried state, nonce, PKCE S256 and prompt=consent for offline_access.
        authorize = next(URL(u) for u in result.visited if URL(u).path == "/auth")
        q = authorize.query
        assert q["client_id"] == client_id and q["response_type"] == "code"
        assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
        assert len(q["state"]) >= 32 and len(q["nonce"]) >= 32 and q["prompt"] == "consent"
        assert q["redirect_uri"] == f"{gw.url}/oauth2/callback"


async def test_session_cookie_flags_and_redis_record(gateway_factory: Any, redis_client: Any) -> None:
    gw = await gateway_factory()
    async with gw.browser() as browser:
        result = await browser_login(browser, f"{gw.url}/", stop_at=lambda u: u.path == "/")
        assert result.status == 302 and result.url.path == "/oauth2/callback"
        set_cookie = [v for v in result.headers.getall("Set-Cookie") if v.startswith("_oidc_gateway=")]
        assert len(set_cookie) == 1
        attrs = set_cookie[0].lower()
        assert "httponly" in attrs and "samesite=lax" in attrs and "path=/" in attrs and "secure" not in attrs
        sid = set_cookie[0].split(";")[0].split("=", 1)[1].rpartition(".")[0]
        keys = [k.decode() for k in redis_client.scan_iter(match=f"{gw.settings.session.key_prefix}s:*")]
        assert len(keys) == 1 and sid not in keys[0]  # stored under a hash of the id, never the id itself
        ttl = redis_client.pttl(keys[0])
        assert 0 < ttl <= gw.settings.session.idle_timeout * 1000
        raw = redis_client.get(keys[0])
        assert b"alice" not in raw  # encrypted at rest
        assert open_record(gw.settings, keys[0], raw)["sub"] == "alice"


async def test_unauthenticated_api_request_gets_401_json(gateway_factory: Any) -> None:
    gw = await gateway_factory()
    resp = await gw.client.get("/api/x", headers={"Accept": "application/json"})
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await resp.json())["error"] == "unauthenticated"
    post = await gw.client.post("/form", data=b"a=1", headers=HTML)
    assert post.status == 401  # not a navigation: no redirect for POST


async def test_browser_navigation_redirects_to_op(gateway_factory: Any, op: Any) -> None:
    gw = await gateway_factory()
    resp = await gw.client.get("/x?y=1", headers=HTML, allow_redirects=False)
    assert resp.status == 302
    location = URL(resp.headers["Location"])
    assert str(location).startswith(op.issuer) and location.query["state"]
    assert "_oidc_gateway_login=" in resp.headers["Set-Cookie"]


async def test_state_replay_is_rejected(gateway_factory: Any) -> None:
    gw = await gateway_factory()
    async with gw.browser() as browser:
        stop = await browser_login(browser, f"{gw.url}/x", stop_at=is_callback)
        callback = URL(stop.headers["Location"])
        first = await browser.get(callback, headers=HTML, allow_redirects=False)
        assert first.status == 302 and first.headers["Location"] == "/x"
        replay = await browser.get(callback, headers=HTML, allow_redirects=False)
        assert replay.status == 400
        assert "text/html" in replay.headers["Content-Type"] and "already used" in await replay.text()


async def test_unknown_state_and_missing_state_rejected(gateway_factory: Any) -> None:
    gw = await gateway_factory()
    resp = await gw.client.get("/oauth2/callback?code=abc&state=forged", headers={"Accept": "application/json"})
    assert resp.status == 400 and (await resp.json())["error"] == "login_expired"
    resp = await gw.client.get("/oauth2/callback?code=abc", headers=HTML)
    assert resp.status == 400 and "<html" in await resp.text()


async def test_callback_in_another_browser_is_rejected(gateway_factory: Any) -> None:
    gw = await gateway_factory()
    async with gw.browser() as victim, gw.browser() as attacker:
        stop = await browser_login(victim, f"{gw.url}/x", stop_at=is_callback)
        callback = URL(stop.headers["Location"])
        resp = await attacker.get(callback, headers={"Accept": "application/json"}, allow_redirects=False)
        assert resp.status == 400 and "another browser" in (await resp.json())["error_description"]
        assert "_oidc_gateway=" not in resp.headers.get("Set-Cookie", "")


async def test_code_replay_is_rejected_by_op_and_gateway(gateway_factory: Any) -> None:
    gw = await gateway_factory()
    async with gw.browser() as browser:
        stop = await browser_login(browser, f"{gw.url}/x", stop_at=is_callback)
        code = URL(stop.headers["Location"]).query["code"]
        ok = await browser.get(stop.headers["Location"], headers=HTML, allow_redirects=False)
        assert ok.status == 302
        # A new login state carrying the already-redeemed code: the OP refuses it, the gateway says 400.
        stop2 = await browser_login(browser, f"{gw.url}/oauth2/start?rd=/y", stop_at=is_callback)
        forged = URL(stop2.headers["Location"]).update_query(code=code)
        resp = await browser.get(forged, headers=HTML, allow_redirects=False)
        assert resp.status == 400


async def test_consent_denied_shows_error_page_without_loop(gateway_factory: Any) -> None:
    gw = await gateway_factory()
    async with gw.browser() as browser:
        result = await browser_login(browser, f"{gw.url}/x", consent=False)
        assert result.status == 400 and result.url.path == "/oauth2/callback"
        assert "denied" in result.body and "Request ID" in result.body


@pytest.mark.parametrize("rd", ["//evil.example", "https://evil.example/", "/\\evil.example", "/\r\nX:y"])
async def test_open_redirect_rd_lands_on_root(gateway_factory: Any, rd: str) -> None:
    gw = await gateway_factory()
    async with gw.browser() as browser:
        result = await browser_login(browser, URL(f"{gw.url}/oauth2/start").with_query(rd=rd),
                                     stop_at=lambda u: u.path == "/" or u.host != "127.0.0.1")
        assert result.status == 302 and result.headers["Location"] == "/"


async def test_rd_same_origin_path_kept(gateway_factory: Any) -> None:
    gw = await gateway_factory()
    async with gw.browser() as browser:
        result = await browser_login(browser, URL(f"{gw.url}/oauth2/start").with_query(rd="/back?a=1"))
        assert result.status == 200 and upstream_saw(result.body)["query_string"] == "a=1"


async def test_spoofed_identity_headers_never_reach_upstream(gateway_factory: Any) -> None:
    gw = await gateway_factory()
    async with gw.browser() as browser:
        await browser_login(browser, f"{gw.url}/")
        resp = await browser.get(f"{gw.url}/again", headers={
            "X-Auth-Request-User": "admin", "x-auth-request-email": "root@evil", "X-Auth-Request-Groups": "admins",
            "X-Auth-Request-Anything": "1", "Authorization": "Bearer forged",
        })
        seen = upstream_saw(await resp.text())
        assert seen["h"]["x-auth-request-user"] == ["alice"]
        assert seen["h"]["x-auth-request-email"] == ["alice@example.com"]
        assert "x-auth-request-anything" not in seen["h"]
        assert seen["h"]["authorization"] != ["Bearer forged"] and len(seen["h"]["authorization"]) == 1


async def test_tampered_or_unknown_cookie_is_not_logged_in(gateway_factory: Any) -> None:
    gw = await gateway_factory()
    async with gw.browser() as browser:
        await browser_login(browser, f"{gw.url}/")
        value = next(c.value for c in browser.cookie_jar if c.key == "_oidc_gateway")
        ident, _, mac = value.rpartition(".")
        for forged in (ident[:-1] + ("A" if ident[-1] != "A" else "B") + "." + mac, ident, "x.y", value + "A"):
            resp = await gw.client.get("/x", headers={"Cookie": f"_oidc_gateway={forged}",
                                                      "Accept": "application/json"})
            assert resp.status == 401, forged
        resp = await gw.client.get("/x", headers={"Cookie": f"_oidc_gateway={value}", "Accept": "application/json"})
        assert resp.status == 200


async def test_new_session_id_at_every_login(gateway_factory: Any) -> None:
    gw = await gateway_factory()
    async with gw.browser() as browser:
        await browser_login(browser, f"{gw.url}/")
        first = next(c.value for c in browser.cookie_jar if c.key == "_oidc_gateway")
        await browser_login(browser, f"{gw.url}/oauth2/start?rd=/", stop_at=lambda u: u.path == "/")
        second = next(c.value for c in browser.cookie_jar if c.key == "_oidc_gateway")
        assert first != second
        old = await gw.client.get("/x", headers={"Cookie": f"_oidc_gateway={first}", "Accept": "application/json"})
        assert old.status == 401  # the previous session was deleted


async def test_userinfo_endpoint(gateway_factory: Any) -> None:
    gw = await gateway_factory()
    assert (await gw.client.get("/oauth2/userinfo")).status == 401
    async with gw.browser() as browser:
        await browser_login(browser, f"{gw.url}/")
        resp = await browser.get(f"{gw.url}/oauth2/userinfo")
        data = await resp.json()
        assert resp.status == 200 and data["sub"] == "alice" and data["email"] == "alice@example.com"
        assert "access_token" not in json.dumps(data) and "nonce" not in data


async def test_sign_out_ends_session_everywhere_and_reaches_op(gateway_factory: Any, op: Any) -> None:
    gw = await gateway_factory()
    async with gw.browser() as browser:
        await browser_login(browser, f"{gw.url}/")
        cookie = next(c.value for c in browser.cookie_jar if c.key == "_oidc_gateway")
        resp = await browser.get(f"{gw.url}/oauth2/sign_out?rd=/bye", allow_redirects=False)
        assert resp.status == 302
        location = URL(resp.headers["Location"])
        assert str(location).startswith(op.issuer) and location.query["id_token_hint"]
        assert location.query["post_logout_redirect_uri"] == f"{gw.url}/bye" and location.query["state"]
        assert "_oidc_gateway=" in resp.headers["Set-Cookie"] and "Max-Age=0" in resp.headers["Set-Cookie"]
        copied = await gw.client.get("/x", headers={"Cookie": f"_oidc_gateway={cookie}", "Accept": "application/json"})
        assert copied.status == 401


async def test_memory_store_login_works(gateway_factory: Any) -> None:
    gw = await gateway_factory(session={"store": "memory"})
    async with gw.browser() as browser:
        result = await browser_login(browser, f"{gw.url}/m")
        assert result.status == 200 and upstream_saw(result.body)["path"] == "/m"


async def test_form_post_response_mode(gateway_factory: Any) -> None:
    gw = await gateway_factory(oidc={"response_mode": "form_post"})
    async with gw.browser() as browser:
        result = await browser_login(browser, f"{gw.url}/fp?z=1")
        assert result.status == 200, result.body
        assert upstream_saw(result.body)["query_string"] == "z=1"
        assert any("/oauth2/callback" in u for u in result.visited)


async def test_public_paths_need_no_login(gateway_factory: Any) -> None:
    gw = await gateway_factory(access={"public_paths": ["^/public/"]})
    resp = await gw.client.get("/public/x", headers={"X-Auth-Request-User": "spoof"})
    seen = upstream_saw(await resp.text())
    assert resp.status == 200 and "x-auth-request-user" not in seen["h"]
    assert (await gw.client.get("/publicx", headers={"Accept": "application/json"})).status == 401


async def test_allowed_groups_and_domains_enforced(gateway_factory: Any) -> None:
    gw = await gateway_factory(access={"allowed_groups": ["admins"]})
    async with gw.browser() as browser:
        assert (await browser_login(browser, f"{gw.url}/", "bob", "bob-password")).status == 403
    async with gw.browser() as browser:
        assert (await browser_login(browser, f"{gw.url}/", "alice", "alice-password")).status == 200
    gw2 = await gateway_factory(access={"allowed_email_domains": ["example.com"]})
    async with gw2.browser() as browser:
        result = await browser_login(browser, f"{gw2.url}/", "bob", "bob-password")
        assert result.status == 403 and "Access denied" in result.body


async def test_health_ready_metrics(gateway_factory: Any) -> None:
    gw = await gateway_factory()
    assert (await gw.client.get("/healthz")).status == 200
    ready = await gw.client.get("/readyz")
    assert ready.status == 200, await ready.text()
    metrics = await (await gw.client.get("/metrics")).text()
    assert "oidc_gateway_http_requests_total" in metrics
    assert (await gw.client.get("/oauth2/nope")).status == 404


@pytest.mark.parametrize("response_type", ["code id_token", "id_token"])
async def test_hybrid_and_implicit_logins_with_real_op(gateway_factory: Any, response_type: str) -> None:
    gw = await gateway_factory(oidc={"response_type": response_type, "response_mode": "form_post",
                                     "scopes": ["openid", "profile", "email"]})
    async with gw.browser() as browser:
        result = await browser_login(browser, f"{gw.url}/hy?b=2")
        assert result.status == 200, result.body
        authorize = next(URL(u) for u in result.visited if URL(u).path == "/auth")
        assert authorize.query["response_type"] == response_type
        assert authorize.query["response_mode"] == "form_post"
        assert ("code_challenge" in authorize.query) == ("code" in response_type)
        seen = upstream_saw(result.body)
        assert seen["query_string"] == "b=2" and seen["h"]["x-auth-request-user"] == ["alice"]
        # Implicit yields an identity only: no access token to pass upstream.
        assert ("authorization" in seen["h"]) == (response_type == "code id_token")
