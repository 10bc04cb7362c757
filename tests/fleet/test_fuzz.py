"""Fuzz the fleet-manifest parser (firmware/fleet/manifest.py) and the plan made from it with
Hypothesis: any TOML document or text gives a Manifest or a ManifestError/DeviceError whose
every line names the file, never another exception; what `write` makes parses back."""

from __future__ import annotations

from typing import Any

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.config.profile import MODELS
from firmware.errors import DeviceError
from firmware.fleet import manifest as mf
from firmware.fleet.manifest import BoxSpec, ManifestError, parse
from firmware.fleet.plan import collisions, plan
from firmware.security.credentials import check_new_password
from firmware.store.info import check_box_name

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WHERE = "lab/fleet.toml"
PATTERNS = st.one_of(
    st.sampled_from(
        [
            "{name}.lab",
            "{index:03d}",
            "{fleet}-{index}",
            "{name.upper}",
            "{index[0]}",
            "{index:>999999999999}",
            "{index:{name}}",
            "{0}",
            "{}",
            "{",
            "{name!z}",
            "{name:d}",
            "",
        ]
    ),
    st.text(max_size=10),
)
SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-2, max_value=70000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from([*MODELS, "dp-6030", "pty", "none", "a", "lab", "x.toml"]),
    PATTERNS,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=6) | st.sampled_from(["pop3.apop"]), inner, max_size=2)
    ),
    max_leaves=6,
)
BOX = st.dictionaries(
    st.sampled_from(["name", "password", "legacy", "other"]),
    st.one_of(PATTERNS, st.booleans(), st.integers(0, 3)),
    max_size=4,
)
FLEET_KEYS = [*mf._FLEET_KEYS, "bogus"]
DEVICE_KEYS = [*mf._DEVICE_KEYS, "bogus"]


def _fleet_value(key: str) -> st.SearchStrategy[Any]:
    if key == "boxes":
        return st.lists(BOX, max_size=3) | VALUES
    if key == "settings":
        return st.dictionaries(
            st.sampled_from(["pop3.apop", "pop3.max_sessions", "nonsense", "pop3.greeting"]),
            VALUES,
            max_size=2,
        )
    return VALUES


FLEET = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["lab", "floor-3", "-x", "A", ""]) | st.text(max_size=5),
        "count": st.integers(-1, 12) | SCALARS,
        "template": st.sampled_from([*MODELS, "p.toml", "nope"]) | SCALARS,
    }
).flatmap(
    lambda base: st.lists(st.sampled_from(FLEET_KEYS), max_size=6, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: _fleet_value(k) for k in keys}).map(
            lambda extra: {**base, **extra}
        )
    )
)
DEVICE = st.lists(st.sampled_from(DEVICE_KEYS), max_size=4, unique=True).flatmap(
    lambda keys: st.fixed_dictionaries(
        {"index": st.integers(-1, 14) | SCALARS, **{k: _fleet_value(k) for k in keys}}
    )
)
DOCUMENTS = st.builds(
    lambda fleet, devices, top: {"fleet": fleet, "device": devices, **top},
    FLEET,
    st.lists(DEVICE, max_size=3) | VALUES,
    st.dictionaries(st.sampled_from(["extra", "Fleet"]), VALUES, max_size=1),
)


def _accepted_or_refused(text: str) -> None:
    try:
        manifest = parse(text, WHERE)
        devices = plan(manifest)
        collisions(devices)
    except ManifestError as exc:
        assert exc.lines and all(line.startswith(f"{WHERE}: ") for line in exc.lines)
        assert all("\n" not in line and "Traceback" not in line for line in exc.lines)
    except DeviceError as exc:  # the plan: a port beyond 65535, one line
        assert str(exc) and "\n" not in str(exc)
    else:
        assert len(devices) == manifest.count
        assert len({d.name for d in devices}) == manifest.count


@FUZZ
@given(DOCUMENTS)
def test_any_manifest_document_is_a_fleet_or_lines_naming_the_file(doc: dict[str, Any]) -> None:
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):  # a value TOML cannot hold (e.g. a list of mixed tables)
        return
    _accepted_or_refused(text)


@FUZZ
@given(st.text(max_size=300))
def test_any_text_is_a_fleet_or_lines_naming_the_file(text: str) -> None:
    _accepted_or_refused("[fleet]\n" + text if text[:1] == "n" else text)


