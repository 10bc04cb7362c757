"""Kubernetes manifests for a fleet: the same fleet manifest, one pod per device (sans-IO).

`dpfw fleet k8s MANIFEST` writes, as one YAML stream (docs/fleet.md):

- a Secret `NAME-admin` holding the admin password new images get (a placeholder that
  `dpfw fleet device` refuses to create an image with, so a forgotten edit fails loudly);
- a ConfigMap `NAME-manifest` holding the manifest and the files it names (template,
  fault scenarios), mounted at /etc/dpfw/fleet;
- a headless Service `NAME` (clusterIP None): pod NAME-i is `NAME-i.NAME.NAMESPACE.svc`;
- a StatefulSet `NAME` of `count` replicas: pod NAME-i runs `dpfw fleet device MANIFEST i`,
  which creates device i's image on its own PersistentVolumeClaim (volumeClaimTemplates,
  one volume per device image) on first start, exactly as `fleet up` would (same name,
  serial number, certificate, boxes), and serves it; readiness is `GET /api/v1/status`
  answering 200 with the admin password (an exec probe: httpGet cannot read a Secret).

Inside a pod every device listens on the same ports (POP3 1110, POP3S 1995, HTTP 8080): each
pod has its own address, so the manifest's base ports do not apply. The YAML is written by a
small emitter: block mappings and lists, every string a JSON string (a YAML double-quoted
scalar), so no value can change type or meaning (`"no"`, `"0755"`, `"1e3"` stay strings).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from firmware.config.profile import MODELS
from firmware.fleet.manifest import Manifest, resolve

POP3_PORT = 1110
POP3S_PORT = 1995
HTTP_PORT = 8080
MOUNT = "/etc/dpfw/fleet"
SECRET_MOUNT = "/run/secrets/dpfw"
DATA = "/data"
PLACEHOLDER = "REPLACE-ME-with-the-admin-password"  # `fleet device` refuses to use it

_PROBE = (
    "import base64, urllib.request as u; "
    f"p = open('{SECRET_MOUNT}/admin-password').read().split(chr(10))[0].rstrip(chr(13)); "
    "a = base64.b64encode(('admin:' + p).encode()).decode(); "
    f"u.urlopen(u.Request('http://127.0.0.1:{HTTP_PORT}/api/v1/status', "
    "headers={'Authorization': 'Basic ' + a}), timeout=3)"
)


def files_of(manifest: Manifest) -> dict[str, str]:
    """Relative path (as the manifest writes it) -> the files the pods need beside the
    manifest: a template profile file and fault scenario files."""
    names = [manifest.faults, *(d.faults for d in manifest.devices.values())]
    if manifest.template.upper() not in MODELS:
        names.append(manifest.template)
    return {name: name for name in names if name is not None}


def objects(
    manifest: Manifest,
    manifest_text: str,
    files: Mapping[str, str],
    *,
    image: str,
    storage: str = "",
    namespace: str = "",
) -> list[dict[str, Any]]:
    """The Secret, ConfigMap, headless Service and StatefulSet, as plain data.

    `files` maps each relative path the manifest names to that file's text. `storage` is
    the size of each volume (Kubernetes quantity); default the image's flash + 25 %.
    """
    name = manifest.name
    labels = {"app.kubernetes.io/name": "dpfw", "app.kubernetes.io/instance": name}
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if namespace:
        meta["namespace"] = namespace

    def named(suffix: str) -> dict[str, Any]:
        return {**meta, "name": f"{name}{suffix}"}

    keys = {path: _key(path) for path in files}
    config_data = {"fleet.toml": manifest_text, **{keys[p]: text for p, text in files.items()}}
    items = [{"key": "fleet.toml", "path": "fleet.toml"}] + [
        {"key": keys[p], "path": str(PurePosixPath(p))} for p in sorted(files)
    ]
    ports = [{"name": "pop3", "containerPort": POP3_PORT, "protocol": "TCP"}]
    args = [
        f"{MOUNT}/fleet.toml",
        '"${HOSTNAME##*-}"',
        f"--image {DATA}/board.img",
        f"--pop3 0.0.0.0:{POP3_PORT}",
    ]
    if manifest.pop3s_base_port:
        ports.append({"name": "pop3s", "containerPort": POP3S_PORT, "protocol": "TCP"})
        args.append(f"--pop3s 0.0.0.0:{POP3S_PORT}")
    ports.append({"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"})
    args += [
        f"--http 0.0.0.0:{HTTP_PORT} --http-insecure",
        f"--admin-password-file {SECRET_MOUNT}/admin-password",
    ]
    size = storage or f"{math.ceil(manifest.flash_mib * 1.25)}Mi"
    container = {
        "name": "dpfw",
        "image": image,
        "command": ["/bin/sh", "-c", "exec dpfw fleet device " + " ".join(args)],
        "ports": ports,
        "readinessProbe": {
            "exec": {"command": ["python3", "-c", _PROBE]},
            "initialDelaySeconds": 2,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
        },
        "resources": {"requests": {"cpu": "20m", "memory": "64Mi"}},
        "volumeMounts": [
            {"name": "data", "mountPath": DATA},
            {"name": "manifest", "mountPath": MOUNT, "readOnly": True},
            {"name": "admin", "mountPath": SECRET_MOUNT, "readOnly": True},
        ],
    }
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta,
        "spec": {
            "serviceName": name,
            "replicas": manifest.count,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": {"runAsUser": 10001, "fsGroup": 10001},
                    "terminationGracePeriodSeconds": 15,
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "manifest",
                            "configMap": {"name": f"{name}-manifest", "items": items},
                        },
                        {"name": "admin", "secret": {"secretName": f"{name}-admin"}},
                    ],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data", "labels": labels},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": size}},
                    },
                }
            ],
        },
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": named("-admin"),
            "type": "Opaque",
            "stringData": {"admin-password": PLACEHOLDER},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": named("-manifest"),
            "data": config_data,
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {
                "clusterIP": "None",
                "selector": labels,
                "ports": [
                    {"name": p["name"], "port": p["containerPort"], "protocol": "TCP"}
                    for p in ports
                ],
            },
        },
        statefulset,
    ]


def _key(path: str) -> str:
    """A ConfigMap key for a relative path (keys allow [-._a-zA-Z0-9] only)."""
    return "".join(ch if ch.isalnum() or ch in "-._" else "_" for ch in path)


def render_yaml(
    manifest: Manifest,
    manifest_text: str,
    *,
    image: str,
    storage: str = "",
    namespace: str = "",
    read: Any = None,
) -> str:
    """The YAML stream `dpfw fleet k8s` prints (reads the files the manifest names)."""
    files = {rel: (read or _read)(resolve(manifest, rel)) for rel in files_of(manifest)}
    docs = objects(
        manifest, manifest_text, files, image=image, storage=storage, namespace=namespace
    )
    head = (
        f"# dpfw fleet {manifest.name}: {manifest.count} devices (dpfw fleet k8s; docs/fleet.md)\n"
        f"# Replace {PLACEHOLDER} in the Secret with the admin password before applying.\n"
    )
    return head + "".join("---\n" + to_yaml(doc) for doc in docs)


def _read(path: Path) -> str:
    return path.read_text("utf-8")


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for dicts, lists, str, int, float, bool and None; strings as JSON
    strings (valid YAML double-quoted scalars); multi-line strings as literal blocks."""
    lines: list[str] = []
    _emit(value, indent, lines)
    return "\n".join(lines) + "\n"


