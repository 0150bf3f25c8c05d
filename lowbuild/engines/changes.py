"""Dockerfile `changes` applied at commit time, written out in what each engine parses.

The engines do not parse the same language:
  * `docker commit --change` runs each line through the Dockerfile parser: several
    pairs per ENV/LABEL, quotes and backslashes as in a Dockerfile, `$VAR` expanded.
  * `podman commit --change` parses one `KEY=VALUE` per change: it splits at the first
    `=` and strips one pair of outer double quotes, nothing else (containers/common
    libimage/image_config.go, ImageConfigFromChanges; its `=` splitting also bit
    https://github.com/podman-container-tools/podman/issues/5148). `ENV A=1 B=2` passed
    through becomes one variable `A` worth `1 B=2`; a JSON label keeps its backslashes.
  * `buildah commit` has no --change; `buildah config` takes one flag per setting, expands
    `$VAR` in --env values (cmd/buildah/config.go, updateConfig) and splits --volume and
    --onbuild at commas: they are string slices, read as CSV (the same cause as
    https://github.com/podman-container-tools/buildah/issues/1603 for --label).
So a change is parsed once, with the Dockerfile's rules, into literal values
(lowbuild/spec/changes.py, when the spec is loaded), and each engine gets those values
here in its own syntax.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lowbuild.spec.changes import (
    Change,
    env_pairs,
    exec_form,
    label_pairs,
    literal,
    ports,
    volumes,
)


def dockerfile_word(text: str) -> str:
    """`text` as one double-quoted Dockerfile word: literal, no variable expansion."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def label_line(labels: Mapping[str, str]) -> str:
    """One LABEL instruction that reads back as exactly `labels` (no expansion)."""
    return "LABEL " + " ".join(
        f"{dockerfile_word(k)}={dockerfile_word(v)}" for k, v in labels.items()
    )


def label_change(key: str, value: str) -> str:
    """A LABEL change that reads back as exactly (key, value)."""
    return label_line({key: value})


@dataclass(frozen=True)
class _Setting:
    """One literal setting: ENV/LABEL `key` and `value`; CMD/ENTRYPOINT `words`; EXPOSE
    (one port), VOLUME (one path), USER, WORKDIR and ONBUILD `value`."""

    instruction: str
    value: str = ""
    key: str = ""
    words: tuple[str, ...] = ()


def _settings(changes: Sequence[Change]) -> list[_Setting]:
    """Each change as literal settings, one per ENV/LABEL pair, EXPOSE port, VOLUME path."""
    settings: list[_Setting] = []
    for change in changes:
        what = change.instruction
        match what:
            case "CMD" | "ENTRYPOINT":
                settings.append(_Setting(what, words=tuple(exec_form(change))))
            case "ENV" | "LABEL":
                pairs = env_pairs(change) if what == "ENV" else label_pairs(change)
                settings += [_Setting(what, key=k, value=v) for k, v in pairs]
            case "EXPOSE":
                settings += [_Setting(what, value=port) for port in ports(change)]
            case "VOLUME":
                settings += [_Setting(what, value=path) for path in volumes(change)]
            case "USER" | "WORKDIR":
                settings.append(_Setting(what, value=literal(change)))
            case _:
                settings.append(_Setting(what, value=change.argument))
    return settings


def _json(words: Sequence[str]) -> str:
    return json.dumps(list(words), ensure_ascii=False)


def docker_changes(changes: Sequence[Change]) -> list[str]:
    """`docker commit --change` lines: Dockerfile syntax, every value quoted literally."""
    lines = []
    for s in _settings(changes):
        match s.instruction:
            case "ENV":  # names are checked identifiers: nothing to quote
                lines.append(f"ENV {s.key}={dockerfile_word(s.value)}")
            case "LABEL":
                lines.append(label_change(s.key, s.value))
            case "CMD" | "ENTRYPOINT":
                lines.append(f"{s.instruction} {_json(s.words)}")
            case "VOLUME":
                lines.append(f"VOLUME {_json([s.value])}")
            case "USER" | "WORKDIR":
                lines.append(f"{s.instruction} {dockerfile_word(s.value)}")
            case _:
                lines.append(f"{s.instruction} {s.value}")
    return lines


def podman_changes(changes: Sequence[Change]) -> list[str]:
    """`podman commit --change` strings: one setting each, ENV/LABEL as `"key"="value"`.

    podman splits at the first `=` and strips exactly one pair of outer double quotes
    from key and value, so wrapping both in quotes keeps any value exact (blanks at
    either end, quotes, `=`, JSON); only a key holding `=` cannot be said, and the
    Dockerfile syntax cannot say that either.
    """
    out = []
    for s in _settings(changes):
        match s.instruction:
            case "ENV" | "LABEL":
                out.append(f'{s.instruction} "{s.key}"="{s.value}"')
            case "CMD" | "ENTRYPOINT":
                out.append(f"{s.instruction} {_json(s.words)}")
            case "VOLUME":
                out.append(f"VOLUME {_json([s.value])}")
            case _:
                out.append(f"{s.instruction} {s.value}")
    return out


def _csv_field(text: str) -> str:
    # buildah's --volume and --onbuild are string slices: pflag reads them as CSV, so a
    # comma would split one value in two unless the field is quoted.
    return '"' + text.replace('"', '""') + '"'


def buildah_config_args(changes: Sequence[Change]) -> list[str]:
    """`buildah config` flags with the effect of `changes` (buildah commit has no --change)."""
    flags = {
        "EXPOSE": "--port",  # with its protocol: buildah keeps a bare "80" as is
        "USER": "--user",
        "WORKDIR": "--workingdir",
    }
    args: list[str] = []
    for s in _settings(changes):
        match s.instruction:
            case "CMD":
                args += ["--cmd", json.dumps(list(s.words))]
            case "ENTRYPOINT":
                args += ["--entrypoint", json.dumps(list(s.words))]
            case "ENV":
                # buildah expands $NAME in --env values; `$$` is its spelling of `$`.
                args += ["--env", f"{s.key}={s.value.replace('$', '$$')}"]
            case "LABEL":
                args += ["--label", f"{s.key}={s.value}"]
            case "VOLUME" | "ONBUILD":
                args += [f"--{s.instruction.lower()}", _csv_field(s.value)]
            case _:
                args += [flags[s.instruction], s.value]
    return args
