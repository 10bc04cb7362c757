"""Scan engines that misbehave, for tests/scanner/test_engine.py (DPFW_SCAN_ENGINE).

`python tests/scanner/engines.py MODE` reads the device's request line as the real engine does
and then, by MODE:

- die: reports page 1, then kills itself with SIGKILL (as the OOM killer would);
- crash: reports page 1, then raises ZeroDivisionError (exit status 1, a traceback on stderr);
- garbage: writes a line that is no record;
- truncated: reports page 1 of 2, then exits with status 0;
- half-message: reports every page, announces a message and writes half of it, exits 0;
- hang: reports page 1, then sleeps (a stuck engine: only cancelling its job ends it);
- oserror: the real engine, with Pillow's save failing as a host I/O error would make it fail
  (EIO), as in the libfiu campaign that found it (commit b75e872).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import time


def page_record(page: int, size: int = 1000) -> bytes:
    return json.dumps({"page": page, "size": size}).encode() + b"\n"


def main(mode: str) -> int:
    if mode == "oserror":
        from PIL import Image

        def failing_save(*args: object, **kwargs: object) -> None:
            raise OSError(errno.EIO, "Input/output error")

        Image.Image.save = failing_save  # type: ignore[method-assign]
        from firmware.scanner.engine import main as engine_main

        return engine_main()
    request = json.loads(sys.stdin.buffer.readline())
    out = sys.stdout.buffer
    if mode == "garbage":
        out.write(b"hello from a confused engine\n")
        out.flush()
        time.sleep(60)  # the device must not wait for it: garbage is killed at once
        return 0
    out.write(page_record(1))
    out.flush()
    if mode == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "crash":
        return 1 // 0
    if mode == "truncated":
        return 0
    if mode == "hang":
        sys.stdin.buffer.readline()
        time.sleep(3600)
        return 0
    if mode == "half-message":
        for page in range(2, request["pages"] + 1):
            sys.stdin.buffer.readline()
            out.write(page_record(page))
            out.flush()
        sys.stdin.buffer.readline()
        header = {"message": 5000, "names": ["a.tif"], "digests": ["0" * 64]}
        out.write(json.dumps(header).encode() + b"\n" + b"x" * 2500)
        out.flush()
        return 0
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
