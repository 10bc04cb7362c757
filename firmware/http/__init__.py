"""The HTTP API: a third front-end over `firmware.ops`, served by hypercorn inside the
device's trio loop (docs/api.md).

Light on purpose (no Starlette, no hypercorn): the command line imports `control_path`."""

from __future__ import annotations

from pathlib import Path

CONTROL_SUFFIX = ".ctl"


def control_path(image: Path) -> Path:
    """The control socket of the device running `image`: `IMG.ctl` beside it
    (firmware/http/server.py serves it, firmware/cli/remote.py talks to it)."""
    return image.with_name(image.name + CONTROL_SUFFIX)
