"""/docs and /redoc work offline: every script, style and icon they load is served by the service."""

from __future__ import annotations

import re

import pytest

from tests.conftest import Api

ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|(?:url)\s*:\s*["']([^"']+)["']""")


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_docs_load_only_local_assets(api: Api, path: str) -> None:
    page = await api.client.get(path)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assets = [a or b for a, b in ASSET.findall(page.text)]
    assert any(asset.endswith(".js") for asset in assets), page.text
    assert not re.search(r"https?://|//[a-z]", page.text.replace("http://www.w3.org", "")), page.text
    for asset in assets:
        fetched = await api.client.get(asset)
        assert fetched.status_code == 200, asset
        assert len(fetched.content) > 0
