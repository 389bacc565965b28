"""Shared e2e fixtures: one real UI server (``python -m app.ui``) per test session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ui_server(tmp_path_factory):
    """URL of a running ``python -m app.ui`` on a free local port, with small limits to test.

    Limits: uploads up to 2 MB and images up to 2 MP, so the refusals can be tested with small
    files. Its log is in the session's temporary folder (``ui-server/server.log``).
    """
    from app.ui import serve_in_subprocess

    log = tmp_path_factory.mktemp("ui-server") / "server.log"
    with serve_in_subprocess(["--max-file-size", "2mb", "--max-pixels", "2000000"], log_path=log) as url:
        yield url
