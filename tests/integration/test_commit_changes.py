"""A commit recipe's changes come out of every engine exactly as written: `image inspect`
of the committed image shows each ENV/LABEL pair, quotes, blanks, `=` and JSON verbatim,
and nothing of the working container (lowbuild's ownership label, podman's environment)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable

import pytest

from lowbuild.engines.base import OWNED_LABEL, CommitRequest, Engine, RecipeRequest, ShellStep
from lowbuild.engines.changes import label_change

pytestmark = pytest.mark.engine

# buildah stamps every image it writes with its version (builds too); not the recipe's.
ENGINE_STAMPS = {"io.buildah.version"}

# Shaped like lowbuild's own lowbuild.inputs label: compact JSON with quotes and blanks.
INPUTS_JSON = json.dumps(
    {"v": 1, "files": {"site/index page.html": "ab12"}, "args": {"Q": 'say "hi"'}},
    separators=(",", ":"),
)


def test_commit_recipe_changes_round_trip_exactly_on_every_engine(
    engine: Engine, base_image: str, image_refs: Callable[[str], str]
) -> None:
    ref = image_refs("exact-changes")
    changes = [
        "ENV A=1 B=2",
        """ENV SPACED="  two  words " EQ=k=v=w SQ='it"s' DQ="say \\"hi\\"" DOLLAR="\\$HOME\"""",
        """LABEL a=1 b=2 "with space"="x y" quoted='it''s' json='{"k": "v w"}' nö=✓""",
        label_change("lowbuild.inputs", INPUTS_JSON),
        'ENTRYPOINT ["/bin/sh", "-c", "exec \\"$@\\"", "--"]',
        'CMD ["sh", "-c", "printf \'%s|\' \\"$SPACED\\" \\"$DOLLAR\\" '
        '\\"$(pwd)\\" \\"$(id -u)\\""]',
        "EXPOSE 8080 53/udp",
        "USER 1000:1000",
        "WORKDIR /srv",
    ]
    engine.commit_steps(
        RecipeRequest(
            base=base_image,
            steps=[ShellStep("mkdir -p /srv && chown 1000:1000 /srv")],
            commit=CommitRequest(ref=ref, changes=changes),
            network="none",
        )
    )
    base = engine.inspect_image(base_image)
    info = engine.inspect_image(ref)
    assert base is not None and info is not None
    # Exactly the base's environment plus the recipe's: one variable per pair, values
    # verbatim, and no `container=podman` / `TERM` from the working container.
    assert info.env == (
        *base.env,
        "A=1",
        "B=2",
        "SPACED=  two  words ",
        "EQ=k=v=w",
        'SQ=it"s',
        'DQ=say "hi"',
        "DOLLAR=$HOME",
    )
    assert not any(e.startswith(("container=", "TERM=")) for e in info.env)
    labels = {k: v for k, v in info.labels.items() if k not in ENGINE_STAMPS}
    assert labels == {
        **base.labels,
        "a": "1",
        "b": "2",
        "with space": "x y",
        "quoted": "its",  # 'it''s' is two single-quoted words run together, as in a shell
        "json": '{"k": "v w"}',
        "nö": "✓",
        "lowbuild.inputs": INPUTS_JSON,
    }
    assert OWNED_LABEL not in info.labels
    assert json.loads(info.labels["lowbuild.inputs"]) == json.loads(INPUTS_JSON)
    assert info.entrypoint == ("/bin/sh", "-c", 'exec "$@"', "--")
    assert info.cmd == ("sh", "-c", """printf '%s|' "$SPACED" "$DOLLAR" "$(pwd)" "$(id -u)\"""")
    assert info.exposed_ports == ("53/udp", "8080/tcp")
    assert info.user == "1000:1000"
    assert info.workdir == "/srv"
    # And the image runs with them: entrypoint, command, environment, directory and user.
    code, output = engine.run_once(image=ref, command=[])
    assert (code, output) == (0, "  two  words |$HOME|/srv|1000|"), output


def test_commit_recipe_leaves_no_working_container_behind(
    engine: Engine, base_image: str, image_refs: Callable[[str], str]
) -> None:
    # The working container carries no lowbuild.owned label (it would be committed), so
    # the session's label check cannot see it: find it by the hostname its step printed.
    lines: list[str] = []
    recipe = RecipeRequest(
        base=base_image,
        steps=[ShellStep("hostname")],
        commit=CommitRequest(ref=image_refs("no-leftover")),
        network="none",
    )
    engine.commit_steps(recipe, log=lines.append)
    short_ids = [line for line in lines if re.fullmatch(r"[0-9a-f]{12}", line.strip())]
    assert len(short_ids) == 1, lines  # the engines name a container's host by its ID
    assert not [cid for cid in _every_container(engine) if cid.startswith(short_ids[0].strip())]


def _every_container(engine: Engine) -> list[str]:
    """Full IDs of all the engine's containers, buildah's working containers included
    (podman lists those with --external)."""
    on_docker = engine.name in {"docker", "buildx"}
    argv = ["docker", "ps"] if on_docker else ["podman", "ps", "--external"]
    listed = subprocess.run(
        [*argv, "--all", "--quiet", "--no-trunc"], check=True, capture_output=True, text=True
    )
    return listed.stdout.split()
