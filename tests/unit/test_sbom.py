"""The SBOM and provenance of an image (run/sbom.py), from the facts a build gathers:
each SBOM valid against the official CycloneDX 1.6 schema, saying what it was given,
the same bytes for the same image."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from urllib.parse import unquote

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from lowbuild.run.sbom import (
    SLSA_PREDICATE,
    STATEMENT_TYPE,
    ArtifactFact,
    BuildRun,
    ImageFacts,
    ImageRef,
    OsPackage,
    PackageListing,
    PackFact,
    parse_package_listing,
    provenance_statement,
    render_sbom,
    sbom_digest,
)
from lowbuild.spec.versions import name_and_version

TAR_SHA = "58f9edb26bf3288f4b502658399281cc5d6478468bd178eafe579c8f41895854"
PACK_SHA = "c" * 64
PARENT_ID = "sha256:" + "d" * 64
BASE_ID = "sha256:" + "e" * 64
URL = "https://downloads.example/haproxy/haproxy-2.6.12.tar.gz"

DPKG_OUTPUT = (
    "WARN[0000] an engine warning on stderr\n"
    "@distro debian 12\n"
    "@manager dpkg\n"
    "@pkg ii \topenssl\t3.0.20-1~deb12u2\tamd64\n"
    "@pkg ii \tbase-files\t12.4+deb12u5\tamd64\n"
    "@pkg rc \tremoved-but-configured\t1.0\tamd64\n"
)


def facts(**changes: object) -> ImageFacts:
    made = ImageFacts(
        key="haproxy",
        name="haproxy",
        ref="lowbuild/haproxy:latest",
        version="2.6.12",
        project="seed",
        fingerprint="sha256:" + "a" * 64,
        created="2026-12-04T10:00:00Z",
        artifacts=(ArtifactFact("haproxy-2.6.12.tar.gz", TAR_SHA, (URL,)),),
        packs=(PackFact("code.tar.gz", "site/", PACK_SHA),),
        parents=(
            ImageRef("lowbuild/base:latest", PARENT_ID, digest="sha256:" + "f" * 64),
            ImageRef("localhost/lowbuild/bookworm:latest", BASE_ID, family=False),
        ),
        packages=parse_package_listing(DPKG_OUTPUT),
    )
    return dataclasses.replace(made, **changes)  # type: ignore[arg-type]


def document(image: ImageFacts) -> dict[str, object]:
    data = render_sbom(image)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(data.decode()) is None
    loaded: dict[str, object] = json.loads(data)
    return loaded


def components(doc: dict[str, object]) -> dict[str, dict[str, object]]:
    return {c["bom-ref"]: c for c in doc["components"]}  # type: ignore[attr-defined,index]


def test_dpkg_listing_keeps_installed_packages_and_ignores_other_lines() -> None:
    listing = parse_package_listing(DPKG_OUTPUT)
    assert listing.manager == "dpkg"
    assert (listing.distro, listing.distro_version) == ("debian", "12")
    assert listing.packages == (
        OsPackage("base-files", "12.4+deb12u5", "amd64"),
        OsPackage("openssl", "3.0.20-1~deb12u2", "amd64"),
    )


def test_rpm_and_apk_listings() -> None:
    rpm = parse_package_listing(
        "@distro fedora 40\n@manager rpm\n@pkg ii \tbash\t5.2.26-3.fc40\tx86_64\n"
    )
    assert rpm.manager == "rpm" and rpm.packages == (OsPackage("bash", "5.2.26-3.fc40", "x86_64"),)
    apk = parse_package_listing(
        "@distro alpine 3.20.3\n@manager apk\n"
        "@apk-P musl\n@apk-V 1.2.5-r0\n@apk-A x86_64\n"
        "@apk-P busybox\n@apk-V 1.36.1-r29\n@apk-A x86_64\n"
    )
    assert apk.manager == "apk"
    assert apk.packages == (
        OsPackage("busybox", "1.36.1-r29", "x86_64"),
        OsPackage("musl", "1.2.5-r0", "x86_64"),
    )


def test_image_without_a_package_manager_says_so() -> None:
    listing = parse_package_listing("@distro  \n@manager none\n")
    assert listing.manager is None and listing.packages == ()
    assert "no package manager" in listing.summary()
    doc = document(facts(packages=listing))
    root = doc["metadata"]["component"]  # type: ignore[index]
    said = {p["name"]: p["value"] for p in root["properties"]}
    assert "no package manager" in said["lowbuild:packages"]
    assert not [c for c in doc["components"] if c["type"] == "library"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        ("haproxy-2.6.12.tar.gz", ("haproxy", "2.6.12")),
        ("apache-tomcat-10.1.8.tar.gz", ("apache-tomcat", "10.1.8")),
        ("nginx-1.22.1.tar.gz", ("nginx", "1.22.1")),
        (
            "OpenJDK17U-jdk_x64_linux_hotspot_17.0.7_7.tar.gz",
            ("OpenJDK17U-jdk_x64_linux_hotspot", "17.0.7_7"),
        ),
        ("tool_v2.0.zip", ("tool", "2.0")),
        ("site.tar.gz", ("site", "")),
    ],
)
def test_artifact_name_and_version_from_its_file_name(file: str, expected: tuple[str, str]) -> None:
    assert name_and_version(file) == expected


def test_sbom_lists_every_input_with_its_digest() -> None:
    doc = document(facts())
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.6"
    found = components(doc)
    artifact = found["artifact:haproxy-2.6.12.tar.gz"]
    assert (artifact["name"], artifact["version"]) == ("haproxy", "2.6.12")
    assert artifact["hashes"] == [{"alg": "SHA-256", "content": TAR_SHA}]
    assert artifact["externalReferences"] == [{"type": "distribution", "url": URL}]
    purl = unquote(str(artifact["purl"]))
    assert purl.startswith("pkg:generic/haproxy@2.6.12?")
    assert f"download_url={URL}" in purl and f"checksum=sha256:{TAR_SHA}" in purl
    assert found["pack:code.tar.gz"]["hashes"] == [{"alg": "SHA-256", "content": PACK_SHA}]
    parent = found["image:lowbuild/base:latest"]
    assert parent["hashes"] == [{"alg": "SHA-256", "content": "d" * 64}]
    props = {p["name"]: p["value"] for p in parent["properties"]}  # type: ignore[attr-defined]
    assert props["lowbuild:relation"] == "parent"
    assert props["lowbuild:registry-digest"] == "sha256:" + "f" * 64
    assert unquote(str(parent["purl"])).startswith("pkg:oci/base@sha256:" + "f" * 64)
    base = found["image:localhost/lowbuild/bookworm:latest"]
    assert "purl" not in base  # not published: named by ID only
    openssl = next(c for c in found.values() if c.get("name") == "openssl")
    assert openssl["version"] == "3.0.20-1~deb12u2"
    assert unquote(str(openssl["purl"])) == (
        "pkg:deb/debian/openssl@3.0.20-1~deb12u2?arch=amd64&distro=debian-12"
    )
    assert "removed-but-configured" not in json.dumps(doc)
    # the image depends on every component
    root_ref = doc["metadata"]["component"]["bom-ref"]  # type: ignore[index]
    edges = {d["ref"]: d.get("dependsOn", []) for d in doc["dependencies"]}  # type: ignore[attr-defined]
    assert set(edges[root_ref]) == set(found)


def test_sbom_bytes_depend_on_the_image_alone() -> None:
    first = render_sbom(facts())
    assert render_sbom(facts()) == first  # no clock, no random serial number
    other = render_sbom(facts(packages=parse_package_listing(DPKG_OUTPUT.replace("12.4", "12.5"))))
    assert other != first
    assert json.loads(other)["serialNumber"] != json.loads(first)["serialNumber"]
    assert json.loads(first)["metadata"]["timestamp"].startswith("2026-12-04T10:00:00")


def test_provenance_names_the_image_by_id_and_every_input() -> None:
    image = facts()
    run = BuildRun(
        engine="podman",
        engine_version="4.3.1",
        started=datetime(2026, 12, 4, 10, 0, 0, tzinfo=UTC),
        finished=datetime(2026, 12, 4, 10, 0, 9, tzinfo=UTC),
        run_id="0123456789ab",
        recipe_kind="dockerfile",
        recipe_file="Dockerfile",
        args={"HAPROXY_VERSION": "2.6.12"},
        context_digest="sha256:" + "1" * 64,
        image_id="sha256:" + "2" * 64,
        refs=("lowbuild/haproxy:latest", "lowbuild/haproxy:2.6.12"),
    )
    sbom = sbom_digest(render_sbom(image))
    statement = provenance_statement(image, run, sbom=sbom)
    assert statement["_type"] == STATEMENT_TYPE
    assert statement["predicateType"] == SLSA_PREDICATE
    assert statement["subject"] == [
        {"name": ref, "digest": {"sha256": "2" * 64}} for ref in run.refs
    ]
    predicate = statement["predicate"]
    definition = predicate["buildDefinition"]  # type: ignore[index]
    assert definition["internalParameters"]["fingerprint"] == image.fingerprint
    assert definition["internalParameters"]["engineVersion"] == "4.3.1"
    assert definition["externalParameters"]["args"] == {"HAPROXY_VERSION": "2.6.12"}
    resolved = {d["name"]: d for d in definition["resolvedDependencies"]}
    assert resolved["haproxy-2.6.12.tar.gz"] == {
        "name": "haproxy-2.6.12.tar.gz",
        "digest": {"sha256": TAR_SHA},
        "uri": URL,
    }
    assert resolved["code.tar.gz"]["digest"] == {"sha256": PACK_SHA}
    assert resolved["lowbuild/base:latest"]["digest"] == {"sha256": "d" * 64}
    assert resolved["context"]["digest"] == {"sha256": "1" * 64}
    details = predicate["runDetails"]  # type: ignore[index]
    assert details["metadata"] == {
        "invocationId": "0123456789ab",
        "startedOn": "2026-12-04T10:00:00Z",
        "finishedOn": "2026-12-04T10:00:09Z",
    }
    assert details["builder"]["version"]["podman"] == "4.3.1"
    assert details["byproducts"][0]["digest"] == {"sha256": sbom.removeprefix("sha256:")}
    json.dumps(statement)  # plain JSON all through


def test_listing_summary_counts_packages() -> None:
    listing = PackageListing(manager="apk", packages=(OsPackage("musl", "1"),))
    assert listing.summary() == "1 apk package(s)"
