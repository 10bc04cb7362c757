"""The operations layer: every administrative operation once, returning frozen dataclasses.

Front-ends (the serial console, the `dpfw` command line, later the HTTP API) parse their
input, call a function here over an `OpsContext`, and render the result: text through
`firmware.ops.render`, JSON through `dataclasses.asdict`. Each result holds only str, int,
float, bool, None, lists and dicts (times as epoch seconds), and every refusal is a
`firmware.errors.DeviceError` subclass with one clear line.

One module per area: status, boxes, messages, profile, sessions, tls, storage, scans, and
system (admin password, log, reboot). An `OpsContext` is either a running
`firmware.device.device.Device` or a board image opened offline by the CLI (no services: no
sessions, and the running profile is the saved one).

Operations are plain synchronous functions over the context: on a running device the store
calls they make are the ones the device's services make from the trio thread today; when a
store worker thread runs the board's effects, a front-end hands the same function to it
(`await worker.run(fn, ctx, ...)`), and the offline CLI calls it directly.
"""

from firmware.ops.context import OpsContext

__all__ = ["OpsContext"]
