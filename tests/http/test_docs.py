"""docs/api.md's curl lines, run in order as written against a real `dpfw run --http`."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.http.conftest import Lab

ROOT = Path(__file__).resolve().parent.parent.parent
PAGE = ROOT / "docs" / "api.md"

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def page_script() -> str:
    """Every ```sh block of docs/api.md, in order."""
    return "\n".join(re.findall(r"```sh\n(.*?)```", PAGE.read_text(), re.S))


def test_the_page_covers_every_endpoint() -> None:
    script = page_script()
    for path in ("/status", "/boxes", "/boxes/alice/messages", "/profile", "/sessions",
                 "/scans", "/metrics", "$loc/raw", "/trace"):  # fmt: skip
        assert path in script, path
    for method in ("PATCH", "DELETE"):
        assert f"-X {method}" in script


@needs_curl
def test_every_curl_line_of_the_page_works(lab: Lab, tmp_path: Path) -> None:
    port = lab.base.rsplit(":", 1)[1]
    script = page_script().replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    # Every curl fails the script on an HTTP error (set -e), and says why.
    wrapper = 'curl() { command curl --fail-with-body --show-error --max-time 60 "$@"; }\n'
    done = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + wrapper + script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert '"model":"DP-3530"' in out
    assert "Subject: API test\n\nhello" in out  # the raw message (text mode reads CRLF as LF)
    assert '"what":"added","name":"carol"' in out
    assert "dpfw_pop3_sessions " in out  # the metrics
    assert ": trace stream open" in out  # the trace stream, opened and left after 1 s
    assert lab.api.get("/api/v1/boxes/carol").status_code == 404  # deleted at the end


def test_the_readme_points_at_the_api() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docs/api.md" in readme
    assert "curl -u admin:admin-lab http://127.0.0.1:8080/api/v1/status" in readme
