"""The web app's server side, served in this process (its only ComfyUI server unreachable, so
no job runs): the page and static files with their security headers, signing in (an HttpOnly
cookie, the app header required, attempts limited), what a signed-in page may see (its own
jobs only), and recipe runs' sizes and refusals. The browser tests are
tests/integration/test_webapp.py."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from importlib import resources
from urllib.parse import quote

import httpx
import pytest

from comfyfn.gateway import create_app
from comfyfn.gateway.ui._pages import CSP, static_names
from comfyfn.gateway.ui._recipes import _within
from comfyfn.gateway.ui._session import COOKIE, SIGN_IN_RATE, UI_HEADER
from tests.support.gateway_proc import InProcess, settings_for

APP = {UI_HEADER: "1"}
_clients = itertools.count(2)


@pytest.fixture(scope="module")
def offline(tmp_path_factory) -> Iterator[InProcess]:
    settings = settings_for(tmp_path_factory.mktemp("webapp"), ["http://127.0.0.1:9"])
    with InProcess(settings) as gateway:
        yield gateway


def signed_in(gateway: InProcess, secret: str) -> httpx.Client:
    """A client that signed in with ``secret``, from an address of its own (sign-in attempts
    are counted per address: 127.0.0.2, 127.0.0.3, …)."""
    transport = httpx.HTTPTransport(local_address=f"127.0.0.{next(_clients)}")
    client = httpx.Client(base_url=gateway.url, transport=transport, timeout=30)
    answer = client.post("/ui/session", json={"key": secret}, headers=APP)
    assert answer.status_code == 200, answer.text
    return client


def test_the_page_and_its_files_carry_a_strict_csp(offline):
    page = httpx.get(f"{offline.url}/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CSP
    assert "script-src 'self';" in CSP and "unsafe-inline" not in CSP
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "<script" in page.text and "<script>" not in page.text  # modules by URL only
    assert " style=" not in page.text
    script = httpx.get(f"{offline.url}/ui/static/app.js")
    assert script.headers["content-type"].startswith("text/javascript")
    again = httpx.get(
        f"{offline.url}/ui/static/app.js", headers={"If-None-Match": script.headers["etag"]}
    )
    assert again.status_code == 304


def test_only_the_shipped_static_files_are_served(offline):
    for name in ("index.html", "..%2Fui%2F_api.py", "_api.py", "nope.js"):
        assert httpx.get(f"{offline.url}/ui/static/{name}").status_code == 404


def test_the_static_files_ship_as_package_data():
    """What the wheel ships: every file the page loads is package data of comfyfn.gateway.ui
    (hatch packs everything under src/comfyfn), found through importlib.resources."""
    names = static_names()
    root = resources.files("comfyfn.gateway.ui").joinpath("static")
    page = root.joinpath("index.html").read_text("utf-8")
    for name in ("app.js", "app.css", "icon.svg"):
        assert name in names and f"/ui/static/{name}" in page
    scripts = [n for n in names if n.endswith(".js")]
    for name in scripts:  # every module another one imports is there
        for line in root.joinpath(name).read_text("utf-8").splitlines():
            if line.startswith("import ") and " from " in line:
                imported = line.rsplit(" from ", 1)[1].strip(' ";').removeprefix("./")
                assert imported in names, f"{name} imports {imported}"


def test_signing_in_sets_an_httponly_strict_cookie_scoped_to_the_app(offline):
    secret = offline.key("cookie")
    client = signed_in(offline, secret)
    cookie = next(c for c in client.cookies.jar if c.name == COOKIE)
    assert cookie.path == "/ui"
    assert cookie.has_nonstandard_attr("HttpOnly")
    assert (cookie.get_nonstandard_attr("SameSite") or "").lower() == "strict"
    assert client.get("/ui/api/me").json()["name"].startswith("cookie-")
    assert client.delete("/ui/session", headers=APP).status_code == 200
    assert client.get("/ui/api/me").status_code == 401


def test_a_wrong_key_is_refused_and_sets_no_cookie(offline):
    client = httpx.Client(base_url=offline.url, timeout=30)
    answer = client.post("/ui/session", json={"key": "sk-wrong"}, headers=APP)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "invalid_api_key"
    assert COOKIE not in client.cookies
    assert client.get("/ui/api/me").status_code == 401


def test_unsafe_requests_need_the_app_header(offline):
    """A cross-site form cannot send the header, so it cannot act with the cookie."""
    client = signed_in(offline, offline.key("csrf"))
    refused = client.post("/ui/api/jobs", json={"workflow": "zimage-turbo", "params": {}})
    assert refused.status_code == 403
    assert UI_HEADER in refused.json()["error"]["message"]
    assert client.delete("/ui/session").status_code == 403
    assert httpx.post(f"{offline.url}/ui/session", json={"key": "x"}).status_code == 403


def test_sign_in_attempts_are_limited_per_address(offline):
    allowed = int(SIGN_IN_RATE.split("/")[0])
    transport = httpx.HTTPTransport(local_address="127.0.0.250")
    with httpx.Client(base_url=offline.url, transport=transport, timeout=30) as client:
        answers = [
            client.post("/ui/session", json={"key": f"sk-guess-{n}"}, headers=APP).status_code
            for n in range(allowed + 1)
        ]
    assert answers == [401] * allowed + [429]


def test_history_lists_only_the_signed_in_keys_jobs_newest_first(offline):
    mine, theirs = offline.key("mine"), offline.key("theirs")
    store = offline.store
    mine_id, theirs_id = store.find_key(mine).id, store.find_key(theirs).id
    made = [
        store.create_job(key_id=mine_id, workflow="zimage-turbo", params={"prompt": f"p{n}"})[0]
        for n in range(3)
    ]
    store.create_job(key_id=theirs_id, workflow="zimage-turbo", params={"prompt": "theirs"})
    client = signed_in(offline, mine)
    page = client.get("/ui/api/jobs").json()
    assert [job["id"] for job in page["data"]] == [job.id for job in reversed(made)]
    assert page["next"] is None
    first = client.get("/ui/api/jobs", params={"limit": 2}).json()
    assert len(first["data"]) == 2 and first["next"] == made[1].created_at
    rest = client.get("/ui/api/jobs", params={"limit": 2, "before": first["next"]}).json()
    assert [job["id"] for job in rest["data"]] == [made[0].id]
    assert client.get("/ui/api/jobs", params={"state": "succeeded"}).json()["data"] == []
    bad = client.get("/ui/api/jobs", params={"state": "lost"})
    assert bad.status_code == 422
    other = signed_in(offline, theirs)
    assert other.get(f"/ui/api/jobs/{made[0].id}").status_code == 404


def test_workflows_are_listed_with_their_typed_schemas(offline):
    client = signed_in(offline, offline.key("schemas"))
    found = {w["name"]: w for w in client.get("/ui/api/workflows").json()["data"]}
    assert set(found) == {"zimage-turbo", "zimage-edit"}
    assert found["zimage-edit"]["images"] == ["image"]
    openapi = httpx.get(f"{offline.url}/openapi.json").json()
    body = openapi["paths"]["/v1/workflows/zimage-turbo/jobs"]["post"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    documented = openapi["components"]["schemas"][ref]["properties"]
    given = found["zimage-turbo"]["schema"]["properties"]
    assert list(given) == list(documented)
    for name, prop in given.items():  # the same types, ranges and choices
        kinds = [{k: v for k, v in kind.items() if k != "maximum"} for kind in prop["anyOf"]]
        assert kinds == [
            {k: v for k, v in kind.items() if k != "maximum"} for kind in documented[name]["anyOf"]
        ], name


def test_recipes_are_listed_with_their_sizes(offline):
    client = signed_in(offline, offline.key("recipes"))
    answer = client.get("/ui/api/recipes").json()
    social = next(r for r in answer["data"] if r["name"] == "social")
    sizes = {o["name"]: tuple(o["deliver"]) for o in social["outputs"]}
    assert sizes == {
        "wechat": (1080, 1080),
        "weibo": (1200, 675),
        "douyin": (1080, 1920),
        "xiaohongshu": (1242, 1660),
    }
    assert social["images_per_topic"] == 4
    assert answer["max_pixels"] == 4_194_304


@pytest.mark.parametrize("name", ["..", "../social", ".hidden", "nonexistent"])
def test_a_recipe_is_run_by_name_only(offline, name):
    client = signed_in(offline, offline.key("names"))
    path = quote(name, safe="").replace(".", "%2E")  # sent as is, never resolved by the client
    answer = client.post(f"/ui/api/recipes/{path}/jobs", json={"topics": ["a"]}, headers=APP)
    assert answer.status_code == 404
    assert "/" not in answer.json()["error"]["message"].removeprefix(f"no recipe {name!r}")


def test_a_recipe_run_needs_topics(offline):
    client = signed_in(offline, offline.key("topics"))
    blank = client.post("/ui/api/recipes/social/jobs", json={"topics": ["", "# c"]}, headers=APP)
    assert blank.status_code == 422 and blank.json()["error"]["param"] == "topics"


def test_an_edit_needs_an_uploaded_image(offline):
    client = signed_in(offline, offline.key("edit"))
    for image in (None, "/etc/passwd", "http://127.0.0.1/x.png", {"upload": "upl_x"}):
        params = {"prompt": "p"} | ({} if image is None else {"image": image})
        answer = client.post(
            "/ui/api/jobs", json={"workflow": "zimage-edit", "params": params}, headers=APP
        )
        assert answer.status_code == 422, image
        assert answer.json()["error"]["param"] == "image"


def test_recipe_sizes_are_brought_within_the_gateways_max_pixels():
    params = {"width": 1088, "height": 1936, "prompt": "p"}
    deliver = {"width": 1080, "height": 1920}
    assert _within(params, deliver, 4_194_304) == params
    small = _within(params, deliver, 4096)
    assert small["width"] * small["height"] <= 4096
    assert small["width"] % 16 == 0 and small["height"] % 16 == 0
    assert small["height"] > small["width"]


def test_no_ui_serves_no_page(tmp_path):
    from fastapi.testclient import TestClient

    settings = settings_for(tmp_path, ["http://127.0.0.1:9"])
    without = TestClient(create_app(settings, ui=False))  # no lifespan: routing only
    assert without.get("/").status_code == 404
    assert without.get("/ui/static/app.js").status_code == 404
    assert TestClient(create_app(settings)).get("/").status_code == 200
