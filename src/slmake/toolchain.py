"""Versions of the packages a target uses, for manifests and `slmake targets`."""

from __future__ import annotations

from importlib import metadata


def versions(packages) -> dict[str, str | None]:
    out = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
