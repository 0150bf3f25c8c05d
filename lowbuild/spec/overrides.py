"""`--set` overrides for one run, the way `docker buildx bake --set` works: change an
image's build args or tags without editing image.yaml. They change the image's inputs
like an edit would, so `plan` and the fingerprints see them.

    --set web.args.NGINX_VERSION=1.24.0   one build arg of one image (added or replaced)
    --set '*.args.HTTP_PROXY=http://p:3128' the same build arg for every image
    --set web.tags=1.24,stable             the image's extra tags, replaced
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from lowbuild.errors import UsageError, did_you_mean
from lowbuild.spec.load import ARG_NAME_PATTERN, TAG_PATTERN
from lowbuild.spec.model import ImageSpec, Project

FIELDS = ("args", "tags")


def apply_overrides(project: Project, settings: Sequence[str]) -> Project:
    """`project` with every `TARGET.FIELD[.KEY]=VALUE` of `settings` applied, in order;
    a UsageError (exit 2) naming the setting for anything that cannot be applied."""
    images = {spec.name: spec for spec in project.images}
    for setting in settings:
        target, field, key, value = _parse(setting, images)
        names = list(images) if target == "*" else [target]
        for name in names:
            images[name] = _apply(images[name], field, key, value)
    return dataclasses.replace(project, images=tuple(images[spec.name] for spec in project.images))


def _parse(setting: str, images: dict[str, ImageSpec]) -> tuple[str, str, str, str]:
    where, equals, value = setting.partition("=")
    if not equals:
        raise UsageError(f"--set {setting!r}: expected TARGET.FIELD[.KEY]=VALUE")
    target, _, rest = where.partition(".")
    field, _, key = rest.partition(".")
    if target != "*" and target not in images:
        hint = did_you_mean(target, images)
        raise UsageError(f"--set {setting!r}: no image named {target!r}{hint} (or `*` for all)")
    if field not in FIELDS:
        raise UsageError(
            f"--set {setting!r}: cannot set {field or 'nothing'!r}{did_you_mean(field, FIELDS)}; "
            "one of: args.NAME, tags"
        )
    if field == "args" and not ARG_NAME_PATTERN.match(key):
        raise UsageError(f"--set {setting!r}: {key!r} is not a build arg name (args.NAME)")
    if field == "tags" and key:
        raise UsageError(f"--set {setting!r}: tags takes no key (tags=a,b)")
    return target, field, key, value


def _apply(spec: ImageSpec, field: str, key: str, value: str) -> ImageSpec:
    if field == "args":
        args = dict(spec.args)
        args[key] = value
        return dataclasses.replace(spec, args=tuple(sorted(args.items())))
    tags = tuple(tag.strip() for tag in value.split(",") if tag.strip())
    bad = [tag for tag in tags if not TAG_PATTERN.match(tag)]
    if bad:
        raise UsageError(f"--set {spec.name}.tags={value}: {bad[0]!r} is not a valid image tag")
    return dataclasses.replace(spec, tags=tags)