def _scalar(value: Any) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, int | float):
        return json.dumps(value)
    assert isinstance(value, str), value
    return json.dumps(value, ensure_ascii=True)


def _emit(value: Any, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, Mapping):
        for key, item in value.items():
            head = f"{pad}{_scalar(str(key)) if not _plain_key(str(key)) else key}:"
            _item(head, item, indent, lines)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        for item in value:
            if isinstance(item, Mapping) and item:
                sub: list[str] = []
                _emit(item, indent + 2, sub)
                sub[0] = f"{pad}- " + sub[0][indent + 2 :]
                lines += sub
            else:
                _item(f"{pad}-", item, indent, lines)
    else:
        lines.append(pad + _scalar(value))


def _item(head: str, item: Any, indent: int, lines: list[str]) -> None:
    nested = isinstance(item, Mapping) or (isinstance(item, Sequence) and not isinstance(item, str))
    if nested and item:
        lines.append(head)
        _emit(item, indent + 2, lines)
    elif isinstance(item, Mapping):
        lines.append(f"{head} {{}}")
    elif isinstance(item, Sequence) and not isinstance(item, str):
        lines.append(f"{head} []")
    elif isinstance(item, str) and "\n" in item and item.endswith("\n") and _printable(item):
        lines.append(f"{head} |")
        lines += [(" " * (indent + 2) + line) if line else "" for line in item[:-1].split("\n")]
    else:
        lines.append(f"{head} {_scalar(item)}")


def _plain_key(key: str) -> bool:
    return bool(key) and all(ch.isalnum() or ch in "-._/" for ch in key) and key[0].isalpha()


def _printable(text: str) -> bool:
    """A literal block (`|`) keeps text as is only for printable text (tabs allowed) that ends
    in exactly one newline and whose first line does not start with a space."""
    return (
        all(ch.isprintable() or ch in "\n\t" for ch in text)
        and not text.startswith(" ")
        and not text.endswith("\n\n")
        and all(line == line.rstrip() for line in text.split("\n"))
    )
