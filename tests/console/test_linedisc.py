"""The console's line editor, byte by byte: editing, Enter variants, control keys, noise."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from firmware.console.linedisc import (
    HISTORY,
    MAX_LINE,
    MAX_LISTED,
    Completer,
    Event,
    Kind,
    LineEditor,
)


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


# ----- history (Up/Down) and Tab completion, while the shell has editing on -----

UP, DOWN, SS3_UP, SS3_DOWN = b"\x1b[A", b"\x1b[B", b"\x1bOA", b"\x1bOB"


def editing(completer: Completer | None = None) -> LineEditor:
    editor = LineEditor()
    editor.editing = True
    editor.completer = completer
    editor.prompt = "DP> "
    return editor


def test_up_twice_recalls_older_lines_and_down_comes_back_to_the_draft() -> None:
    editor = editing()
    run(b"status\rlog 5\r", editor)
    echo, _ = run(b"dra" + UP, editor)
    assert echo == b"dra" + b"\b \b" * 3 + b"log 5"
    echo, _ = run(UP, editor)
    assert echo == b"\b \b" * 5 + b"status"
    assert run(UP, editor)[0] == b"\x07"  # nothing older: the bell, the line stays
    assert run(DOWN, editor)[0] == b"\b \b" * 6 + b"log 5"
    assert run(DOWN, editor)[0] == b"\b \b" * 5 + b"dra"  # back to what was being typed
    assert run(DOWN, editor)[0] == b"\x07"
    assert run(UP + b"\r", editor)[1] == [Event(Kind.LINE, "log 5")]


def test_application_cursor_keys_and_a_sequence_split_across_reads() -> None:
    editor = editing()
    run(b"one\rtwo\r", editor)
    assert run(SS3_UP + SS3_UP, editor)[0].endswith(b"one")
    assert run(SS3_DOWN, editor)[0].endswith(b"two")
    run(b"\x15\r", editor)  # a blank line ends the browsing
    for piece in (b"\x1b", b"[", b"A"):  # ESC, [ and A in three reads
        echo, _ = run(piece, editor)
    assert echo == b"two"
    assert run(b"\r", editor)[1] == [Event(Kind.LINE, "two")]


def test_history_skips_blank_and_repeated_lines_and_is_bounded() -> None:
    editor = editing()
    run(b"a\r\r  \ra\r", editor)
    assert editor.history == ["a"]
    run(b"".join(b"cmd%d\r" % i for i in range(HISTORY + 10)), editor)
    assert len(editor.history) == HISTORY and editor.history[-1] == f"cmd{HISTORY + 9}"
    editor.clear_history()
    assert editor.history == [] and run(UP, editor)[0] == b""


def test_no_history_or_completion_with_echo_off_or_editing_off() -> None:
    editor = editing(lambda line: (0, ["status"]))
    editor.echo = False
    echo, events = run(b"s3cret\r" + UP + b"\t\r", editor)
    assert editor.history == [] and echo == b"\r\n\r\n"
    assert [e.text for e in events] == ["s3cret", ""]
    editor.echo, editor.editing = True, False
    assert run(b"st\t\r", editor)[1] == [Event(Kind.LINE, "st")]  # Tab dropped, as before
    assert editor.history == []


def test_modified_arrows_and_other_keys_still_do_nothing() -> None:
    editor = editing()
    run(b"old\r", editor)
    assert run(b"\x1b[1;5A\x1b[C\x1b[D\x1bOP\x1b[5~", editor)[0] == b""


def test_tab_with_one_candidate_completes_the_word_and_a_space() -> None:
    seen: list[str] = []

    def completer(line: str) -> tuple[int, list[str]]:
        seen.append(line)
        return line.rfind(" ") + 1, ["profile", "passwd", "status"]

    editor = editing(completer)
    echo, events = run(b"sta\tx\r", editor)
    assert echo == b"status x\r\n" and events == [Event(Kind.LINE, "status x")]
    assert seen == ["sta"]


def test_tab_with_several_candidates_extends_then_lists_them_and_redraws() -> None:
    keys = ["pop3.max_sessions", "pop3.max_sessions_per_client", "pop3.port"]
    editor = editing(lambda line: (len("profile get "), keys))
    run(b"profile get pop3.m", editor)
    assert run(b"\t", editor)[0] == b"ax_sessions"  # the common prefix
    echo, _ = run(b"\t", editor)
    assert echo == (
        b"\r\npop3.max_sessions  pop3.max_sessions_per_client\r\nDP> profile get pop3.max_sessions"
    )
    assert run(b"_\t\r", editor)[1] == [
        Event(Kind.LINE, "profile get pop3.max_sessions_per_client ")
    ]


def test_tab_with_no_candidate_or_no_completer_rings_the_bell() -> None:
    assert run(b"zz\t", editing(lambda line: (0, ["status"])))[0] == b"zz\x07"
    assert run(b"zz\t", editing())[0] == b"zz\x07"


def test_tab_never_grows_the_line_past_its_bound() -> None:
    editor = editing(lambda line: (0, ["x" * (MAX_LINE + 10)]))
    assert run(b"x\t", editor)[0] == b"x\x07"
    assert editor.pending == 1


LEFT, RIGHT = b"\x1b[D", b"\x1b[C"


def test_left_and_right_move_the_cursor_and_typing_inserts_in_mid_line() -> None:
    editor = editing()
    assert run(b"stus" + LEFT + LEFT, editor)[0] == b"stus\b\b"
    assert run(b"a", editor)[0] == b"\x1b[1@a"  # ICH opens a gap, the tail moves right
    assert run(b"t", editor)[0] == b"\x1b[1@t"
    assert run(RIGHT + RIGHT + RIGHT, editor)[0] == b"\x1b[1C\x1b[1C"  # no move past the end
    assert run(b"\r", editor)[1] == [Event(Kind.LINE, "status")]


def test_backspace_in_mid_line_closes_the_gap() -> None:
    editor = editing()
    run(b"logg 5" + LEFT + LEFT, editor)
    assert run(b"\x7f", editor)[0] == b"\b\x1b[1P"  # DCH: the tail moves left
    assert run(b"\r", editor)[1] == [Event(Kind.LINE, "log 5")]


def test_ctrl_a_ctrl_e_home_end_and_ctrl_u_from_mid_line() -> None:
    editor = editing()
    assert run(b"atus\x01", editor)[0] == b"atus\x1b[4D"
    assert run(b"st\x05", editor)[0] == b"\x1b[1@s\x1b[1@t\x1b[4C"
    assert run(b"\x1bOH\x1b[F", editor)[0] == b"\x1b[6D\x1b[6C"
    run(LEFT + LEFT, editor)
    assert run(b"\x15", editor)[0] == b"\x1b[4D\x1b[K"  # to the start, erase to the end
    assert editor.pending == 0
    assert run(b"ok\x15", editor)[0] == b"ok\b \b\b \b"  # at the end: plain BS SP BS


def test_mid_line_echo_stays_small_in_noise_full_of_ctrl_a() -> None:
    editor = editing()
    echo, _ = run(b"x" * 200 + b"\x01y" * 500, editor)
    assert len(echo) < 200 + 500 * 12


def test_cursor_keys_do_nothing_with_editing_off_or_echo_off() -> None:
    editor = LineEditor()
    assert run(b"ab" + LEFT + b"\x01c\r", editor) == (b"abc\r\n", [Event(Kind.LINE, "abc")])
    editor = editing()
    editor.echo = False
    assert run(b"ab" + LEFT + b"c\r", editor) == (b"\r\n", [Event(Kind.LINE, "abc")])


def test_tab_completes_the_word_before_the_cursor() -> None:
    editor = editing(lambda line: (line.rfind(" ") + 1, ["status", "session"]))
    run(b"help st x" + LEFT + LEFT, editor)
    assert run(b"\t", editor)[0] == b"\x1b[5@atus "
    assert run(b"\r", editor)[1] == [Event(Kind.LINE, "help status  x")]
    run(b"s x" + LEFT + LEFT + b"\t", editor)
    assert run(b"\t", editor)[0] == b"\r\nsession  status\r\nDP> s x\x1b[2D"


KEYS = st.sampled_from(
    [UP, DOWN, SS3_UP, SS3_DOWN, LEFT, RIGHT, b"\x01", b"\x05", b"\t", b"\x1b", b"\x1b[", b"\r"]
)


@given(st.lists(st.one_of(st.binary(max_size=40), KEYS), max_size=200))
def test_noise_with_keys_and_broken_escapes_never_raises_and_stays_bounded(
    pieces: list[bytes],
) -> None:
    words = ["status", "scan", "session", "x" * 200, "profile"]
    editor = editing(lambda line: (line.rfind(" ") + 1, words))
    for byte in b"".join(pieces):
        out, event = editor.push(byte)
        assert editor.pending <= MAX_LINE
        assert len(out) <= 6 * MAX_LINE + MAX_LISTED * (MAX_LINE + 2)
        assert len(editor.history) <= HISTORY
        if event is not None and event.kind is Kind.LINE:
            assert len(event.text) <= MAX_LINE
            assert event.text.isprintable() and event.text.isascii()
