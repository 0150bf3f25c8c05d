"""Inspecting many images at once (planning a family asks about every image in one call)."""

from __future__ import annotations

import secrets

from live_services import BASE_IMAGE

from lowbuild.engines.base import Engine


def test_inspecting_many_refs_matches_inspecting_each(engine: Engine) -> None:
    absent = [f"localhost/lowbuild-test/absent-{secrets.token_hex(4)}:{i}" for i in range(3)]
    refs = [absent[0], BASE_IMAGE, absent[1], BASE_IMAGE, absent[2]]

    found = engine.inspect_images(refs)

    assert set(found) == set(refs)
    assert [found[ref] for ref in absent] == [None, None, None]
    base = found[BASE_IMAGE]
    single = engine.inspect_image(BASE_IMAGE)
    assert base is not None and single is not None
    assert base.id == single.id


def test_inspecting_only_missing_refs_gives_none_for_each(engine: Engine) -> None:
    absent = [f"localhost/lowbuild-test/absent-{secrets.token_hex(4)}:{i}" for i in range(2)]
    assert engine.inspect_images(absent) == dict.fromkeys(absent)
