"""The documentation pages load everything from the app itself, under a strict CSP."""

import re

import pytest
from fastapi.testclient import TestClient

from tests.support import run_python

EXPECTED_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
}


def csp_directives(header: str) -> dict[str, list[str]]:
    directives = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_every_asset_the_page_names_is_served_by_the_app(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    urls = re.findall(r'(?:src|href)="([^"]+)"', response.text)
    assert len(urls) >= 2
    for url in urls:
        assert url.startswith("/docs/assets/"), f"{page} loads {url} from elsewhere"
        asset = client.get(url)
        assert asset.status_code == 200, url
        suffix = url[url.rindex(".") :]
        assert asset.headers["content-type"].startswith(EXPECTED_TYPES[suffix]), url
        assert len(asset.content) > 500
        assert "immutable" in asset.headers["cache-control"]
    assert "http://" not in response.text
    assert "https://" not in response.text


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_pages_allow_only_their_own_origin_and_their_nonce(
    client: TestClient, page: str
) -> None:
    response = client.get(page)
    directives = csp_directives(response.headers["content-security-policy"])
    assert directives["default-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    for values in directives.values():
        assert not any(value.startswith(("http", "*", "'unsafe")) for value in values), values
    [nonce] = [value for value in directives["script-src"] if value.startswith("'nonce-")]
    inline_scripts = re.findall(r"<script( nonce=\"[^\"]+\")?>", response.text)
    # Every inline script carries this response's nonce; every other script has a src.
    assert inline_scripts == [f' nonce="{nonce[7:-1]}"']
    assert (
        client.get(page).headers["content-security-policy"]
        != response.headers["content-security-policy"]
    ), "a nonce is new for every response"


def test_the_swagger_page_names_the_openapi_document(client: TestClient) -> None:
    assert '"url": "/openapi.json"' in client.get("/docs").text
    assert 'Redoc.init("/openapi.json"' in client.get("/redoc").text


def test_an_unknown_asset_or_release_is_not_found(client: TestClient) -> None:
    [url] = re.findall(r'src="([^"]+)"', client.get("/docs").text)
    release = url.split("/")[3]
    assert client.get(f"/docs/assets/{release}/../../main.py").status_code == 404
    assert client.get(f"/docs/assets/{release}/LICENSE").status_code == 404
    assert client.get("/docs/assets/0.0.0/swagger-ui.css").status_code == 404


def test_turning_the_docs_off_removes_the_pages_and_their_assets() -> None:
    snippet = (
        "from fastapi.testclient import TestClient\n"
        "from app.main import app\n"
        "client = TestClient(app)\n"
        "print(*(client.get(path).status_code for path in "
        "('/docs', '/redoc', '/openapi.json', '/docs/assets/1/favicon.png')))\n"
    )
    result = run_python("-c", snippet, env={"DOCS_ENABLED": "false"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["404", "404", "404", "404"]
