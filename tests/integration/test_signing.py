"""`lowbuild push --sign`, end to end, on every engine: a GPG key made by the test, the
signatures in a file lookaside the containers tools are pointed at (registries.d), and
a pull into a storage of its own whose policy.json requires that key.

The signed image is accepted; an unsigned one, and the signed one copied to another
repository (its signature with it), are refused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from json_outputs import conforming
from live_services import BASE_IMAGE, Registry
from test_multi_arch import _emulation_missing

from lowbuild.engines.base import Engine

KEY_PARAMS = """\
%no-protection
Key-Type: RSA
Key-Length: 2048
Key-Usage: sign
Name-Real: lowbuild signing test
Name-Email: signing@lowbuild.invalid
Expire-Date: 0
%commit
"""


@dataclass
class Signing:
    root: Path
    namespace: str
    env: dict[str, str]  # GNUPGHOME and a HOME whose registries.d names the lookaside
    key: str
    public_key: Path
    tmp: Path
    verify: Path  # the verifying storage (short: podman takes no runroot over 50 characters)

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=600
        )

    def lowbuild(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-m", "lowbuild", *args)

    def signed_push(
        self, engine: Engine, prefix: str, *flags: str, key: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`lowbuild push --sign` of the family to `prefix` (plain http)."""
        to = ("--engine", engine.name, "--to", prefix, "--no-tls-verify")
        return self.lowbuild("push", *to, "--sign", "--sign-by", key or self.key, *flags)

    def pull_requiring_the_key(
        self, registry: Registry, ref: str, *flags: str
    ) -> subprocess.CompletedProcess[str]:
        """A pull into a storage of its own, with a policy that accepts from the test
        registry only what the test key signed."""
        policy = self.tmp / "policy.json"
        policy.write_text(
            json.dumps(
                {
                    "default": [{"type": "reject"}],
                    "transports": {
                        "docker": {
                            registry.host: [
                                {
                                    "type": "signedBy",
                                    "keyType": "GPGKeys",
                                    "keyPath": str(self.public_key),
                                }
                            ]
                        }
                    },
                }
            )
        )
        return self.run(
            "podman",
            "--root",
            str(self.verify / "root"),
            "--runroot",
            str(self.verify / "run"),
            "--storage-driver",
            "vfs",
            "pull",
            "--tls-verify=false",
            "--signature-policy",
            str(policy),
            *flags,
            ref,
        )


@pytest.fixture
def signing(tmp_path: Path, registry: Registry, engine: Engine) -> Iterator[Signing]:
    if engine.inspect_image(BASE_IMAGE) is None:
        pytest.fail(f"{BASE_IMAGE} is missing: run `bash scripts/provision.sh`", pytrace=False)
    gnupg = tmp_path / "gnupg"
    gnupg.mkdir(mode=0o700)
    home = tmp_path / "home"
    registries_d = home / ".config" / "containers" / "registries.d"
    registries_d.mkdir(parents=True)
    lookaside = tmp_path / "signatures"
    lookaside.mkdir()
    (registries_d / "lowbuild-test.yaml").write_text(
        f"docker:\n  {registry.host}:\n"
        f"    lookaside: file://{lookaside}\n    lookaside-staging: file://{lookaside}\n"
    )
    env = {**os.environ, "GNUPGHOME": str(gnupg), "HOME": str(home)}
    verify = Path(tempfile.mkdtemp(prefix="lbsig-"))
    namespace = f"lbsign{uuid.uuid4().hex[:8]}"
    root = tmp_path / "family"
    context = root / "contexts" / "app"
    context.mkdir(parents=True)
    (root / "lowbuild.yaml").write_text(f"name: signed\nnamespace: {namespace}\ntag: '1'\n")
    (context / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\nRUN echo app > /etc/app\n")
    (context / "image.yaml").write_text("name: app\ntags: ['1.0']\n")
    try:
        subprocess.run(
            ["gpg", "--batch", "--gen-key"],
            input=KEY_PARAMS,
            env=env,
            text=True,
            capture_output=True,
            check=True,
            timeout=120,
        )
        listed = subprocess.run(
            ["gpg", "--batch", "--list-secret-keys", "--with-colons"],
            env=env,
            text=True,
            capture_output=True,
            check=True,
        ).stdout
        key = next(line.split(":")[9] for line in listed.splitlines() if line.startswith("fpr:"))
        public = tmp_path / "public.asc"
        exported = subprocess.run(
            ["gpg", "--batch", "--armor", "--export", key], env=env, capture_output=True, check=True
        )
        public.write_bytes(exported.stdout)
        made = Signing(
            root,
            namespace,
            {**env, "LOWBUILD_CACHE": str(tmp_path / "cache")},
            key,
            public,
            tmp_path,
            verify,
        )
        yield made
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=env, check=False, timeout=60)
        ref = f"{namespace}/app:1"
        if engine.inspect_image(ref) is not None:
            engine.remove_image(ref, force=True)
        subprocess.run(
            [
                "podman",
                "--root",
                str(verify / "root"),
                "--runroot",
                str(verify / "run"),
                "--storage-driver",
                "vfs",
                "system",
                "reset",
                "-f",
            ],
            capture_output=True,
            check=False,
            timeout=120,
        )
        shutil.rmtree(verify, ignore_errors=True)