NAMES = st.from_regex(mf.NAME_RE, fullmatch=True)
SAFE = st.text(
    st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters="{}"),
    min_size=1,
    max_size=12,
)


def _box_ok(box: tuple[str, str]) -> bool:
    """A box `dpfw box add` would take: the manifest check applies the same rules."""
    try:
        check_box_name(box[0])
        check_new_password(box[1])
    except DeviceError:
        return False
    return True


PASSWORDS = st.text(  # a manifest's password is a pattern too: no lone { or }
    st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="{}"),
    min_size=4,
    max_size=20,
)
BOXES = st.tuples(SAFE, PASSWORDS)


@FUZZ
@given(
    NAMES,
    st.integers(1, 50),
    st.sampled_from(MODELS),
    st.lists(st.sampled_from(MODELS), max_size=3),
    st.integers(1, 60000),
    st.lists(BOXES.filter(_box_ok), max_size=3, unique_by=lambda b: b[0]),
)
def test_what_fleet_up_writes_parses_back_the_same(
    name: str,
    count: int,
    template: str,
    models: list[str],
    base: int,
    boxes: list[tuple[str, str]],
) -> None:
    text = mf.write(
        name=name,
        count=count,
        template=template,
        models=models,
        pop3_base_port=base,
        http_base_port=0,
        boxes=[BoxSpec(n, p) for n, p in boxes],
    )
    manifest = parse(text, WHERE)
    assert (manifest.name, manifest.count, manifest.template) == (name, count, template)
    assert manifest.models == tuple(models)
    assert manifest.pop3_base_port == base
    assert manifest.boxes == tuple(BoxSpec(n, p) for n, p in boxes)


def test_placeholders_with_attributes_items_or_huge_widths_are_refused_in_one_line() -> None:
    """Found by the fuzzer: `{name.upper}`, `{index[0]}` raised AttributeError/TypeError and
    `{index:>999999999999}` a MemoryError out of parse()."""
    head = '[fleet]\nname = "lab"\ncount = 1\ntemplate = "DP-4530"\n'
    for pattern in ("{name.foo}", "{index[0]}", "{index:>999999999999}", "{index:{name}}"):
        for text in (
            head + f'hostname = "{pattern}"\n',
            head + f'[[fleet.boxes]]\nname = "{pattern}"\npassword = "Pw-123456"\n',
        ):
            try:
                parse(text, WHERE)
            except ManifestError as exc:
                assert len(exc.lines) == 1 and "bad placeholder" in exc.lines[0], exc.lines
            else:
                raise AssertionError(f"{pattern} accepted")
    assert parse(head + 'hostname = "{name}-{index:03d}.lab"\n', WHERE).hostname


def test_a_list_holding_a_line_break_is_shown_on_one_line() -> None:
    """Found by the fuzzer: `name = ["\\n"]` put a raw line break into the error line (a list
    was shown joined, its strings unquoted)."""
    text = '[fleet]\nname = ["a\\nb"]\ncount = 1\ntemplate = "DP-4530"\nmodels = ["x\\ny"]\n'
    try:
        parse(text, WHERE)
    except ManifestError as exc:
        assert len(exc.lines) == 2 and all("\n" not in line for line in exc.lines), exc.lines
        assert '"a\\nb" is not a non-empty string' in exc.lines[0]
    else:
        raise AssertionError("accepted")


def test_a_setting_value_the_profile_refuses_is_a_manifest_line_before_anything_is_made() -> None:
    """Found while fuzzing: `settings = { "pop3.max_sessions" = "abc" }` passed the manifest,
    so `fleet up` created the images and then stopped at the first device's boot with a
    `--set:` line naming neither the manifest nor the table."""
    text = (
        '[fleet]\nname = "lab"\ncount = 2\ntemplate = "DP-4530"\n'
        'settings = { "pop3.max_sessions" = "abc", "pop3.apop" = true }\n'
        '[[device]]\nindex = 1\nsettings = { "pop3.apop" = 3 }\n'
    )
    try:
        parse(text, WHERE)
    except ManifestError as exc:
        assert exc.lines == [
            f'{WHERE}: [fleet] settings.pop3.max_sessions: pop3.max_sessions = "abc" is not '
            "allowed; expected an integer from 1 to 4096",
            f'{WHERE}: [device index=1] settings.pop3.apop: pop3.apop = "3" is not allowed; '
            "expected true or false",
        ], exc.lines
    else:
        raise AssertionError("accepted")
