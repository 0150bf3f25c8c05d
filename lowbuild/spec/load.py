"""lowbuild.yaml + every context's image.yaml → a validated Project.

Every message names the file and line it is about: the YAML is composed into
nodes (which keep their start line) and read section by section, one small
function per section. Checks that need the whole family (parents, FROM lines,
cycles) live in lowbuild.plan.graph.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NoReturn, TypeVar
from urllib.parse import urlsplit

import yaml
from yaml.constructor import SafeConstructor

from lowbuild.errors import Location, SpecError, did_you_mean
from lowbuild.redact import redact
from lowbuild.spec.changes import parse_change
from lowbuild.spec.model import (
    COMMAND_TEST_TIMEOUT_S,
    DEFAULT_MAX_DOWNLOAD,
    ENGINE_NAMES,
    HTTP_TEST_TIMEOUT_S,
    IMAGE_FILE,
    MAX_TEST_TIMEOUT_S,
    Artifact,
    BasePin,
    CommandTest,
    CommitRecipe,
    CommitStep,
    HttpTest,
    ImageSpec,
    Pack,
    PackFormat,
    Project,
    RecipeKind,
    Registry,
    Rewrite,
)

PROJECT_FILE = "lowbuild.yaml"
DEFAULT_CONTEXTS = ("contexts/*",)
RESERVED_LABEL_PREFIX = "lowbuild."  # lowbuild's own labels (fingerprint, inputs)

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_NAMESPACE = re.compile(
    r"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$"
)
_ARG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ARG_NAME_PATTERN, TAG_PATTERN = _ARG_NAME, _TAG  # also for --set (spec/overrides.py)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHA512 = re.compile(r"^[0-9a-f]{128}$")
_IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")
# host (with a dot or a port, or localhost), then repository path parts
_REGISTRY_PREFIX = re.compile(
    r"^(localhost|[a-z0-9-]+(\.[a-z0-9-]+)+|[a-z0-9.-]+:[0-9]{1,5})(:[0-9]{1,5})?"
    r"(/[a-z0-9]+([._-][a-z0-9]+)*)*$"
)
_URL_SCHEMES = ("http", "https", "file")

_PROJECT_KEYS = (
    "name",
    "namespace",
    "tag",
    "engine",
    "contexts",
    "mirrors",
    "bases",
    "max-download",
    "registries",
    "cache",
)
_BYTE_UNITS = {"": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}
_BYTE_SIZE = re.compile(r"^([0-9]+) ?(KiB|MiB|GiB|TiB)?$")
_IMAGE_KEYS = (
    "name",
    "parent",
    "kind",
    "dockerfile",
    "tags",
    "args",
    "labels",
    "network",
    "artifacts",
    "packs",
    "test",
    "commit",
)

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"

_Choice = TypeVar("_Choice", bound=str)


def load_project(path: Path | None = None, *, allow_missing_digests: bool = False) -> Project:
    """Read and validate the project file and every image.yaml it names.

    `path` is the project file, or a directory holding lowbuild.yaml; default: the
    nearest lowbuild.yaml in the current directory or above it. Raises SpecError
    naming FILE:LINE for anything wrong.
    `allow_missing_digests` lets an artifact omit `sha256` (it is then "") — only
    for `lowbuild fetch --print-digests`, which computes the digests to pin.
    """
    project_file = _project_file(path)
    doc = _Document.read(project_file)
    root = doc.require_root("a project needs at least `name:`")
    fields = doc.fields(root, what=PROJECT_FILE, keys=_PROJECT_KEYS, required=("name",))
    # Sections in file order, so the first error reported is the first in the file.
    name = _name(doc, fields["name"], what="project name")
    namespace = _namespace(doc, fields.get("namespace"))
    tag = _tag(doc, fields["tag"]) if "tag" in fields else "latest"
    engine = _engine(doc, fields.get("engine"))
    rewrites = _mirrors(doc, fields.get("mirrors"))
    bases = _bases(doc, fields.get("bases"))
    max_download = DEFAULT_MAX_DOWNLOAD
    if "max-download" in fields:
        max_download = _byte_size(doc, fields["max-download"], what="max-download")
    registries = _registries(doc, fields.get("registries"))
    cache_registry = _cache(doc, fields.get("cache"), registries)
    images = _read_images(
        _context_directories(doc, fields.get("contexts")),
        allow_missing_digests=allow_missing_digests,
    )
    _check_unique_names(images)
    return Project(
        name=name,
        root=project_file.parent,
        namespace=namespace,
        tag=tag,
        engine=engine,
        rewrites=rewrites,
        bases=bases,
        images=images,
        location=doc.at(root),
        max_download=max_download,
        registries=registries,
        cache_registry=cache_registry,
    )


MAX_REPORTED_ERRORS = 20


def _read_images(
    directories: Sequence[Path], *, allow_missing_digests: bool
) -> tuple[ImageSpec, ...]:
    """Every context's image.yaml. Each file is checked even after another was wrong, so
    one run names the mistakes of every file (the first of each), not only the first."""
    images: list[ImageSpec] = []
    errors: list[SpecError] = []
    for directory in directories:
        try:
            images.append(_image(directory, allow_missing_digests=allow_missing_digests))
        except SpecError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        shown = [str(error) for error in errors[:MAX_REPORTED_ERRORS]]
        more = len(errors) - len(shown)
        raise SpecError(
            "\n".join(shown)
            + (f"\n... and {more} more image.yaml file(s) with a mistake" if more else "")
            + f"\n{len(errors)} image.yaml files have mistakes"
        )
    return tuple(images)


def nearest_project_file() -> Path | None:
    """The nearest PROJECT_FILE in the current directory or above it, if any."""
    here = Path.cwd().resolve()
    for directory in (here, *here.parents):
        if (directory / PROJECT_FILE).is_file():
            return directory / PROJECT_FILE
    return None


def _project_file(path: Path | None) -> Path:
    """`path` (a file, or a directory holding PROJECT_FILE); without one, the nearest
    PROJECT_FILE in the current directory or above it, the way git finds its repository."""
    if path is None:
        found = nearest_project_file()
        if found is None:
            raise SpecError(
                f"no project file: no {PROJECT_FILE} in {Path.cwd().resolve()} or any "
                "directory above it (run lowbuild inside a project, or pass -f FILE)"
            )
        return found
    candidate = path.resolve()
    if candidate.is_dir():
        candidate = candidate / PROJECT_FILE
    if not candidate.is_file():
        raise SpecError(f"no project file: {candidate} does not exist")
    return candidate


# ---- reading YAML with line numbers ----

MAX_SPEC_BYTES = 4 * 1024 * 1024  # a hand-written spec is kilobytes; refuse giants up front

# libyaml when PyYAML was built with it (the wheels are), else the pure-Python loader.
_Loader: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(
    yaml, "CSafeLoader", yaml.SafeLoader
)


def utf8_text(raw: bytes, path: Path) -> str:
    """`raw` (the content of `path`) as text; a SpecError at the line of the first byte
    that is not UTF-8, naming the byte but quoting nothing else of the file."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"not UTF-8 text: byte 0x{raw[exc.start]:02x} cannot be decoded "
            "(save the file as UTF-8)",
            Location(path, raw.count(b"\n", 0, exc.start) + 1),
        ) from None


