"""A fleet's board images: created once, reused after; a manifest that no longer fits an
existing image is refused, naming the image and what differs.

Each image is `DIR/devices/NAME/board.img`. A new one is built under a temporary name
(`board.img.new`) with its profile, certificate, serial number and boxes, and renamed into
place only when complete, so an interrupted `fleet up` leaves no half-made device. Only the
images of the plan are ever opened or created: nothing else under DIR is touched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from firmware.config.profile import MODELS, Profile, factory, parse_toml
from firmware.device.boards import create_board, open_board, saved_profile
from firmware.errors import DeviceError, ProfileError
from firmware.fleet.manifest import Manifest, resolve
from firmware.fleet.plan import DevicePlan, profile_for
from firmware.ops.status import SERIAL_SETTING
from firmware.security.credentials import check_password_policy
from firmware.store.board import MiB
from firmware.text import file_problem


def template_profile(manifest: Manifest) -> Profile:
    """The manifest's template: a model's factory profile or a profile TOML file."""
    if manifest.template.upper() in MODELS:
        return factory(manifest.template)
    path = resolve(manifest, manifest.template)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ProfileError(f"[fleet] template: {file_problem(path, exc)}") from None
    except UnicodeDecodeError:
        raise ProfileError(f"[fleet] template: {path}: not UTF-8 text") from None
    return parse_toml(text, str(path))


def image_path(fleet_dir: Path, device: DevicePlan) -> Path:
    return fleet_dir / Path(*device.image.parts)


def check_boxes(plans: Sequence[DevicePlan]) -> None:
    """DeviceError for the first box password the password rule refuses, before any image
    is made (so a bad manifest creates nothing)."""
    for device in plans:
        for box in device.boxes:
            check_password_policy(box.password, f"{device.name}: box {box.name}")


def ensure_images(
    path_of: Callable[[DevicePlan], Path],
    manifest: Manifest,
    plans: Sequence[DevicePlan],
    admin_password: Callable[[], str],
) -> tuple[list[str], list[str]]:
    """Create the plan's missing images (at `path_of(device)`: `image_path` for `fleet up`,
    the pod's volume for Kubernetes); check the existing ones fit the plan.

    Returns (names created, names reused). `admin_password` is called once, only if an
    image must be made. Raises DeviceError listing every image that no longer fits the
    manifest (model, host name or serial number differ), before creating anything; an image
    another process holds is ImageInUseError.
    """
    missing = [d for d in plans if not path_of(d).exists()]
    present = [d for d in plans if d not in missing]
    conflicts = []
    for device in present:
        conflicts += _conflicts(path_of(device), device, manifest)
    if conflicts:
        raise DeviceError("\ndpfw: ".join(conflicts))
    if not missing:
        return [], [d.name for d in present]
    check_boxes(missing)
    template = template_profile(manifest)
    profiles = {d.name: profile_for(d, template) for d in missing}  # all refusals first
    password = admin_password()
    check_password_policy(password, "fleet up: the admin password")
    for device in missing:
        _create(path_of(device), device, profiles[device.name], manifest, password)
    return [d.name for d in missing], [d.name for d in present]


def _create(
    path: Path, device: DevicePlan, profile: Profile, manifest: Manifest, password: str
) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeviceError(file_problem(path.parent, exc, "create")) from None
    partial = path.with_name(path.name + ".new")
    partial.unlink(missing_ok=True)  # what an interrupted earlier run left
    board = create_board(partial, profile, password, size=manifest.flash_mib * MiB)
    try:
        board.set_setting(SERIAL_SETTING, device.serial)
        for box in device.boxes:
            board.add_box(box.name, box.password, legacy=box.legacy)
    finally:
        board.close()
    partial.replace(path)


def _conflicts(path: Path, device: DevicePlan, manifest: Manifest) -> list[str]:
    """Lines naming each way the existing image at `path` differs from the plan."""
    with open_board(path) as board:
        profile = saved_profile(board)
        serial = board.settings().get(SERIAL_SETTING)
    lines = []
    model = device.model or template_model(manifest)
    where = f"{path}: {device.name}"
    if model and profile.model != model:
        lines.append(f"{where}: the image is a {profile.model}, the manifest says {model}")
    if profile.str("identity.hostname") != device.hostname:
        lines.append(
            f"{where}: the image's host name is {profile.str('identity.hostname')}, the "
            f"manifest says {device.hostname} (its certificate names the old one)"
        )
    if serial != device.serial:
        lines.append(
            f"{where}: the image's serial number is {serial}, the manifest makes {device.serial}"
            " (another fleet name?)"
        )
    if lines:
        lines[-1] += "; change the manifest back, or remove the image to make it anew"
    return lines


def template_model(manifest: Manifest) -> str | None:
    """The template's model when it is a model name (a file's model needs reading)."""
    upper = manifest.template.upper()
    return upper if upper in MODELS else None