def test_a_signed_push_is_accepted_by_a_policy_requiring_the_key_and_nothing_else(
    signing: Signing, registry: Registry, engine: Engine
) -> None:
    built = signing.lowbuild("build", "--engine", engine.name, "--no-sbom")
    assert built.returncode == 0, built.stderr[-2000:]
    prefix = f"{registry.host}/{signing.namespace}"

    # a key the keyring does not hold: refused before anything is pushed
    wrong = signing.signed_push(engine, prefix, key="0123456789ABCDEF0123456789ABCDEF01234567")
    assert wrong.returncode == 2 and "no such secret key" in wrong.stderr
    assert registry.tags(f"{signing.namespace}/app") == []

    pushed = signing.signed_push(engine, prefix, "--json")
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    (record,) = conforming("push", pushed.stdout)
    assert record["signed_by"] == signing.key

    for tag in ("1", "1.0"):  # each tag carries a signature naming it
        accepted = signing.pull_requiring_the_key(registry, f"{prefix}/app:{tag}")
        assert accepted.returncode == 0, accepted.stderr
    by_digest = signing.pull_requiring_the_key(registry, record["ref"])
    assert by_digest.returncode == 0, by_digest.stderr

    # the same image pushed unsigned elsewhere: refused
    unsigned = f"{registry.host}/{signing.namespace}-unsigned"
    plain = signing.lowbuild("push", "--engine", engine.name, "--to", unsigned, "--no-tls-verify")
    assert plain.returncode == 0, plain.stderr[-2000:]
    refused = signing.pull_requiring_the_key(registry, f"{unsigned}/app:1")
    assert refused.returncode != 0
    assert "A signature was required, but no signature exists" in refused.stderr

    # the signed image copied, signature and all, to another repository: refused
    moved = f"{registry.host}/{signing.namespace}/moved:1"
    accept_all = signing.tmp / "accept.json"
    accept_all.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    copied = signing.run(
        "skopeo",
        "--policy",
        str(accept_all),
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        f"docker://{prefix}/app:1",
        f"docker://{moved}",
    )
    assert copied.returncode == 0, copied.stderr
    refused = signing.pull_requiring_the_key(registry, moved)
    assert refused.returncode != 0 and "is not accepted" in refused.stderr


@pytest.mark.parametrize("engine", ["podman", "buildah"], indirect=True)
def test_a_key_with_a_passphrase_signs_from_a_file_and_the_passphrase_is_never_shown(
    signing: Signing, registry: Registry, engine: Engine
) -> None:
    secret = f"pass-{uuid.uuid4().hex}"
    subprocess.run(
        ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", secret, "--gen-key"],
        input=KEY_PARAMS.replace("%no-protection\n", "").replace("signing@", "protected@"),
        env=signing.env,
        text=True,
        capture_output=True,
        check=True,
        timeout=120,
    )
    listed = signing.run("gpg", "--batch", "--list-secret-keys", "--with-colons", "protected@")
    key = next(line.split(":")[9] for line in listed.stdout.splitlines() if line.startswith("fpr:"))
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=signing.env, check=False)
    good, bad = signing.tmp / "passphrase", signing.tmp / "wrong"
    good.write_text(secret + "\n")
    bad.write_text("not-it\n")
    assert signing.lowbuild("build", "--engine", engine.name, "--no-sbom").returncode == 0
    prefix = f"{registry.host}/{signing.namespace}"
    refused = signing.signed_push(engine, prefix, "--sign-passphrase-file", str(bad), key=key)
    assert refused.returncode == 1
    assert "passphrase" in refused.stderr.lower()
    signed = signing.signed_push(engine, prefix, "--sign-passphrase-file", str(good), key=key)
    assert signed.returncode == 0, signed.stderr[-2000:]
    logs = "".join(p.read_text() for p in (signing.root / ".lowbuild" / "logs").rglob("*.log"))
    assert secret not in signed.stdout + signed.stderr + refused.stderr + logs

    exported = signing.run("gpg", "--batch", "--armor", "--export", key)
    signing.public_key.write_text(exported.stdout)  # the policy now requires this key
    accepted = signing.pull_requiring_the_key(registry, f"{prefix}/app:1.0")
    assert accepted.returncode == 0, accepted.stderr


@pytest.mark.skipif(_emulation_missing() is not None, reason=str(_emulation_missing()))
@pytest.mark.parametrize("engine", ["podman", "docker"], indirect=True)
def test_a_multi_platform_image_is_signed_as_a_list_and_per_platform(
    signing: Signing, registry: Registry, engine: Engine
) -> None:
    (signing.root / "lowbuild.yaml").write_text(
        f"name: signed\nnamespace: {signing.namespace}\ntag: '1'\n"
        "platforms: [linux/amd64, linux/arm64]\n"
    )
    built = signing.lowbuild("build", "--engine", engine.name, "--no-sbom")
    assert built.returncode == 0, built.stderr[-2000:]
    prefix = f"{registry.host}/{signing.namespace}"
    pushed = signing.signed_push(engine, prefix, "--json")
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    records = {r["image"]: r for r in conforming("push", pushed.stdout)}
    assert records["app"]["platforms"] and records["app"]["signed_by"] == signing.key
    for platform in ("linux/amd64", "linux/arm64"):  # through the list, for the list's tag
        accepted = signing.pull_requiring_the_key(
            registry, f"{prefix}/app:1.0", "--platform", platform
        )
        assert accepted.returncode == 0, (platform, accepted.stderr)
    # the tag still names the list: signing moved no tag
    assert set(registry.tags(f"{signing.namespace}/app")) == {
        "1",
        "1.0",
        "1-linux-amd64",
        "1-linux-arm64",
        "1.0-linux-amd64",
        "1.0-linux-arm64",
    }