def _read_spec_bytes(path: Path) -> bytes:
    """The file's bytes, at most MAX_SPEC_BYTES of them (a bigger file is a SpecError)."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"cannot read: {exc.strerror or exc}", Location(path)) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(
            f"larger than {MAX_SPEC_BYTES // (1024 * 1024)} MiB; a spec this big is refused "
            "(split the family into more contexts, or generate less)",
            Location(path),
        )
    return raw


# PyYAML's words for the common mistakes, in plain words (matched on its `problem`).
_SYNTAX_HELP = (
    (
        "mapping values are not allowed",
        "a second `: ` where a value was expected: quote a value that contains ': ', "
        "or indent this line like the keys above it",
    ),
    (
        "did not find expected key",
        "this line is not indented like the keys of its block: line it up with its "
        "siblings (or add the `- ` of a list item)",
    ),
    ("could not find expected ':'", "a line in a mapping without `key: value` (a missing colon?)"),
    ("found unexpected end of stream", "the file ends inside a quoted string: close the quote"),
    (
        "found unknown escape character",
        "an unknown `\\` escape in a double-quoted string: use single quotes, or write `\\\\`",
    ),
)
_UNCLOSED = {"flow sequence": ("[", "]"), "flow mapping": ("{", "}")}


def _syntax_error(path: Path, text: str, exc: yaml.MarkedYAMLError) -> SpecError:
    """A YAML syntax error the way a compiler gives one: FILE:LINE:COLUMN, plain words
    for what is wrong, then the line itself with a caret under the place."""
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or ""
    context = exc.context or ""
    explanation = next((words for key, words in _SYNTAX_HELP if key in problem), "")
    lines = text.splitlines()
    found = lines[mark.line] if mark is not None and mark.line < len(lines) else ""
    opened = next((pair for name, pair in _UNCLOSED.items() if name in context), None)
    if opened is not None and exc.context_mark is not None:
        # The place to look is where the bracket opened, not where YAML gave up.
        mark = exc.context_mark
        explanation = (
            f"this `{opened[0]}` is not closed by a `{opened[1]}` (or an item lacks its comma)"
        )
    elif "cannot start any token" in problem and mark is not None:
        char = found[mark.column : mark.column + 1]
        explanation = (
            "a tab: YAML indents with spaces only; replace the tab with spaces"
            if char == "\t"
            else f"`{char}` cannot start a value: quote the value"
        )
    if not explanation:
        explanation = problem + (f" ({context})" if context else "")
    if mark is None:
        return SpecError(f"YAML syntax error: {explanation}", Location(path))
    shown = lines[mark.line] if mark.line < len(lines) else ""
    before = shown[: mark.column].expandtabs(4)
    excerpt = redact(shown.expandtabs(4))[:200]
    caret = " " * min(len(before), 200) + "^"
    return SpecError(
        f"YAML syntax error: {explanation}\n    {excerpt}\n    {caret}",
        Location(path, mark.line + 1, mark.column + 1),
    )


@dataclass
class _Document:
    """One YAML file composed into nodes; every node knows its start line."""

    path: Path
    root: yaml.Node | None
    loader: SafeConstructor  # constructs scalar values (ints, floats) the YAML way

    @classmethod
    def read(cls, path: Path) -> _Document:
        raw = _read_spec_bytes(path)
        text = utf8_text(raw, path)
        # libyaml parses a large spec about five times faster than pure Python; both
        # give nodes with the same line marks. libyaml takes the bytes (its error
        # positions are byte offsets), pure Python the text (character offsets).
        source: str | bytes = raw if _Loader is not yaml.SafeLoader else text
        loader: yaml.SafeLoader | yaml.CSafeLoader | None = None
        try:
            loader = _Loader(source)  # pure Python checks every character here
            root = loader.get_single_node()
        except yaml.reader.ReaderError as exc:
            before = (
                raw.count(b"\n", 0, exc.position)
                if isinstance(source, bytes)
                else text.count("\n", 0, exc.position)
            )
            # Name the character by its code only: the file's content is not echoed.
            raise SpecError(
                f"YAML cannot hold character U+{exc.character:04X} "
                "(control characters are not allowed in a spec)",
                Location(path, before + 1),
            ) from None
        except yaml.MarkedYAMLError as exc:
            raise _syntax_error(path, text, exc) from None
        except yaml.YAMLError as exc:
            raise SpecError(f"YAML syntax error: {exc}", Location(path)) from None
        except RecursionError:
            # Only pure-Python PyYAML recurses per nesting level; libyaml stops at its own
            # depth limit with a ScannerError (handled above).
            reached = getattr(loader, "line", None)  # the pure-Python reader's current line
            raise SpecError(
                "YAML nested too deeply to read",
                Location(path, reached + 1 if isinstance(reached, int) else None),
            ) from None
        return cls(path=path, root=root, loader=loader)

    def at(self, node: yaml.Node) -> Location:
        return Location(self.path, node.start_mark.line + 1)

    def fail(self, message: str, node: yaml.Node) -> NoReturn:
        raise SpecError(message, self.at(node))

    def require_root(self, needs: str) -> yaml.Node:
        if self.root is None or (isinstance(self.root, yaml.ScalarNode) and self.root.tag == _NULL):
            raise SpecError(f"{self.path.name} is empty; {needs}", Location(self.path, 1))
        return self.root

    def fields(
        self, node: yaml.Node, *, what: str, keys: Sequence[str], required: Sequence[str]
    ) -> dict[str, yaml.Node]:
        """A mapping's values by key. Unknown, duplicate and missing keys are errors.

        An optional key whose value is null (`parent:` or `parent: ~`) counts as absent.
        """
        if not isinstance(node, yaml.MappingNode):
            self.fail(f"{what} must be a mapping (key: value lines), not {_kind(node)}", node)
        found: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR:
                self.fail(f"{what}: keys must be plain words, not {_kind(key_node)}", key_node)
            key = str(key_node.value)
            if key not in keys:
                self.fail(_unknown_key_message(key, what=what, keys=keys), key_node)
            if key in found:
                self.fail(f"{what}: key {key!r} is given twice", key_node)
            if value_node.tag == _NULL and key not in required:
                continue
            found[key] = value_node
        missing = [key for key in required if key not in found]
        if missing:
            self.fail(
                f"{what}: missing required key{'s' if len(missing) > 1 else ''} "
                + ", ".join(repr(key) for key in missing),
                node,
            )
        return found

    def text(self, node: yaml.Node, *, what: str) -> str:
        """A scalar as the user wrote it. Numbers keep their spelling (`1.10` stays "1.10");
        true/false/null are refused because YAML turns `yes`, `no`, `on`, `~` into them."""
        if not isinstance(node, yaml.ScalarNode):
            self.fail(f"{what} must be a string, not {_kind(node)}", node)
        if node.tag not in (_STR, _INT, _FLOAT):
            self.fail(
                f'{what} must be a string, not {_kind(node)} (quote it: "{node.value}")', node
            )
        value = str(node.value)
        if not value:
            self.fail(f"{what} must not be empty", node)
        return value

    def integer(self, node: yaml.Node, *, what: str, low: int, high: int) -> int:
        if not isinstance(node, yaml.ScalarNode) or node.tag != _INT:
            self.fail(f"{what} must be a whole number, not {_kind(node)}", node)
        value = int(self.loader.construct_object(node))
        if not low <= value <= high:
            self.fail(f"{what} must be between {low} and {high}, not {value}", node)
        return value

    def seconds(self, node: yaml.Node, *, what: str) -> float:
        if not isinstance(node, yaml.ScalarNode) or node.tag not in (_INT, _FLOAT):
            self.fail(f"{what} must be a number of seconds, not {_kind(node)}", node)
        value = float(self.loader.construct_object(node))
        if not 0 < value <= MAX_TEST_TIMEOUT_S:  # also refuses .nan and .inf
            self.fail(
                f"{what} must be more than 0 and at most {MAX_TEST_TIMEOUT_S:g} seconds", node
            )
        return value

    def boolean(self, node: yaml.Node, *, what: str) -> bool:
        """`true` or `false`, nothing else (YAML's yes/no/on/off are refused as unclear)."""
        if (
            not isinstance(node, yaml.ScalarNode)
            or node.tag != _BOOL
            or node.value not in ("true", "false")
        ):
            self.fail(f"{what} must be true or false, not {node.value!r}", node)
        return str(node.value) == "true"

    def items(self, node: yaml.Node, *, what: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            self.fail(f"{what} must be a list, not {_kind(node)}", node)
        return list(node.value)

    def records(
        self, node: yaml.Node | None, *, what: str, keys: Sequence[str], required: Sequence[str]
    ) -> list[tuple[str, yaml.Node, dict[str, yaml.Node]]]:
        """A list of mappings (none when `node` is absent): for each, its name for
        messages (`what[i]`), its node and its fields (checked as `fields` does)."""
        if node is None:
            return []
        found = []
        for index, item in enumerate(self.items(node, what=what)):
            name = f"{what}[{index}]"
            found.append((name, item, self.fields(item, what=name, keys=keys, required=required)))
        return found

    def texts(self, node: yaml.Node, *, what: str) -> tuple[str, ...]:
        return tuple(
            self.text(item, what=f"{what}[{index}]")
            for index, item in enumerate(self.items(node, what=what))
        )

    def text_map(self, node: yaml.Node, *, what: str) -> list[tuple[yaml.Node, str, str]]:
        """A mapping of strings to strings (numbers allowed as values): (key node, key, value)."""
        if not isinstance(node, yaml.MappingNode):
            self.fail(f"{what} must be a mapping (KEY: value lines), not {_kind(node)}", node)
        pairs: list[tuple[yaml.Node, str, str]] = []
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = self.text(key_node, what=f"{what} key")
            if key in seen:
                self.fail(f"{what}: {key!r} is given twice", key_node)
            seen.add(key)
            pairs.append((key_node, key, self.text(value_node, what=f"{what}.{key}")))
        return pairs

    def choice(
        self, node: yaml.Node | None, *, what: str, choices: Sequence[_Choice], default: _Choice
    ) -> _Choice:
        if node is None:
            return default
        value = self.text(node, what=what)
        for choice in choices:
            if value == choice:
                return choice
        raise SpecError(f"{what} must be one of {', '.join(choices)}, not {value!r}", self.at(node))

    def context_path(self, node: yaml.Node, *, what: str) -> str:
        """A path inside the build context: relative and without `..`, normalised
        (`site/` → `site`)."""
        value = self.text(node, what=what)
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts:
            self.fail(
                f"{what} {value!r} would land outside the build context; "
                "use a relative path without '..'",
                node,
            )
        if str(path) == ".":
            self.fail(
                f"{what} {value!r} must name a file or directory, not the context itself", node
            )
        return str(path)


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return {
        _STR: "a string",
        _INT: "a number",
        _FLOAT: "a number",
        _NULL: "empty",
        "tag:yaml.org,2002:bool": "true/false",
    }.get(node.tag, f"a value of type {node.tag.rsplit(':', 1)[-1]}")


def _unknown_key_message(key: str, *, what: str, keys: Sequence[str]) -> str:
    hint = did_you_mean(key, keys)
    return f"unknown key {key!r} in {what}{hint}; valid keys: {', '.join(keys)}"


# ---- lowbuild.yaml sections ----


def _name(doc: _Document, node: yaml.Node, *, what: str) -> str:
    value = doc.text(node, what=what)
    if not _NAME.match(value):
        doc.fail(
            f"{what} {value!r} is not valid: use lowercase letters, digits, '.', '_', '-', "
            "starting with a letter or digit",
            node,
        )
    return value


def _tag(doc: _Document, node: yaml.Node) -> str:
    value = doc.text(node, what="tag")
    if not _TAG.match(value):
        doc.fail(f"tag {value!r} is not a valid image tag (letters, digits, '_', '.', '-')", node)
    return value


def _namespace(doc: _Document, node: yaml.Node | None) -> str:
    if node is None:
        return "lowbuild"
    value = doc.text(node, what="namespace")
    if not _NAMESPACE.match(value):
        doc.fail(f"namespace {value!r} is not a valid image repository path", node)
    return value


def _engine(doc: _Document, node: yaml.Node | None) -> str | None:
    if node is None:
        return None
    return doc.choice(node, what="engine", choices=ENGINE_NAMES, default="podman")


def _mirrors(doc: _Document, node: yaml.Node | None) -> tuple[Rewrite, ...]:
    keys = ("prefix", "replacement")
    return tuple(
        Rewrite(
            prefix=doc.text(fields["prefix"], what=f"{what}.prefix"),
            replacement=doc.text(fields["replacement"], what=f"{what}.replacement"),
        )
        for what, _, fields in doc.records(node, what="mirrors", keys=keys, required=keys)
    )


def registry_prefix_problem(prefix: str) -> str | None:
    """What is wrong with a registry prefix (`host[:port][/path]`), or None."""
    if "://" in prefix:
        return "has a scheme: write host[:port][/path], and `tls-verify: false` for plain http"
    if not _REGISTRY_PREFIX.match(prefix):
        return (
            "is not host[:port][/path] in lowercase (a host with a dot or a port, or "
            "localhost, then path parts of letters, digits, '.', '_', '-')"
        )
    return None


def _registries(doc: _Document, node: yaml.Node | None) -> tuple[Registry, ...]:
    found: dict[str, Registry] = {}
    keys = ("name", "prefix", "tls-verify")
    for what, item, fields in doc.records(
        node, what="registries", keys=keys, required=("name", "prefix")
    ):
        name = _name(doc, fields["name"], what=f"{what}.name")
        prefix = doc.text(fields["prefix"], what=f"{what}.prefix").rstrip("/")
        problem = registry_prefix_problem(prefix)
        if problem:
            doc.fail(f"{what}.prefix {prefix!r} {problem}", fields["prefix"])
        tls = fields.get("tls-verify")
        verify = True if tls is None else doc.boolean(tls, what=f"{what}.tls-verify")
        if name in found:
            doc.fail(f"registry {name!r} is declared twice (first at {found[name].location})", item)
        found[name] = Registry(name=name, prefix=prefix, tls_verify=verify, location=doc.at(item))
    return tuple(found.values())


def _cache(doc: _Document, node: yaml.Node | None, registries: Sequence[Registry]) -> str | None:
    """`cache: {registry: NAME}`, NAME one of `registries:`."""
    if node is None:
        return None
    fields = doc.fields(node, what="cache", keys=("registry",), required=("registry",))
    name = doc.text(fields["registry"], what="cache.registry")
    names = [registry.name for registry in registries]
    if name not in names:
        known = f"; declared: {', '.join(names)}" if names else "; none is declared"
        doc.fail(
            f"cache.registry {name!r} is not a registry of `registries:`"
            f"{did_you_mean(name, names)}{known}",
            fields["registry"],
        )
    return name


def _bases(doc: _Document, node: yaml.Node | None) -> tuple[BasePin, ...]:
    pins: dict[str, BasePin] = {}
    keys = ("ref", "id")
    for what, item, fields in doc.records(node, what="bases", keys=keys, required=keys):
        ref = doc.text(fields["ref"], what=f"{what}.ref")
        image_id = doc.text(fields["id"], what=f"{what}.id")
        if not _IMAGE_ID.match(image_id):
            doc.fail(
                f"{what}.id must be an image ID, sha256:<64 lowercase hex>, not {image_id!r}",
                fields["id"],
            )
        if ref in pins:
            doc.fail(f"base {ref!r} is pinned twice (first at {pins[ref].location})", fields["ref"])
        pins[ref] = BasePin(ref=ref, id=image_id, location=doc.at(item))
    return tuple(pins.values())


def _context_directories(doc: _Document, node: yaml.Node | None) -> list[Path]:
    """Each context directory once, in the order given (globs sorted)."""
    root = doc.path.parent
    if node is None:
        entries = [(pattern, Location(doc.path)) for pattern in DEFAULT_CONTEXTS]
    else:
        entries = [
            (doc.text(item, what=f"contexts[{index}]"), doc.at(item))
            for index, item in enumerate(doc.items(node, what="contexts"))
        ]
    found: dict[Path, None] = {}
    for pattern, origin in entries:
        found.update(dict.fromkeys(_expand_context_entry(root, pattern, origin)))
    return list(found)


def _expand_context_entry(root: Path, pattern: str, origin: Location) -> list[Path]:
    if PurePosixPath(pattern).is_absolute():
        raise SpecError(f"contexts entry {pattern!r} must be relative to {root}", origin)
    if not any(char in pattern for char in "*?["):
        directory = (root / pattern).resolve()
        if not directory.is_dir():
            raise SpecError(f"context directory {directory} does not exist", origin)
        if not (directory / IMAGE_FILE).is_file():
            raise SpecError(f"context directory {directory} has no {IMAGE_FILE}", origin)
        return [directory]
    directories = sorted(path.resolve() for path in root.glob(pattern) if path.is_dir())
    if not directories:
        default = " (the default; set `contexts:` to list yours)" if origin.line is None else ""
        raise SpecError(
            f"contexts pattern {pattern!r} matches no directory under {root}{default}", origin
        )
    for directory in directories:
        if not (directory / IMAGE_FILE).is_file():
            raise SpecError(
                f"context directory {directory} (matched by {pattern!r}) has no {IMAGE_FILE}; "
                "add one, or list the contexts explicitly to leave it out",
                origin,
            )
    return directories


def _check_unique_names(images: Sequence[ImageSpec]) -> None:
    first: dict[str, ImageSpec] = {}
    for image in images:
        if image.name in first:
            raise SpecError(
                f"image name {image.name!r} is declared twice: at {first[image.name].location} "
                f"and at {image.location}",
                image.location,
            )
        first[image.name] = image


# ---- image.yaml sections ----


def _image(directory: Path, *, allow_missing_digests: bool) -> ImageSpec:
    doc = _Document.read(directory / IMAGE_FILE)
    root = doc.require_root("an image needs at least `name:`")
    fields = doc.fields(root, what=IMAGE_FILE, keys=_IMAGE_KEYS, required=("name",))
    kind: RecipeKind = doc.choice(
        fields.get("kind"), what="kind", choices=("dockerfile", "commit"), default="dockerfile"
    )
    name = _name(doc, fields["name"], what="image name")
    parent = _parent(doc, fields.get("parent"), name=name)
    artifacts = _artifacts(
        doc, fields.get("artifacts"), allow_missing_digests=allow_missing_digests
    )
    packs = _packs(doc, fields.get("packs"), directory=directory)
    _check_outputs_unique(artifacts, packs)
    produced = {artifact.file for artifact in artifacts} | {pack.into for pack in packs}
    return ImageSpec(
        name=name,
        directory=directory,
        parent=parent,
        kind=kind,
        dockerfile=_dockerfile(doc, root, fields, kind=kind, directory=directory),
        tags=tuple(_tag(doc, item) for item in doc.items(fields["tags"], what="tags"))
        if "tags" in fields
        else (),
        args=_args(doc, fields.get("args")),
        labels=_labels(doc, fields.get("labels"), kind=kind),
        artifacts=artifacts,
        packs=packs,
        test=_test(doc, fields.get("test")),
        commit=_commit(doc, root, fields, kind=kind, directory=directory, produced=produced),
        network=doc.choice(
            fields.get("network"),
            what="network",
            choices=("default", "none", "host"),
            default="default",
        ),
        location=doc.at(fields["name"]),
        parent_location=doc.at(fields["parent"]) if "parent" in fields else None,
    )


def _parent(doc: _Document, node: yaml.Node | None, *, name: str) -> str | None:
    if node is None:
        return None
    parent = _name(doc, node, what="parent")
    if parent == name:
        doc.fail(f"image {name!r} cannot be its own parent", node)
    return parent


def _dockerfile(
    doc: _Document,
    root: yaml.Node,
    fields: dict[str, yaml.Node],
    *,
    kind: RecipeKind,
    directory: Path,
) -> str:
    node = fields.get("dockerfile")
    if kind == "commit":
        if node is not None:
            doc.fail(
                "dockerfile: does not apply to kind: commit (its recipe is the commit: block)", node
            )
        return "Dockerfile"
    name = doc.context_path(node, what="dockerfile") if node is not None else "Dockerfile"
    if not (directory / name).is_file():
        doc.fail(
            f"kind: dockerfile needs {directory / name}, which does not exist"
            + ("" if node is not None else " (set `dockerfile:` if it has another name)"),
            node if node is not None else fields.get("kind", root),
        )
    # A symlinked Dockerfile is followed: where it really is must be inside the context,
    # or a build would read (and an error might quote) any file on the host.
    real = (directory / name).resolve()
    if not real.is_relative_to(directory.resolve()):
        doc.fail(
            f"{directory / name} is a link to {real}, outside the context {directory}; "
            "the Dockerfile must be a file inside its context",
            node if node is not None else fields.get("kind", root),
        )
    return name


def _args(doc: _Document, node: yaml.Node | None) -> tuple[tuple[str, str], ...]:
    if node is None:
        return ()
    pairs = doc.text_map(node, what="args")
    for key_node, key, _value in pairs:
        if not _ARG_NAME.match(key):
            doc.fail(f"build arg name {key!r} is not valid (letters, digits, '_')", key_node)
    return tuple(sorted((key, value) for _node, key, value in pairs))


def _labels(
    doc: _Document, node: yaml.Node | None, *, kind: RecipeKind
) -> tuple[tuple[str, str], ...]:
    if node is None:
        return ()
    pairs = doc.text_map(node, what="labels")
    for key_node, key, value in pairs:
        if kind == "commit" and ("\n" in value or "\r" in value):
            # A commit applies labels as changes: `docker commit -c` reads Dockerfile lines.
            doc.fail(f"label {key!r}: a commit recipe's label value must be one line", key_node)
        if key.startswith(RESERVED_LABEL_PREFIX):
            doc.fail(
                f"label {key!r}: labels starting with {RESERVED_LABEL_PREFIX!r} are lowbuild's own",
                key_node,
            )
        if any(char.isspace() for char in key) or "=" in key:
            doc.fail(f"label key {key!r} must not contain spaces or '='", key_node)
    return tuple(sorted((key, value) for _node, key, value in pairs))


def _artifacts(
    doc: _Document, node: yaml.Node | None, *, allow_missing_digests: bool
) -> tuple[Artifact, ...]:
    if node is None:
        return ()
    return tuple(
        _artifact(doc, item, index=index, allow_missing_digests=allow_missing_digests)
        for index, item in enumerate(doc.items(node, what="artifacts"))
    )


def _artifact(
    doc: _Document, node: yaml.Node, *, index: int, allow_missing_digests: bool
) -> Artifact:
    what = f"artifacts[{index}]"
    fields = doc.fields(
        node,
        what=what,
        keys=("file", "urls", "sha256", "sha512", "size"),
        required=("file", "urls"),
    )
    file = doc.context_path(fields["file"], what=f"{what}.file")
    urls = doc.texts(fields["urls"], what=f"{what}.urls")
    if not urls:
        doc.fail(f"artifact {file!r} needs at least one URL in urls:", fields["urls"])
    for url_node, url in zip(doc.items(fields["urls"], what="urls"), urls, strict=True):
        if urlsplit(url).scheme not in _URL_SCHEMES:
            doc.fail(
                f"artifact {file!r}: URL {redact(url)!r} must start with http://, https:// or file://",
                url_node,
            )
    sha256 = ""
    if "sha256" in fields:
        sha256 = _digest(
            doc, fields["sha256"], what=f"artifact {file!r} sha256", pattern=_SHA256, digits=64
        )
    elif not allow_missing_digests:
        doc.fail(
            f"artifact {file!r} has no sha256: every artifact must be pinned by digest; "
            "`lowbuild fetch --print-digests` downloads it and prints the sha256 to paste here",
            node,
        )
    sha512 = None
    if "sha512" in fields:
        sha512 = _digest(
            doc, fields["sha512"], what=f"artifact {file!r} sha512", pattern=_SHA512, digits=128
        )
    size = (
        _byte_size(doc, fields["size"], what=f"artifact {file!r} size")
        if "size" in fields
        else None
    )
    return Artifact(
        file=file, urls=urls, sha256=sha256, sha512=sha512, size=size, location=doc.at(node)
    )


def _byte_size(doc: _Document, node: yaml.Node, *, what: str) -> int:
    """A number of bytes: `1048576`, or with a binary unit: `512MiB`, `4GiB`."""
    value = doc.text(node, what=what)
    match = _BYTE_SIZE.match(value)
    if not match or int(match[1]) == 0:
        doc.fail(
            f"{what} must be a number of bytes above 0, like 1048576 or 4GiB, not {value!r}", node
        )
    return int(match[1]) * _BYTE_UNITS[match[2] or ""]


def _digest(
    doc: _Document, node: yaml.Node, *, what: str, pattern: re.Pattern[str], digits: int
) -> str:
    value = doc.text(node, what=what)
    if not pattern.match(value):
        hint = " (write the hex digits only, without the 'sha…:' prefix)" if ":" in value else ""
        doc.fail(f"{what} must be {digits} lowercase hex digits, not {value!r}{hint}", node)
    return value


def _packs(doc: _Document, node: yaml.Node | None, *, directory: Path) -> tuple[Pack, ...]:
    packs = []
    keys, required = ("into", "from", "format"), ("into", "from")
    for what, item, fields in doc.records(node, what="packs", keys=keys, required=required):
        into = doc.context_path(fields["into"], what=f"{what}.into")
        source = doc.context_path(fields["from"], what=f"{what}.from")
        if not (directory / source).is_dir():
            doc.fail(
                f"pack {into!r}: directory {directory / source} does not exist", fields["from"]
            )
        default: PackFormat = "tar" if into.endswith(".tar") else "tar.gz"
        pack_format = doc.choice(
            fields.get("format"), what=f"{what}.format", choices=("tar", "tar.gz"), default=default
        )
        packs.append(Pack(into=into, source=source, format=pack_format, location=doc.at(item)))
    return tuple(packs)


def _check_outputs_unique(artifacts: Sequence[Artifact], packs: Sequence[Pack]) -> None:
    """Two inputs may not land on the same path of the context."""
    seen: dict[str, Location | None] = {}
    for path, location in [(a.file, a.location) for a in artifacts] + [
        (p.into, p.location) for p in packs
    ]:
        if path in seen:
            raise SpecError(
                f"{path!r} is produced twice in the context (also at {seen[path]})", location
            )
        seen[path] = location


def _test(doc: _Document, node: yaml.Node | None) -> HttpTest | CommandTest | None:
    if node is None:
        return None
    fields = doc.fields(
        node, what="test", keys=("http", "command", "expect", "timeout"), required=()
    )
    if ("http" in fields) == ("command" in fields):
        doc.fail("test needs exactly one of http: or command:", node)
    if "http" in fields:
        for key in ("expect", "timeout"):
            if key in fields:
                doc.fail(f"test.{key} belongs inside test.http for an http test", fields[key])
        return _http_test(doc, fields["http"])
    return CommandTest(
        command=_command(doc, fields["command"]),
        expect=doc.text(fields["expect"], what="test.expect") if "expect" in fields else None,
        timeout=doc.seconds(fields["timeout"], what="test.timeout")
        if "timeout" in fields
        else COMMAND_TEST_TIMEOUT_S,
    )


def _http_test(doc: _Document, node: yaml.Node) -> HttpTest:
    keys = ("port", "path", "status", "expect", "timeout")
    fields = doc.fields(node, what="test.http", keys=keys, required=("port",))
    path = doc.text(fields["path"], what="test.http.path") if "path" in fields else "/"
    if not path.startswith("/"):
        doc.fail(f"test.http.path must start with '/', not {path!r}", fields["path"])
    return HttpTest(
        port=doc.integer(fields["port"], what="test.http.port", low=1, high=65535),
        path=path,
        status=doc.integer(fields["status"], what="test.http.status", low=100, high=599)
        if "status" in fields
        else 200,
        expect=doc.text(fields["expect"], what="test.http.expect") if "expect" in fields else None,
        timeout=doc.seconds(fields["timeout"], what="test.http.timeout")
        if "timeout" in fields
        else HTTP_TEST_TIMEOUT_S,
    )


def _command(doc: _Document, node: yaml.Node) -> tuple[str, ...]:
    """A list is run as is; a string is run by `sh -c`, so pipes and `&&` work."""
    if isinstance(node, yaml.SequenceNode):
        command = doc.texts(node, what="test.command")
        if not command:
            doc.fail("test.command must not be empty", node)
        return command
    return ("sh", "-c", doc.text(node, what="test.command"))


def _commit(
    doc: _Document,
    root: yaml.Node,
    fields: dict[str, yaml.Node],
    *,
    kind: RecipeKind,
    directory: Path,
    produced: set[str],
) -> CommitRecipe | None:
    node = fields.get("commit")
    if kind != "commit":
        if node is not None:
            doc.fail("commit: is only for kind: commit (add `kind: commit` or remove it)", node)
        return None
    if node is None:
        doc.fail(
            "kind: commit needs a commit: block (base, steps, changes)", fields.get("kind", root)
        )
    keys = ("base", "author", "message", "steps", "changes")
    recipe = doc.fields(node, what="commit", keys=keys, required=("base",))
    steps = doc.items(recipe["steps"], what="commit.steps") if "steps" in recipe else []
    return CommitRecipe(
        base=doc.text(recipe["base"], what="commit.base"),
        steps=tuple(
            _commit_step(doc, step, index=index, directory=directory, produced=produced)
            for index, step in enumerate(steps)
        ),
        author=doc.text(recipe["author"], what="commit.author") if "author" in recipe else "",
        message=doc.text(recipe["message"], what="commit.message") if "message" in recipe else "",
        changes=_commit_changes(doc, recipe["changes"]) if "changes" in recipe else (),
        location=doc.at(recipe["base"]),
    )


def _commit_changes(doc: _Document, node: yaml.Node) -> tuple[str, ...]:
    """The changes, each checked now: a bad one is a spec error at its line, not an engine
    failure after the recipe's steps ran."""
    texts = doc.texts(node, what="commit.changes")
    for item, text in zip(doc.items(node, what="commit.changes"), texts, strict=True):
        try:
            parse_change(text)
        except SpecError as exc:
            doc.fail(str(exc), item)
    return texts


def _commit_step(
    doc: _Document, node: yaml.Node, *, index: int, directory: Path, produced: set[str]
) -> CommitStep:
    what = f"commit.steps[{index}]"
    fields = doc.fields(node, what=what, keys=("run", "copy", "dest"), required=())
    if ("run" in fields) == ("copy" in fields):
        doc.fail(f"{what} needs exactly one of run: or copy:", node)
    if "run" in fields:
        if "dest" in fields:
            doc.fail(f"{what}: dest: goes with copy:, not run:", fields["dest"])
        return CommitStep(run=doc.text(fields["run"], what=f"{what}.run"))
    copy = doc.context_path(fields["copy"], what=f"{what}.copy")
    if copy not in produced and not (directory / copy).exists():
        doc.fail(
            f"{what}: {copy!r} is neither in {directory} nor an artifact or pack", fields["copy"]
        )
    if "dest" not in fields:
        doc.fail(f"{what}: copy: needs a dest: (an absolute path in the container)", node)
    dest = doc.text(fields["dest"], what=f"{what}.dest")
    if not dest.startswith("/"):
        doc.fail(
            f"{what}.dest must be an absolute path in the container, not {dest!r}", fields["dest"]
        )
    return CommitStep(copy=copy, dest=dest)
