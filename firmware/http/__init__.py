"""The HTTP API: a third front-end over `firmware.ops`, served by hypercorn inside the
device's trio loop (docs/api.md)."""
