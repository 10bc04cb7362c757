"""The console's line editor, byte by byte: editing, Enter variants, control keys, noise."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from firmware.console.linedisc import MAX_LINE, Event, Kind, LineEditor


def run(data: bytes, editor: LineEditor | None = None) -> tuple[bytes, list[Event]]:
    editor = editor or LineEditor()
    echo: list[bytes] = []
    events: list[Event] = []
    for byte in data:
        out, event = editor.push(byte)
        echo.append(out)
        if event is not None:
            events.append(event)
    return b"".join(echo), events


def lines(data: bytes) -> list[str]:
    return [e.text for e in run(data)[1] if e.kind is Kind.LINE]


def test_printable_text_is_echoed_and_enter_ends_the_line() -> None:
    echo, events = run(b"status\r")
    assert echo == b"status\r\n"
    assert events == [Event(Kind.LINE, "status")]


def test_cr_lf_and_crlf_each_end_exactly_one_line() -> None:
    assert lines(b"a\rb\nc\r\nd\r\n") == ["a", "b", "c", "d"]
    assert lines(b"\r\n\r\n") == ["", ""]
    assert lines(b"\n\n") == ["", ""]
    assert lines(b"x\n\ry\r") == ["x", "", "y"]  # LF then CR is two Enters


def test_backspace_and_del_erase_one_character_each() -> None:
    echo, events = run(b"stx\x08a\x7fatus\r")
    assert events == [Event(Kind.LINE, "status")]
    assert echo.count(b"\b \b") == 2


def test_backspace_on_an_empty_line_echoes_nothing() -> None:
    echo, events = run(b"\x08\x7f\r")
    assert echo == b"\r\n"
    assert events == [Event(Kind.LINE, "")]


def test_ctrl_u_clears_the_line() -> None:
    echo, events = run(b"garbage\x15log\r")
    assert events == [Event(Kind.LINE, "log")]
    assert echo.count(b"\b \b") == len("garbage")


def test_ctrl_c_drops_the_line_and_ctrl_d_is_eof() -> None:
    echo, events = run(b"reboot\x03status\r\x04")
    assert [e.kind for e in events] == [Kind.CANCEL, Kind.LINE, Kind.EOF]
    assert events[1].text == "status"
    assert b"^C\r\n" in echo and echo.endswith(b"^D\r\n")


def test_arrow_keys_and_other_escape_sequences_are_swallowed() -> None:
    data = b"st\x1b[Aat\x1b[1;5Cus\x1bOP\x1bx\r"
    assert lines(data) == ["status"]


def test_a_control_byte_ends_a_broken_escape_sequence() -> None:
    assert lines(b"\x1b[12\rok\r") == ["", "ok"]


def test_high_bytes_and_other_control_bytes_are_dropped() -> None:
    echo, events = run(b"\x00\x01l\xffo\x80g\x07\x09\r")
    assert events == [Event(Kind.LINE, "log")]
    assert echo == b"log\r\n"


def test_an_overlong_line_is_refused_whole_with_one_bell() -> None:
    editor = LineEditor()
    echo, events = run(b"x" * (MAX_LINE + 50) + b"\r", editor)
    assert events == [Event(Kind.TOO_LONG)]
    assert echo.count(b"\x07") == 1
    assert echo.count(b"x") == MAX_LINE
    assert lines(b"next\r") == ["next"]
    assert editor.pending == 0


def test_erasing_an_overlong_line_to_empty_makes_it_usable_again() -> None:
    data = b"y" * (MAX_LINE + 3) + b"\x15ok\r"
    assert run(data)[1] == [Event(Kind.LINE, "ok")]


def test_secret_mode_echoes_only_enter() -> None:
    editor = LineEditor()
    editor.echo = False
    echo, events = run(b"s3cret\x08T\r", editor)
    assert echo == b"\r\n"
    assert events == [Event(Kind.LINE, "s3creT")]


@given(st.binary(max_size=2000))
def test_noise_never_raises_and_the_line_stays_bounded(noise: bytes) -> None:
    editor = LineEditor()
    for byte in noise:
        out, event = editor.push(byte)
        assert editor.pending <= MAX_LINE
        assert len(out) <= 3 * MAX_LINE  # Ctrl-U erasing a full line is the most
        if event is not None and event.kind is Kind.LINE:
            assert len(event.text) <= MAX_LINE
            assert event.text.isprintable() and event.text.isascii()
