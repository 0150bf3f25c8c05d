"""Endpoints: the engines a family is split over, and how each is reached.

They belong to the machines, not to the family, so they are described outside the
spec: a hosts file (`lowbuild-hosts.yaml`, or the path in $LOWBUILD_HOSTS / --hosts)

    registry: 127.0.0.1:5000/handover   # where parents go from one endpoint to another
    tls-verify: false                   # a plain-http or self-signed registry
    endpoints:
      - name: a
        engine: podman
        url: unix:///run/a/podman.sock  # what `podman --url` takes (unix://, tcp://, ssh://)
        jobs: 2
      - name: b
        engine: docker
        url: ssh://builder@b.example    # what `docker --host` takes, or a docker context name

or repeated `--endpoint NAME=ENGINE+URL[,jobs=N]` options. The URL is the engine
client's own: lowbuild runs `podman --url URL …` (`--connection NAME` for a name
from `podman system connection`) and `docker --host URL …` (`--context NAME`), so
the same engine code drives a local and a remote endpoint, through the engine's
own protocol. An empty URL is the engine's default (this machine's). buildah has
no remote API: an endpoint is podman, docker or buildx.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from lowbuild.engines.base import Engine, EngineName
from lowbuild.errors import Location, SpecError, UsageError, did_you_mean

HOSTS_ENV = "LOWBUILD_HOSTS"
HOSTS_FILE = "lowbuild-hosts.yaml"
ENDPOINT_ENGINES: tuple[EngineName, ...] = ("podman", "docker", "buildx")
HOSTS_KEYS = ("registry", "tls-verify", "endpoints")
ENDPOINT_KEYS = ("name", "engine", "url", "jobs")
DEFAULT_ENDPOINT_JOBS = 2
MAX_ENDPOINT_JOBS = 256
ENDPOINT_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_SCHEMES = {"podman": ("unix", "tcp", "ssh"), "docker": ("unix", "tcp", "ssh", "npipe")}
_CONTEXT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Endpoint:
    """One engine the family may be built on."""

    name: str
    engine: EngineName  # podman, docker or buildx
    url: str = ""  # the engine client's own: a URL, or a connection/context name; "": local
    jobs: int = DEFAULT_ENDPOINT_JOBS
    declared: str = ""  # where: "lowbuild-hosts.yaml:7", "--endpoint"

    @property
    def connection(self) -> tuple[str, ...]:
        """The flags that point the engine's client at this endpoint."""
        if not self.url:
            return ()
        named = "://" not in self.url
        if self.engine == "podman":
            return ("--connection", self.url) if named else ("--url", self.url)
        return ("--context", self.url) if named else ("--host", self.url)

    @property
    def address(self) -> str:
        """The host a container's published port is reached on from here: this machine
        for a local socket or a context (docker contexts and podman connections are
        read by the client, not here: assumed local unless they are URLs), else the
        URL's host (its ports are published on every interface there)."""
        if "://" not in self.url:
            return _LOOPBACK
        found = urlsplit(self.url)
        if found.scheme in ("unix", "npipe") or not found.hostname:
            return _LOOPBACK
        return found.hostname

    def describe(self) -> str:
        return f"{self.name} ({self.engine}{' at ' + self.url if self.url else ', local'})"


@dataclass(frozen=True)
class Hosts:
    """The endpoints of a run, and the registry their parents are handed over through."""

    endpoints: tuple[Endpoint, ...]
    registry: str | None = None  # a `registries:` name of lowbuild.yaml, or a prefix
    tls_verify: bool = True
    source: Path | None = None  # the hosts file, when there was one


def endpoint_engine(endpoint: Endpoint) -> Engine:
    """The engine object that drives `endpoint` (not probed)."""
    from lowbuild.engines.buildx import BuildxEngine
    from lowbuild.engines.docker import DockerEngine
    from lowbuild.engines.podman import PodmanEngine

    match endpoint.engine:
        case "podman":
            return PodmanEngine(connection=endpoint.connection, address=endpoint.address)
        case "docker":
            return DockerEngine(connection=endpoint.connection, address=endpoint.address)
        case "buildx":
            return BuildxEngine(connection=endpoint.connection, address=endpoint.address)
        case _:
            raise UsageError(f"endpoint {endpoint.name}: {endpoint.engine} cannot be an endpoint")


