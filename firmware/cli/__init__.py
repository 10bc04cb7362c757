# PYTHON_ARGCOMPLETE_OK  (argcomplete's global completion looks for this marker)
"""The `dpfw` command line: one sub-module per area, each registering its sub-commands.

Shell completion: `eval "$(register-python-argcomplete dpfw)"` (bash/zsh); the shell then runs
`dpfw` with `_ARGCOMPLETE=1` and argcomplete answers from the parser built here and exits.
The man page (docs/dpfw.1) is rendered from the same parser by firmware.cli.manpage.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from firmware import __version__
from firmware.cli import limits
from firmware.errors import DeviceError
from firmware.text import os_reason

# Each module has `register(subparsers)`; its sub-commands set `func(args) -> int`.
COMMAND_MODULES = (
    "image",
    "box",
    "deliver",
    "profile",
    "scan",
    "status",
    "tls",
    "ifax",
    "run",
    "trace",
    "fleet",
    "report",
    "fault",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dpfw", description="Firmware simulator for DP-series networked copiers."
    )
    parser.add_argument("--version", action="version", version=f"dpfw {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"firmware.cli.{name}").register(sub)
    _mark_leaves(parser)
    return parser


def _mark_leaves(parser: argparse.ArgumentParser) -> None:
    """Give every sub-command's parser a `_parser` default naming itself, so that arguments
    left over after parsing are refused with that sub-command's usage, not the top level's
    (argparse reports them from the top parser: `dpfw box list IMG extra`)."""
    parser.set_defaults(_parser=parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _mark_leaves(child)


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """parser.parse_args, but unrecognised arguments are reported by the sub-command's own
    parser (its usage line, `dpfw box list: error: unrecognized arguments: extra`, exit 2)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        owner: argparse.ArgumentParser = getattr(args, "_parser", parser)
        owner.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _complete(parser: argparse.ArgumentParser) -> None:
    """Answer a shell's completion request and exit, when this run is one (`_ARGCOMPLETE` set
    by the shell hook); otherwise do nothing. argcomplete is imported only then."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    import argcomplete

    argcomplete.autocomplete(parser)


def _lean_log_records() -> None:
    """Skip what no dpfw log line shows: the caller's file and line (a stack walk per
    record), thread, process and task names. The logging HOWTO's "Optimization" section
    names these switches; the device logs a line per login, so they cost per session."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    if hasattr(logging, "logAsyncioTasks"):  # Python 3.12+
        setattr(logging, "logAsyncioTasks", False)  # noqa: B010 (not in 3.11's stubs)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `dpfw` command; its exit status. Every failure a user can cause or meet is one
    `dpfw: ...` line on stderr and a non-zero status, never a traceback: 1 for a refusal or an
    OS error, 130 for Ctrl-C, 2 for a bad command line (argparse)."""
    try:
        parser = build_parser()
        _complete(parser)
        args = parse(parser, argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        _lean_log_records()
        code: int = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
    except DeviceError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except EOFError:
        return _fail("end of input where an answer was expected")
    except BrokenPipeError:
        # `dpfw ... | head`: the reader left; say nothing more on a stdout nobody reads.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except MemoryError:
        return _fail(limits.memory_message())
    except ImportError as exc:
        # Under a small RLIMIT_AS, loading a C extension fails with "failed to map segment".
        if limits.address_space_limit() is None:
            raise
        return _fail(limits.memory_message(f"loading {exc.name or 'a module'} failed"))
    except SystemError:
        # Some C code paths report a failed allocation as "error return without exception
        # set" (seen importing trio under RLIMIT_AS 48 MiB on a busy machine).
        if limits.address_space_limit() is None:
            raise
        return _fail(limits.memory_message("an allocation failed"))
    except OSError as exc:
        # An OS error the command did not turn into its own message: name the file and why.
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(f"{where}{os_reason(exc)}")
    return code


def _fail(message: str, code: int = 1) -> int:
    with contextlib.suppress(OSError, ValueError):
        print(f"dpfw: {message}", file=sys.stderr, flush=True)
    return code
