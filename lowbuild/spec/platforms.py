"""Platforms (`linux/arm64`): how a spec names them, and how lowbuild names what it
builds for each.

A family that declares `platforms:` is built once per (image, platform): each such
build is a *variant*, keyed `<image>@<os>-<arch>[-<variant>]` (a key that is also a
file name) and tagged `<namespace>/<image>:<tag>-<os>-<arch>`. The variant for the
platform of the machine lowbuild runs on also gets the image's own tags, so that
`podman run <namespace>/<image>:<tag>` runs the native one; the manifest list that joins
them is made where it can be pushed (run/publish.py).
"""

from __future__ import annotations

import platform as _host
import re

KNOWN_ARCHITECTURES = ("amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "mips64le")
"""The architectures a platform may name: those Debian's qemu-user-static emulates and
the registries' manifest lists know."""
KNOWN_VARIANTS = {"arm": ("v5", "v6", "v7"), "arm64": ("v8",)}
_PLATFORM = re.compile(r"^(?P<os>[a-z0-9]+)/(?P<arch>[a-z0-9]+)(/(?P<variant>[a-z0-9]+))?$")

# uname -m → the OCI architecture name
_MACHINES = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "i686": "386",
    "i386": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}

# The qemu-user binary (and binfmt_misc handler name) that runs each architecture.
QEMU_NAMES = {
    "amd64": "x86_64",
    "arm64": "aarch64",
    "arm": "arm",
    "386": "i386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips64le": "mips64el",
}


def native_platform() -> str:
    """The platform of the machine lowbuild runs on, e.g. `linux/amd64`."""
    machine = _host.machine().lower()
    return f"linux/{_MACHINES.get(machine, machine)}"


def platform_problem(text: str) -> str | None:
    """Why `text` is not a platform lowbuild can build for (None: it is one)."""
    found = _PLATFORM.match(text)
    if found is None:
        return f"platform {text!r} is not OS/ARCH[/VARIANT], e.g. linux/arm64"
    if found["os"] != "linux":
        return f"platform {text!r}: only linux images can be built (not {found['os']})"
    arch, variant = found["arch"], found["variant"]
    if arch not in KNOWN_ARCHITECTURES:
        return (
            f"platform {text!r}: unknown architecture {arch!r}; known: "
            f"{', '.join(KNOWN_ARCHITECTURES)}"
        )
    if variant is not None and variant not in KNOWN_VARIANTS.get(arch, ()):
        known = ", ".join(KNOWN_VARIANTS.get(arch, ())) or "none"
        return f"platform {text!r}: unknown variant {variant!r} of {arch} (known: {known})"
    return None


def architecture(platform: str) -> str:
    """`linux/arm64/v8` → `arm64`."""
    return platform.split("/")[1]


def suffix(platform: str) -> str:
    """`linux/arm64` → `linux-arm64`: how a platform appears in a tag or a variant key."""
    return platform.replace("/", "-")


def variant_key(image: str, platform: str) -> str:
    """The plan's name of `image` built for `platform`: `web@linux-arm64`."""
    return f"{image}@{suffix(platform)}"


def split_key(key: str) -> tuple[str, str | None]:
    """A plan name → (image name, platform or None): `web@linux-arm64` → (web, linux/arm64)."""
    image, at, rest = key.partition("@")
    return (image, rest.replace("-", "/")) if at else (key, None)


def variant_ref(ref: str, platform: str) -> str:
    """`ref` with the platform appended to its tag: `x/web:1` → `x/web:1-linux-arm64`
    (no tag: `latest`). How variants are tagged, and where a base's image for a foreign
    platform is looked for unless `bases:` names it."""
    name, tag = ref, "latest"
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = ref.rsplit(":", 1)
    return f"{name}:{tag}-{suffix(platform)}"