def _problem(name: str, engine: str, url: str, jobs: object) -> str | None:
    """What is wrong with one endpoint's fields, or None."""
    if not ENDPOINT_NAME.match(name):
        return f"endpoint name {name!r}: use lowercase letters, digits, '.', '_' and '-'"
    if engine == "buildah":
        return f"endpoint {name}: buildah has no remote API; use podman (the same builder)"
    if engine not in ENDPOINT_ENGINES:
        known = ", ".join(ENDPOINT_ENGINES)
        hint = did_you_mean(engine, ENDPOINT_ENGINES)
        return f"endpoint {name}: unknown engine {engine!r}{hint}: use {known}"
    if url:
        if "://" in url:
            scheme = urlsplit(url).scheme
            schemes = _SCHEMES["podman" if engine == "podman" else "docker"]
            if scheme not in schemes:
                return (
                    f"endpoint {name}: {engine} cannot reach {url!r}: "
                    f"the URL must start with {', '.join(s + '://' for s in schemes)}"
                )
        elif not _CONTEXT_NAME.match(url):
            what = "a podman connection" if engine == "podman" else "a docker context"
            return f"endpoint {name}: {url!r} is neither a URL nor {what} name"
    if isinstance(jobs, bool) or not isinstance(jobs, int) or not 1 <= jobs <= MAX_ENDPOINT_JOBS:
        limit = f"from 1 to {MAX_ENDPOINT_JOBS}"
        return f"endpoint {name}: jobs must be a whole number {limit}, not {jobs!r}"
    return None


def parse_endpoint(text: str) -> Endpoint:
    """`NAME=ENGINE+URL[,jobs=N]` (an --endpoint option): `a=podman+unix:///run/a.sock`,
    `b=docker+ssh://me@b,jobs=4`, `c=docker+remote-ctx`, `local=podman`."""
    usage = (
        f"--endpoint {text!r}: expected NAME=ENGINE+URL[,jobs=N], e.g. a=podman+unix:///run/a.sock"
    )
    name, equals, rest = text.partition("=")
    if not equals or not name:
        raise UsageError(usage)
    jobs: object = DEFAULT_ENDPOINT_JOBS
    head, comma, option = rest.rpartition(",jobs=")
    if comma:
        rest = head
        jobs = int(option) if option.isdigit() else option
    engine, _, url = rest.partition("+")
    problem = _problem(name, engine, url, jobs)
    if problem:
        raise UsageError(f"--endpoint {text!r}: {problem}")
    return Endpoint(name=name, engine=engine, url=url, jobs=int(str(jobs)), declared="--endpoint")  # type: ignore[arg-type]


def _at(path: Path, node: yaml.Node) -> Location:
    return Location(path, node.start_mark.line + 1, node.start_mark.column + 1)


