"""The declared family, as frozen dataclasses. load.py builds these from YAML.

Every object that came from a file keeps its `location` so later stages
(plan, fetch, build) can name the file and line in their errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lowbuild.errors import Location
from lowbuild.spec.platforms import native_platform, split_key, variant_key, variant_ref

RecipeKind = Literal["dockerfile", "commit"]
PackFormat = Literal["tar", "tar.gz"]
IMAGE_FILE = "image.yaml"
"""The file that makes a directory an image of the family."""

EngineName = Literal["podman", "docker", "buildx", "buildah"]
ENGINE_NAMES: tuple[EngineName, ...] = ("podman", "docker", "buildx", "buildah")
"""The engines a spec may name (lowbuild.yaml `engine:`); lowbuild/engines drives them."""
# A server streaming without end must not fill the disk before the digest check fails.
DEFAULT_MAX_DOWNLOAD = 1024**3


@dataclass(frozen=True)
class Artifact:
    """A file fetched from one of `urls` (mirrors, tried in order) and verified.

    `file` is its name inside the build context (relative, no `..`).
    `sha256` is mandatory; `sha512`, when given, is checked too. `size` (bytes), when
    given, bounds the download exactly; without it the project's `max_download` does.
    """

    file: str
    urls: tuple[str, ...]
    sha256: str
    sha512: str | None = None
    size: int | None = None
    location: Location | None = field(default=None, compare=False)
    # Where upstream says what the sha256 of this very version is (`bump` checks a new
    # version's download against it), and where it lists its releases (`outdated`).
    # Neither is an input of the image: not in the fingerprint.
    sha256_url: str | None = field(default=None, compare=False)
    releases: Releases | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Releases:
    """Where upstream lists an artifact's releases: a page (`index`, e.g. a directory
    listing) and a regex whose one group is a version (`pattern`)."""

    index: str
    pattern: str


@dataclass(frozen=True)
class Pack:
    """A deterministic archive `into` (relative to the context) made from `source` (a
    directory of the context)."""

    into: str
    source: str
    format: PackFormat = "tar.gz"
    location: Location | None = field(default=None, compare=False)


HTTP_TEST_TIMEOUT_S = 60.0
"""An HTTP test's default `timeout:`, from container start to the expected answer: a
JVM server on a busy two-core CI runner answers within it; a slower one declares more."""

COMMAND_TEST_TIMEOUT_S = 60.0
"""A command test's default `timeout:`, container start included: a smoke command is a
quick check (`java -version` takes a second or two), so a minute is ample even with four
tests at once on two cores, and a command that hangs costs no more than that."""

MAX_TEST_TIMEOUT_S = 86_400.0
"""A day: a longer `timeout:` is a typo (and beyond what the OS's waits accept)."""


@dataclass(frozen=True)
class HttpTest:
    """Publish `port`, GET `path`, expect `status` and `expect` (substring of the body)."""

    port: int
    path: str = "/"
    status: int = 200
    expect: str | None = None
    timeout: float = HTTP_TEST_TIMEOUT_S


@dataclass(frozen=True)
class CommandTest:
    """Run `command` in a fresh container; it must exit 0 and, if `expect` is given, print
    it (a substring of the output)."""

    command: tuple[str, ...]
    expect: str | None = None
    timeout: float = COMMAND_TEST_TIMEOUT_S


@dataclass(frozen=True)
class CommitStep:
    """One step of a commit recipe: `run` a shell command, or `copy` a context file to `dest`."""

    run: str | None = None
    copy: str | None = None
    dest: str | None = None


@dataclass(frozen=True)
class CommitRecipe:
    """An image made by hand instead of a Dockerfile: a working container from `base`,
    each step run or copied into it, then `commit -a author -m message -c change`.

    `changes` are Dockerfile instructions applied at commit (`CMD [...]`, `EXPOSE 80`, ...).
    """

    base: str
    steps: tuple[CommitStep, ...]
    author: str = ""
    message: str = ""
    changes: tuple[str, ...] = ()
    location: Location | None = field(default=None, compare=False)  # the `base:` line


@dataclass(frozen=True)
class ImageSpec:
    """One image of the family, from `<directory>/image.yaml`."""

    name: str
    directory: Path
    parent: str | None = None
    kind: RecipeKind = "dockerfile"
    dockerfile: str = "Dockerfile"
    tags: tuple[str, ...] = ()
    # Whole references it is also built as, outside the namespace (`centos:base`, as a
    # hand-made tree's build script named it): FROM lines may use them for the parent.
    refs: tuple[str, ...] = ()
    args: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    artifacts: tuple[Artifact, ...] = ()
    packs: tuple[Pack, ...] = ()
    test: HttpTest | CommandTest | None = None
    commit: CommitRecipe | None = None
    network: Literal["default", "none", "host"] = "default"
    # The platforms it is built for (`platforms:`); empty: the project's.
    platforms: tuple[str, ...] = ()
    location: Location | None = field(default=None, compare=False)  # the `name:` line
    platforms_location: Location | None = field(default=None, compare=False)
    # The `parent:` line, so a parent/FROM disagreement can name it.
    parent_location: Location | None = field(default=None, compare=False)

    @property
    def dockerfile_path(self) -> Path:
        return self.directory / self.dockerfile

    @property
    def engine_network(self) -> str | None:
        """The `--network` to build and test with; None: the engine's default."""
        return None if self.network == "default" else self.network


@dataclass(frozen=True)
class Rewrite:
    """Mirror rewrite: a URL starting with `prefix` is first tried with `replacement` instead."""

    prefix: str
    replacement: str


@dataclass(frozen=True)
class PlatformBase:
    """The image a base stands for on one platform (`bases: [{ref, platforms: {P: …}}]`),
    pinned when `id` is given."""

    platform: str
    ref: str
    id: str = ""


@dataclass(frozen=True)
class BasePin:
    """An external base image pinned by ID (`sha256:...`; "" when only its `platforms`
    are declared), and the images it stands for on other platforms."""

    ref: str
    id: str
    location: Location | None = field(default=None, compare=False)
    platforms: tuple[PlatformBase, ...] = ()


@dataclass(frozen=True)
class Registry:
    """A registry the family is published to (`registries:` in lowbuild.yaml).

    `prefix` is where the images go, `host[:port][/path]` (an image `web` tagged `1`
    becomes `<prefix>/web:1`). `tls_verify: false` only for a registry the user declares
    plain-http or self-signed; credentials are the engine's own (`podman login`, docker's
    config.json), never lowbuild's."""

    name: str
    prefix: str
    tls_verify: bool = True
    location: Location | None = field(default=None, compare=False)

    def ref(self, image: str, tag: str) -> str:
        return f"{self.prefix}/{image}:{tag}"


@dataclass(frozen=True)
class Project:
    """The whole family, from `lowbuild.yaml` plus every context's `image.yaml`."""

    name: str
    root: Path
    namespace: str = "lowbuild"
    tag: str = "latest"
    engine: str | None = None
    rewrites: tuple[Rewrite, ...] = ()
    bases: tuple[BasePin, ...] = ()
    images: tuple[ImageSpec, ...] = ()
    location: Location | None = field(default=None, compare=False)
    # Largest download of an artifact without `size:` (`max-download:`, in bytes).
    max_download: int = DEFAULT_MAX_DOWNLOAD
    registries: tuple[Registry, ...] = ()
    # `cache: {registry: NAME}`: the registry whose fingerprint tags a build pulls from
    # instead of building, and pushes to after building.
    cache_registry: str | None = None
    # `platforms:` in lowbuild.yaml: what every image is built for unless it says otherwise.
    platforms: tuple[str, ...] = ()

    @property
    def multi_platform(self) -> bool:
        """Whether the family is built per platform (any `platforms:` declared): its plan
        names variants (`web@linux-arm64`), not images."""
        return bool(self.platforms) or any(spec.platforms for spec in self.images)

    def platforms_of(self, spec: ImageSpec) -> tuple[str, ...]:
        """The platforms `spec` is built for: its own, else the project's, else the
        machine's."""
        return spec.platforms or self.platforms or (native_platform(),)

    def base_for(self, ref: str, platform: str) -> tuple[str, str]:
        """The image base `ref` stands for on `platform`, and its pinned ID ("" unpinned):
        as `bases:` declares it, else `ref` itself on the native platform, else `ref`
        with the platform in its tag (variant_ref)."""
        for pin in self.bases:
            if pin.ref != ref:
                continue
            for declared in pin.platforms:
                if declared.platform == platform:
                    return declared.ref, declared.id
            if platform == native_platform():
                return ref, pin.id
        if platform == native_platform():
            return ref, ""
        return variant_ref(ref, platform), ""

    def registry(self, name: str) -> Registry:
        for registry in self.registries:
            if registry.name == name:
                return registry
        raise KeyError(name)

    def image_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.images)

    def image(self, name: str) -> ImageSpec:
        """The image named `name`, or the image of variant key `name` (`web@linux-arm64`)."""
        name = split_key(name)[0]
        for spec in self.images:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def ref(self, image: ImageSpec | str) -> str:
        """The local reference an image is built as: `<namespace>/<name>:<tag>`; a variant
        key's: `<namespace>/<name>:<tag>-<os>-<arch>`."""
        name = image if isinstance(image, str) else image.name
        name, platform = split_key(name)
        ref = f"{self.namespace}/{name}:{self.tag}"
        return variant_ref(ref, platform) if platform else ref

    def refs(self, image: ImageSpec, platform: str | None = None) -> tuple[str, ...]:
        """Every reference a build of `image` is tagged with: `ref()` first, then its `tags`
        in the namespace, then its own `refs`. With `platform`, each with the platform in
        its tag; the native platform's variant also gets the plain ones."""
        extra = tuple(f"{self.namespace}/{image.name}:{tag}" for tag in image.tags)
        plain = tuple(dict.fromkeys((self.ref(image), *extra, *image.refs)))
        if platform is None:
            return plain
        own = tuple(variant_ref(ref, platform) for ref in plain)
        return own + plain if platform == native_platform() else own

    def keys(self, image: ImageSpec) -> tuple[str, ...]:
        """The plan's names of `image`: its variants' keys in a multi-platform family,
        else its own name."""
        if not self.multi_platform:
            return (image.name,)
        return tuple(self.key(image, platform) for platform in self.platforms_of(image))

    def refs_for(self, key: str) -> tuple[str, ...]:
        """refs() of the image or variant named `key` in a plan."""
        name, platform = split_key(key)
        return self.refs(self.image(name), platform)

    def key(self, image: ImageSpec | str, platform: str | None) -> str:
        """The plan's name of `image` built for `platform` (None: the image's own name)."""
        name = image if isinstance(image, str) else image.name
        return variant_key(name, platform) if platform else name
