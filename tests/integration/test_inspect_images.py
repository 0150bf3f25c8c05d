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


def test_a_family_larger_than_one_batch_is_paired_ref_by_ref(engine: Engine) -> None:
    # 450 refs: three `image inspect` calls, sent side by side; the image present sits
    # in the second and the last of them, and every answer must land on its own ref.
    token = secrets.token_hex(4)
    refs = [f"localhost/lowbuild-test/absent-{token}:{i}" for i in range(448)]
    refs[250:250] = [BASE_IMAGE]
    refs.append(BASE_IMAGE)
    refs.append(f"localhost/lowbuild-test/absent-{token}:last")

    found = engine.inspect_images(refs)

    assert set(found) == set(refs) and len(found) == 450
    single = engine.inspect_image(BASE_IMAGE)
    assert single is not None
    assert found[BASE_IMAGE] is not None and found[BASE_IMAGE].id == single.id
    assert {ref for ref, info in found.items() if info is not None} == {BASE_IMAGE}