def _scalar(path: Path, node: yaml.Node, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise SpecError(f"{what} must be a single value", _at(path, node))
    return str(node.value)


def _mapping(path: Path, node: yaml.Node, what: str, keys: tuple[str, ...]) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        raise SpecError(f"{what} must be a mapping (key: value lines)", _at(path, node))
    fields: dict[str, yaml.Node] = {}
    for key_node, value in node.value:
        key = _scalar(path, key_node, f"a key of {what}")
        if key not in keys:
            raise SpecError(
                f"unknown key {key!r} in {what}{did_you_mean(key, keys)}: use {', '.join(keys)}",
                _at(path, key_node),
            )
        if key in fields:
            raise SpecError(f"{key!r} appears twice in {what}", _at(path, key_node))
        fields[key] = value
    return fields


def load_hosts(path: Path) -> Hosts:
    """Read a hosts file; a mistake is a SpecError naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"hosts file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"hosts file {path} cannot be read: {exc}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = Location(path, mark.line + 1, mark.column + 1) if mark else Location(path)
        raise SpecError(f"not valid YAML: {exc.problem or exc}", where) from None
    if root is None:
        raise SpecError("the hosts file is empty: it needs `endpoints:`", Location(path))
    fields = _mapping(path, root, "the hosts file", HOSTS_KEYS)
    if "endpoints" not in fields:
        raise SpecError("the hosts file needs `endpoints:` (a list)", _at(path, root))
    listed = fields["endpoints"]
    if not isinstance(listed, yaml.SequenceNode) or not listed.value:
        raise SpecError("`endpoints:` must be a list of at least one endpoint", _at(path, listed))
    endpoints = []
    for item in listed.value:
        what = "an endpoint"
        entry = _mapping(path, item, what, ENDPOINT_KEYS)
        for required in ("name", "engine"):
            if required not in entry:
                raise SpecError(f"{what} needs `{required}:`", _at(path, item))
        name = _scalar(path, entry["name"], "name")
        engine = _scalar(path, entry["engine"], "engine")
        url = _scalar(path, entry["url"], "url") if "url" in entry else ""
        jobs: object = DEFAULT_ENDPOINT_JOBS
        if "jobs" in entry:
            raw = _scalar(path, entry["jobs"], "jobs")
            jobs = int(raw) if raw.isdigit() else raw
        problem = _problem(name, engine, url, jobs)
        if problem:
            raise SpecError(problem, _at(path, item))
        endpoints.append(
            Endpoint(
                name=name,
                engine=engine,  # type: ignore[arg-type]  # checked by _problem
                url=url,
                jobs=int(str(jobs)),
                declared=str(_at(path, item)),
            )
        )
    registry = _scalar(path, fields["registry"], "registry") if "registry" in fields else None
    tls_verify = True
    if "tls-verify" in fields:
        raw = _scalar(path, fields["tls-verify"], "tls-verify").lower()
        if raw not in ("true", "false"):
            raise SpecError("tls-verify must be true or false", _at(path, fields["tls-verify"]))
        tls_verify = raw == "true"
    return check_hosts(
        Hosts(tuple(endpoints), registry=registry, tls_verify=tls_verify, source=path)
    )


def check_hosts(hosts: Hosts) -> Hosts:
    """`hosts` when no two endpoints share a name or reach the same engine."""
    seen: dict[str, Endpoint] = {}
    reached: dict[tuple[str, str], Endpoint] = {}
    for endpoint in hosts.endpoints:
        if endpoint.name in seen:
            raise UsageError(
                f"endpoint {endpoint.name} is declared twice ({seen[endpoint.name].declared} "
                f"and {endpoint.declared})"
            )
        seen[endpoint.name] = endpoint
        # docker and buildx on one daemon are one store: the same endpoint twice.
        key = ("podman" if endpoint.engine == "podman" else "docker", endpoint.url)
        if key in reached:
            raise UsageError(
                f"endpoints {reached[key].name} and {endpoint.name} reach the same engine "
                f"({endpoint.url or 'the local ' + endpoint.engine}): give it one endpoint "
                "with more jobs"
            )
        reached[key] = endpoint
    return hosts


def find_hosts(given: Path | None, endpoints: tuple[str, ...]) -> Hosts | None:
    """The endpoints of this run: `--endpoint` options, else the --hosts file, else
    $LOWBUILD_HOSTS; None: no hosts (one engine, as without this feature). A
    `lowbuild-hosts.yaml` is never picked up unasked: which machines build is the
    caller's choice, each time."""
    if endpoints and given is not None:
        raise UsageError("give either --hosts or --endpoint options, not both")
    if endpoints:  # they say it all: $LOWBUILD_HOSTS is for when nothing is given
        return check_hosts(Hosts(tuple(parse_endpoint(text) for text in endpoints)))
    path = given or (Path(os.environ[HOSTS_ENV]) if os.environ.get(HOSTS_ENV) else None)
    return load_hosts(path) if path is not None else None
