"""Signing pushed images by digest: GPG "simple signing", as the containers tools do it.

Who signs what:

* podman: its own `push --sign-by` (and `--sign-passphrase-file`), for an image's first
  tag. Its push writes the digest's whole list of signatures, so the other tags are
  signed by skopeo, which adds to the list the registry's lookaside already holds.
* buildah: the same, with `buildah push --sign-by`; buildah has no passphrase flag, so
  with a passphrase file skopeo signs the first tag too.
* docker, buildx: neither has signing of its own here (Docker Content Trust needs a
  Notary server), so skopeo signs the image the registry now holds, by its digest.
* manifest lists (multi-platform images): skopeo, on every engine.

skopeo signs "in place": it copies `repository@digest` onto itself with `--sign-by` and
`--sign-identity repository:tag`, preserving digests. Nothing is uploaded again, no tag
moves; only the signature is written. A list's instances are signed for the list's tags
too: a policy checks the platform's image it pulls through the list against the
reference pulled.

Signatures go where the containers tools' registries.d configuration says
(`lookaside-staging:` for the registry): the user's (`~/.config/containers/registries.d`)
or the system's (`/etc/containers/registries.d`). sigstore signing is compiled out of
Debian's podman and skopeo; lowbuild asks for GPG signing only.

The key is the fingerprint of a secret key in the user's GPG keyring ($GNUPGHOME), and a
passphrase is read by the engine from a file: lowbuild never reads, prints or logs it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from lowbuild.engines.base import LogSink, Signer
from lowbuild.engines.commands import run_command, run_scratch
from lowbuild.errors import EngineUnavailable, UsageError

SKOPEO = "skopeo"
# Reading back the image lowbuild has just pushed, pinned by digest, to sign it: whatever
# the user's policy.json demands of pulls (it may require signatures: not there yet).
_ACCEPT_POLICY = {"default": [{"type": "insecureAcceptAnything"}]}


def check_signer(signer: Signer) -> None:
    """UsageError before anything is pushed: the key is not a secret key of the keyring,
    the passphrase file cannot be read, or skopeo is missing."""
    if signer.passphrase_file is not None and not signer.passphrase_file.is_file():
        raise UsageError(f"--sign-passphrase-file: {signer.passphrase_file} is not a file")
    gpg = shutil.which("gpg")
    if gpg is None:
        raise UsageError("signing needs gpg (Debian: apt-get install gnupg); it is not installed")
    found = run_command(
        [gpg, "--batch", "--list-secret-keys", "--with-colons", signer.key], check=False
    )
    if found.returncode != 0:
        raise UsageError(
            f"--sign-by {signer.key}: no such secret key in the GPG keyring "
            "($GNUPGHOME, else ~/.gnupg); `gpg --list-secret-keys` lists them"
        )
    if shutil.which(SKOPEO) is None:
        raise UsageError(
            "signing needs skopeo (it signs each tag after the first, manifest lists, and "
            "for docker and buildx, which have no signing of their own): apt-get install skopeo"
        )


def sign_in_registry(
    repository: str,
    digest: str,
    tags: list[str],
    signer: Signer,
    *,
    tls_verify: bool,
    log: LogSink | None = None,
    manifest_list: bool = False,
) -> None:
    """Sign `repository@digest` (already in the registry) for each of `tags`, with skopeo:
    each tag gets a signature naming it (what a policy's default `matchRepoDigestOrExact`
    checks against the reference pulled)."""
    if shutil.which(SKOPEO) is None:
        raise EngineUnavailable("skopeo is not installed: it signs what the engine pushed")
    tls = str(tls_verify).lower()
    with tempfile.TemporaryDirectory(prefix="sign-", dir=run_scratch()) as scratch:
        policy = Path(scratch) / "policy.json"
        policy.write_text(json.dumps(_ACCEPT_POLICY))
        for tag in tags:
            argv: list[str] = [SKOPEO, "--policy", str(policy), "copy", "--preserve-digests"]
            argv += [f"--src-tls-verify={tls}", f"--dest-tls-verify={tls}"]
            if manifest_list:
                argv += ["--multi-arch", "index-only"]
            argv += [*signer.push_flags(), "--sign-identity", f"{repository}:{tag}"]
            # onto itself, by digest: no tag moves (an instance of a list is signed for the
            # list's tags, which must keep naming the list)
            argv += [f"docker://{repository}@{digest}"] * 2
            run_command(argv, log=log, merge_output=True)


def on_loopback(reference: str) -> bool:
    """Whether `reference`'s registry host is this machine's loopback, which dockerd
    talks to in plain http without being told (its default insecure registries)."""
    host = reference.split("/", 1)[0]
    if host.startswith("["):
        return host.partition("]")[0] == "[::1"
    name = host.rpartition(":")[0] if ":" in host else host
    return name == "localhost" or name.startswith("127.")
