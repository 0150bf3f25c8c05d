"""lowbuild.yaml + every context's image.yaml → a validated Project.

Every message names the file and line it is about: the YAML is composed into
nodes (which keep their start line) and read section by section, one small
function per section. A mistake does not stop the reading: it is kept (see
_Document.attempt), the parts that do not depend on it are still read, and one
SpecError names every mistake of every file, each file's in line order. Checks that
need the whole family (parents, FROM lines, cycles) live in lowbuild.plan.graph.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Literal, NoReturn, TypeVar
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
    PlatformBase,
    Project,
    RecipeKind,
    Registry,
    Releases,
    Rewrite,
)
from lowbuild.spec.platforms import platform_problem

PROJECT_FILE = "lowbuild.yaml"
DEFAULT_CONTEXTS = ("contexts/*",)
RESERVED_LABEL_PREFIX = "lowbuild."  # lowbuild's own labels (fingerprint, inputs)

# The spellings the loader accepts; spec/schema.py publishes the same ones.
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
TAG_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # also for --set
NAMESPACE_PATTERN = re.compile(
    r"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$"
)
ARG_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # also for --set
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
SHA512_PATTERN = re.compile(r"^[0-9a-f]{128}$")
IMAGE_ID_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")
# host (with a dot or a port, or localhost), then repository path parts
REGISTRY_PREFIX_PATTERN = re.compile(
    r"^(localhost|[a-z0-9-]+(\.[a-z0-9-]+)+|[a-z0-9.-]+:[0-9]{1,5})(:[0-9]{1,5})?"
    r"(/[a-z0-9]+([._-][a-z0-9]+)*)*$"
)
BYTE_SIZE_PATTERN = re.compile(r"^([0-9]+) ?(KiB|MiB|GiB|TiB)?$")
_BYTE_UNITS = {"": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}
_URL_SCHEMES = ("http", "https", "file")

# The keys of each mapping the loader reads (the schema's key sets are held equal to these).
PROJECT_KEYS = (
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
    "platforms",
)
MIRROR_KEYS = ("prefix", "replacement")
BASE_KEYS = ("ref", "id", "platforms")
PLATFORM_BASE_KEYS = ("ref", "id")
REGISTRY_KEYS = ("name", "prefix", "tls-verify")
CACHE_KEYS = ("registry",)
IMAGE_KEYS = (
    "name",
    "parent",
    "kind",
    "dockerfile",
    "tags",
    "refs",
    "args",
    "labels",
    "network",
    "artifacts",
    "packs",
    "test",
    "commit",
    "platforms",
)
ARTIFACT_KEYS = ("file", "urls", "sha256", "sha512", "size", "sha256-url", "releases")
RELEASES_KEYS = ("index", "pattern")
PACK_KEYS = ("into", "from", "format")
TEST_KEYS = ("http", "command", "expect", "timeout")
HTTP_TEST_KEYS = ("port", "path", "status", "expect", "timeout")
COMMIT_KEYS = ("base", "author", "message", "steps", "changes")
COMMIT_STEP_KEYS = ("run", "copy", "dest")
# The choices of the keys that take one word of a few.
KINDS: tuple[RecipeKind, ...] = ("dockerfile", "commit")
NETWORKS: tuple[Literal["default", "none", "host"], ...] = ("default", "none", "host")
PACK_FORMATS: tuple[PackFormat, ...] = ("tar", "tar.gz")

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"

_Choice = TypeVar("_Choice", bound=str)
_T = TypeVar("_T")


def load_project(path: Path | None = None, *, allow_missing_digests: bool = False) -> Project:
    """Read and validate the project file and every image.yaml it names.

    `path` is the project file, or a directory holding lowbuild.yaml; default: the
    nearest lowbuild.yaml in the current directory or above it. Raises SpecError
    naming FILE:LINE for anything wrong: every independent mistake of every file at
    once (up to MAX_REPORTED_ERRORS), each file's in line order.
    `allow_missing_digests` lets an artifact omit `sha256` (it is then "") — only
    for `lowbuild fetch --print-digests`, which computes the digests to pin.
    """
    project_file = _project_file(path)
    doc = _Document.read(project_file)
    try:
        found = doc.attempt(lambda: _project(doc))
    except _TooManyMistakes:
        raise doc.report(stopped=True) from None
    errors = [doc.report()] if doc.mistakes else []
    images: tuple[ImageSpec, ...] = ()
    if found is not None and found[1] is not None:
        # The image files are read even when lowbuild.yaml has a mistake elsewhere.
        try:
            images = _read_images(found[1], allow_missing_digests=allow_missing_digests)
        except SpecError as exc:
            errors.append(exc)
    if errors or found is None:
        raise SpecError.several(errors, limit=MAX_REPORTED_ERRORS)
    _check_unique_names(images)
    return replace(found[0], images=images)


def _project(doc: _Document) -> tuple[Project, list[Path] | None]:
    """lowbuild.yaml without its images, and the context directories (None when
    `contexts:` has a mistake). A mistake is kept in `doc`, and the sections that do
    not depend on it are still read."""
    root = doc.require_root("a project needs at least `name:`")
    fields = doc.fields(root, what=PROJECT_FILE, keys=PROJECT_KEYS, required=("name",))
    name = doc.value(fields, "name", lambda node: _name(doc, node, what="project name"), "")
    registries_read = doc.sound(lambda: _registries(doc, fields.get("registries")))
    return Project(
        name=name,
        root=doc.path.parent,
        namespace=doc.value(fields, "namespace", lambda node: _namespace(doc, node), "lowbuild"),
        tag=doc.value(fields, "tag", lambda node: _tag(doc, node), "latest"),
        engine=doc.value(fields, "engine", lambda node: _engine(doc, node), None),
        rewrites=doc.value(fields, "mirrors", lambda node: _mirrors(doc, node), ()),
        bases=doc.value(fields, "bases", lambda node: _bases(doc, node), ()),
        images=(),
        location=doc.at(root),
        max_download=doc.value(
            fields,
            "max-download",
            lambda node: _byte_size(doc, node, what="max-download"),
            DEFAULT_MAX_DOWNLOAD,
        ),
        registries=registries_read or (),
        # Which registry `cache:` names is only checked against registries that were read.
        cache_registry=doc.value(
            fields, "cache", lambda node: _cache(doc, node, registries_read), None
        ),
        platforms=doc.value(fields, "platforms", lambda node: _platforms(doc, node), ()),
    ), doc.attempt(lambda: _context_directories(doc, fields.get("contexts")))


MAX_REPORTED_ERRORS = 20
# A spec with more mistakes than this is not read further: a file that is all mistakes
# would cost time and memory for nothing shown (a run shows the first
# MAX_REPORTED_ERRORS of them anyway).
MAX_MISTAKES_READ = 10 * MAX_REPORTED_ERRORS


class _TooManyMistakes(Exception):
    """Raised by _Document.keep at MAX_MISTAKES_READ mistakes: stop reading this file.
    Not a SpecError, so that no attempt() along the way swallows it."""


def _read_images(
    directories: Sequence[Path], *, allow_missing_digests: bool
) -> tuple[ImageSpec, ...]:
    """Every context's image.yaml. Each file is checked even after another was wrong
    (and each file to its end, see _Document.attempt), so one run names every mistake."""
    images: list[ImageSpec] = []
    errors: list[SpecError] = []
    for directory in directories:
        if sum(len(error.mistakes) for error in errors) >= MAX_MISTAKES_READ:
            raise SpecError.several(errors, limit=MAX_REPORTED_ERRORS, stopped=True)
        try:
            images.append(_image(directory, allow_missing_digests=allow_missing_digests))
        except SpecError as exc:
            errors.append(exc)
    if errors:
        raise SpecError.several(errors, limit=MAX_REPORTED_ERRORS)
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
    # The independent mistakes found so far: reading goes on after one, with whatever does
    # not depend on it, so a run reports them all (report() makes them one SpecError).
    mistakes: list[SpecError] = field(default_factory=list)

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
        """A mistake that stops reading the part it is in (see attempt)."""
        raise SpecError(message, self.at(node))

    def note(self, message: str, node: yaml.Node) -> None:
        """A mistake after which reading the same part goes on."""
        self.keep(SpecError(message, self.at(node)))

    def keep(self, error: SpecError) -> None:
        """Keep `error`'s mistakes; at MAX_MISTAKES_READ of them, stop reading the file."""
        self.mistakes.extend(error.mistakes)
        if len(self.mistakes) >= MAX_MISTAKES_READ:
            raise _TooManyMistakes

    def attempt(self, read: Callable[[], _T]) -> _T | None:
        """read(), or None when it stopped at a mistake (kept, with any it noted before)."""
        try:
            return read()
        except SpecError as exc:
            self.keep(exc)
            return None

    def sound(self, read: Callable[[], _T]) -> _T | None:
        """read(), or None when it found any mistake: for a part others are checked
        against, so that its mistake is not reported again as theirs."""
        before = len(self.mistakes)
        result = self.attempt(read)
        return result if len(self.mistakes) == before else None

    def value(
        self, fields: dict[str, yaml.Node], key: str, read: Callable[[yaml.Node], _T], default: _T
    ) -> _T:
        """`key`'s value read by `read`; `default` when the key is absent, or when its
        value has a mistake (kept: the file is then reported, and `default` never used)."""
        node = fields.get(key)
        if node is None:
            return default
        result = self.attempt(lambda: read(node))
        return default if result is None else result

    def each(self, node: yaml.Node, *, what: str, read: Callable[[int, yaml.Node], _T]) -> list[_T]:
        """`read(index, item)` of every item of the list `node`: an item with a mistake
        is left out (its mistake kept) and the others are still read."""
        found = []
        for index, item in enumerate(self.items(node, what=what)):
            try:
                found.append(read(index, item))
            except SpecError as exc:
                self.keep(exc)
        return found

    def report(self, *, stopped: bool = False) -> SpecError:
        """The mistakes found, in line order, as one SpecError."""
        ordered = sorted(
            self.mistakes,
            key=lambda error: (
                error.location.line or 0 if error.location else 0,
                error.location.column or 0 if error.location else 0,
            ),
        )
        return SpecError.several(ordered, limit=MAX_REPORTED_ERRORS, stopped=stopped)

    def checked(self, read: Callable[[], _T]) -> _T:
        """read() when it found no mistake in this file; else every mistake it found."""
        try:
            result = self.attempt(read)
        except _TooManyMistakes:
            raise self.report(stopped=True) from None
        if self.mistakes or result is None:
            raise self.report()
        return result

    def require_root(self, needs: str) -> yaml.Node:
        if self.root is None or (isinstance(self.root, yaml.ScalarNode) and self.root.tag == _NULL):
            raise SpecError(f"{self.path.name} is empty; {needs}", Location(self.path, 1))
        return self.root

    def fields(
        self, node: yaml.Node, *, what: str, keys: Sequence[str], required: Sequence[str]
    ) -> dict[str, yaml.Node]:
        """A mapping's values by key. Unknown, duplicate and missing keys are mistakes
        (each noted: the known keys are still read; read a required key with `value`).

        An optional key whose value is null (`parent:` or `parent: ~`) counts as absent.
        """
        if not isinstance(node, yaml.MappingNode):
            self.fail(f"{what} must be a mapping (key: value lines), not {_kind(node)}", node)
        found: dict[str, yaml.Node] = {}
        given: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR:
                self.note(f"{what}: keys must be plain words, not {_kind(key_node)}", key_node)
                continue
            key = str(key_node.value)
            if key not in keys:
                self.note(_unknown_key_message(key, what=what, keys=keys), key_node)
                continue
            if key in given:
                self.note(f"{what}: key {key!r} is given twice", key_node)
                continue
            given.add(key)
            if value_node.tag == _NULL and key not in required:
                continue
            found[key] = value_node
        missing = [key for key in required if key not in found]
        if missing:
            self.note(
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

        def record(index: int, item: yaml.Node) -> tuple[str, yaml.Node, dict[str, yaml.Node]]:
            name = f"{what}[{index}]"
            return name, item, self.fields(item, what=name, keys=keys, required=required)

        return self.each(node, what=what, read=record)

    def texts(self, node: yaml.Node, *, what: str) -> tuple[str, ...]:
        """The strings of a list; a list with a mistake in any item stops at the end
        (the mistakes of every item are kept)."""
        texts = self.each(
            node, what=what, read=lambda index, item: self.text(item, what=f"{what}[{index}]")
        )
        if len(texts) != len(self.items(node, what=what)):
            raise _noted()
        return tuple(texts)

    def text_map(self, node: yaml.Node, *, what: str) -> list[tuple[yaml.Node, str, str]]:
        """A mapping of strings to strings (numbers allowed as values): (key node, key,
        value), without the entries that have a mistake (those are noted)."""
        if not isinstance(node, yaml.MappingNode):
            self.fail(f"{what} must be a mapping (KEY: value lines), not {_kind(node)}", node)
        pairs: list[tuple[yaml.Node, str, str]] = []
        seen: set[str] = set()
        for key_node, value_node in node.value:
            try:
                key = self.text(key_node, what=f"{what} key")
                if key in seen:
                    self.fail(f"{what}: {key!r} is given twice", key_node)
                seen.add(key)
                pairs.append((key_node, key, self.text(value_node, what=f"{what}.{key}")))
            except SpecError as exc:
                self.keep(exc)
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


def _noted() -> SpecError:
    """What stops reading a part whose mistakes are noted already (it adds none)."""
    error = SpecError("(mistakes noted)")
    error.mistakes = ()
    return error


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
    if not NAME_PATTERN.match(value):
        doc.fail(
            f"{what} {value!r} is not valid: use lowercase letters, digits, '.', '_', '-', "
            "starting with a letter or digit",
            node,
        )
    return value


def _tag(doc: _Document, node: yaml.Node) -> str:
    value = doc.text(node, what="tag")
    if not TAG_PATTERN.match(value):
        doc.fail(f"tag {value!r} is not a valid image tag (letters, digits, '_', '.', '-')", node)
    return value


def _namespace(doc: _Document, node: yaml.Node) -> str:
    value = doc.text(node, what="namespace")
    if not NAMESPACE_PATTERN.match(value):
        doc.fail(f"namespace {value!r} is not a valid image repository path", node)
    return value


def _engine(doc: _Document, node: yaml.Node) -> str | None:
    return doc.choice(node, what="engine", choices=ENGINE_NAMES, default="podman")


def _mirrors(doc: _Document, node: yaml.Node) -> tuple[Rewrite, ...]:
    return tuple(
        _mirror(doc, what, fields)
        for what, _, fields in doc.records(
            node, what="mirrors", keys=MIRROR_KEYS, required=MIRROR_KEYS
        )
    )


def _mirror(doc: _Document, what: str, fields: dict[str, yaml.Node]) -> Rewrite:
    return Rewrite(
        prefix=doc.value(fields, "prefix", lambda n: doc.text(n, what=f"{what}.prefix"), ""),
        replacement=doc.value(
            fields, "replacement", lambda n: doc.text(n, what=f"{what}.replacement"), ""
        ),
    )


def registry_prefix_problem(prefix: str) -> str | None:
    """What is wrong with a registry prefix (`host[:port][/path]`), or None."""
    if "://" in prefix:
        return "has a scheme: write host[:port][/path], and `tls-verify: false` for plain http"
    if not REGISTRY_PREFIX_PATTERN.match(prefix):
        return (
            "is not host[:port][/path] in lowercase (a host with a dot or a port, or "
            "localhost, then path parts of letters, digits, '.', '_', '-')"
        )
    return None


def _registries(doc: _Document, node: yaml.Node | None) -> tuple[Registry, ...]:
    found: dict[str, Registry] = {}
    for what, item, fields in doc.records(
        node, what="registries", keys=REGISTRY_KEYS, required=("name", "prefix")
    ):
        registry = _registry(doc, what, item, fields)
        if not registry.name:
            continue
        if registry.name in found:
            first = found[registry.name].location
            doc.note(f"registry {registry.name!r} is declared twice (first at {first})", item)
            continue
        found[registry.name] = registry
    return tuple(found.values())


def _registry(doc: _Document, what: str, item: yaml.Node, fields: dict[str, yaml.Node]) -> Registry:
    return Registry(
        name=doc.value(fields, "name", lambda n: _name(doc, n, what=f"{what}.name"), ""),
        prefix=doc.value(fields, "prefix", lambda n: _registry_prefix(doc, n, what=what), ""),
        tls_verify=doc.value(
            fields, "tls-verify", lambda n: doc.boolean(n, what=f"{what}.tls-verify"), True
        ),
        location=doc.at(item),
    )


def _registry_prefix(doc: _Document, node: yaml.Node, *, what: str) -> str:
    prefix = doc.text(node, what=f"{what}.prefix").rstrip("/")
    problem = registry_prefix_problem(prefix)
    if problem:
        doc.fail(f"{what}.prefix {prefix!r} {problem}", node)
    return prefix


def _cache(doc: _Document, node: yaml.Node, registries: Sequence[Registry] | None) -> str | None:
    """`cache: {registry: NAME}`, NAME one of `registries:` (when those could be read)."""
    fields = doc.fields(node, what="cache", keys=CACHE_KEYS, required=("registry",))
    if "registry" not in fields:
        return None
    name = doc.text(fields["registry"], what="cache.registry")
    names = [registry.name for registry in registries or ()]
    if registries is not None and name not in names:
        known = f"; declared: {', '.join(names)}" if names else "; none is declared"
        doc.fail(
            f"cache.registry {name!r} is not a registry of `registries:`"
            f"{did_you_mean(name, names)}{known}",
            fields["registry"],
        )
    return name


def _bases(doc: _Document, node: yaml.Node) -> tuple[BasePin, ...]:
    pins: dict[str, BasePin] = {}
    for what, item, fields in doc.records(node, what="bases", keys=BASE_KEYS, required=("ref",)):
        pin = _base(doc, what, item, fields)
        if not pin.ref:
            continue
        if pin.ref in pins:
            first = pins[pin.ref].location
            doc.note(f"base {pin.ref!r} is pinned twice (first at {first})", fields["ref"])
            continue
        pins[pin.ref] = pin
    return tuple(pins.values())


def _base(doc: _Document, what: str, item: yaml.Node, fields: dict[str, yaml.Node]) -> BasePin:
    if "id" not in fields and "platforms" not in fields:
        doc.note(f"{what}: give its `id:`, its `platforms:`, or both", item)
    return BasePin(
        ref=doc.value(fields, "ref", lambda n: doc.text(n, what=f"{what}.ref"), ""),
        id=doc.value(fields, "id", lambda n: _image_id(doc, n, what=f"{what}.id"), ""),
        location=doc.at(item),
        platforms=doc.value(
            fields, "platforms", lambda n: _platform_bases(doc, n, what=f"{what}.platforms"), ()
        ),
    )


def _platform_bases(doc: _Document, node: yaml.Node, *, what: str) -> tuple[PlatformBase, ...]:
    """`{linux/arm64: REF}` or `{linux/arm64: {ref: REF, id: ID}}`: the image a base
    stands for on each platform."""
    if not isinstance(node, yaml.MappingNode):
        doc.fail(f"{what} must be a mapping (PLATFORM: ref lines), not {_kind(node)}", node)
    found: dict[str, PlatformBase] = {}
    for key_node, value_node in node.value:
        try:
            platform = _platform(doc, key_node, what=f"{what} key")
            if platform in found:
                doc.fail(f"{what}: {platform!r} is given twice", key_node)
            where = f"{what}.{platform}"
            if isinstance(value_node, yaml.MappingNode):
                fields = doc.fields(
                    value_node, what=where, keys=PLATFORM_BASE_KEYS, required=("ref",)
                )
                ref_node, id_node = fields.get("ref"), fields.get("id")
                ref = doc.text(ref_node, what=f"{where}.ref") if ref_node is not None else ""
                image_id = _image_id(doc, id_node, what=f"{where}.id") if id_node else ""
            else:
                ref, image_id = doc.text(value_node, what=where), ""
            found[platform] = PlatformBase(platform=platform, ref=ref, id=image_id)
        except SpecError as exc:
            doc.keep(exc)
    return tuple(found.values())


def _platform(doc: _Document, node: yaml.Node, *, what: str) -> str:
    value = doc.text(node, what=what)
    problem = platform_problem(value)
    if problem is not None:
        doc.fail(f"{what}: {problem}", node)
    return value


def _platforms(doc: _Document, node: yaml.Node) -> tuple[str, ...]:
    """A non-empty list of distinct platforms, e.g. [linux/amd64, linux/arm64]."""
    items = doc.items(node, what="platforms")
    if not items:
        doc.fail("platforms must list at least one platform, e.g. [linux/amd64]", node)
    found: list[str] = []
    for index, item in enumerate(items):
        try:
            platform = _platform(doc, item, what=f"platforms[{index}]")
            if platform in found:
                doc.fail(f"platforms: {platform!r} is given twice", item)
            found.append(platform)
        except SpecError as exc:
            doc.keep(exc)
    return tuple(found)


def _image_id(doc: _Document, node: yaml.Node, *, what: str) -> str:
    image_id = doc.text(node, what=what)
    if not IMAGE_ID_PATTERN.match(image_id):
        doc.fail(f"{what} must be an image ID, sha256:<64 lowercase hex>, not {image_id!r}", node)
    return image_id


def _context_directories(doc: _Document, node: yaml.Node | None) -> list[Path]:
    """Each context directory once, in the order given (globs sorted). Each entry is
    checked, even after one with a mistake."""
    root = doc.path.parent
    if node is None:
        entries = [(pattern, Location(doc.path)) for pattern in DEFAULT_CONTEXTS]
    else:
        entries = doc.each(
            node,
            what="contexts",
            read=lambda index, item: (doc.text(item, what=f"contexts[{index}]"), doc.at(item)),
        )
    found: dict[Path, None] = {}
    for pattern, origin in entries:
        try:
            found.update(dict.fromkeys(_expand_context_entry(root, pattern, origin)))
        except SpecError as exc:
            doc.keep(exc)
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
    return doc.checked(
        lambda: _image_sections(doc, directory, allow_missing_digests=allow_missing_digests)
    )


_NO_ARTIFACTS: tuple[Artifact, ...] = ()
_NO_PACKS: tuple[Pack, ...] = ()
_NO_TEXTS: tuple[str, ...] = ()


def _image_sections(doc: _Document, directory: Path, *, allow_missing_digests: bool) -> ImageSpec:
    """The image, read section by section: a mistake in one is kept and the others are
    still read (doc.checked then reports them all). A check that depends on a section
    with a mistake (the kind, the artifacts a commit step copies) is left out."""
    root = doc.require_root("an image needs at least `name:`")
    fields = doc.fields(root, what=IMAGE_FILE, keys=IMAGE_KEYS, required=("name",))
    kind = doc.sound(
        lambda: doc.choice(fields.get("kind"), what="kind", choices=KINDS, default="dockerfile")
    )
    name = doc.value(fields, "name", lambda node: _name(doc, node, what="image name"), "")
    parent = doc.value(fields, "parent", lambda node: _parent(doc, node, name=name), None)
    # A commit step may copy what the artifacts and packs produce: checked when they are sound.
    inputs = doc.sound(
        lambda: (
            doc.value(
                fields,
                "artifacts",
                lambda node: _artifacts(doc, node, allow_missing_digests=allow_missing_digests),
                _NO_ARTIFACTS,
            ),
            doc.value(
                fields, "packs", lambda node: _packs(doc, node, directory=directory), _NO_PACKS
            ),
        )
    )
    artifacts, packs = inputs or (_NO_ARTIFACTS, _NO_PACKS)
    produced: set[str] | None = None
    if inputs is not None:
        doc.attempt(lambda: _check_outputs_unique(artifacts, packs))
        produced = {artifact.file for artifact in artifacts} | {pack.into for pack in packs}
    dockerfile = "Dockerfile"
    commit = None
    if kind is not None:
        dockerfile = (
            doc.attempt(lambda: _dockerfile(doc, root, fields, kind=kind, directory=directory))
            or "Dockerfile"
        )
        commit = doc.attempt(
            lambda: _commit(doc, root, fields, kind=kind, directory=directory, produced=produced)
        )
    return ImageSpec(
        name=name,
        directory=directory,
        parent=parent,
        kind=kind or "dockerfile",
        dockerfile=dockerfile,
        tags=doc.value(
            fields,
            "tags",
            lambda node: tuple(doc.each(node, what="tags", read=lambda _, item: _tag(doc, item))),
            (),
        ),
        refs=doc.value(fields, "refs", lambda node: _refs(doc, node), ()),
        args=doc.value(fields, "args", lambda node: _args(doc, node), ()),
        # A label's one-line rule is for kind: commit, so it waits for a readable kind.
        labels=doc.value(fields, "labels", lambda node: _labels(doc, node, kind=kind), ()),
        artifacts=artifacts,
        packs=packs,
        test=doc.value(fields, "test", lambda node: _test(doc, node), None),
        commit=commit,
        network=doc.value(
            fields,
            "network",
            lambda node: doc.choice(node, what="network", choices=NETWORKS, default="default"),
            "default",
        ),
        platforms=doc.value(fields, "platforms", lambda node: _platforms(doc, node), ()),
        location=doc.at(fields.get("name", root)),
        parent_location=doc.at(fields["parent"]) if "parent" in fields else None,
        platforms_location=doc.at(fields["platforms"]) if "platforms" in fields else None,
    )


def _parent(doc: _Document, node: yaml.Node, *, name: str) -> str:
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


# An image reference without a digest: [host[:port]/]path[:tag], path lowercase.
IMAGE_REF_PATTERN = re.compile(
    r"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-]+[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$"
)


def _refs(doc: _Document, node: yaml.Node) -> tuple[str, ...]:
    def ref(index: int, item: yaml.Node) -> str:
        text = doc.text(item, what=f"refs[{index}]")
        if not IMAGE_REF_PATTERN.match(text):
            doc.fail(
                f"refs[{index}]: {text!r} is not an image reference "
                "([host[:port]/]path[:tag], the path in lowercase, no digest)",
                item,
            )
        return text

    return tuple(dict.fromkeys(doc.each(node, what="refs", read=ref)))


def _args(doc: _Document, node: yaml.Node) -> tuple[tuple[str, str], ...]:
    pairs = []
    for key_node, key, value in doc.text_map(node, what="args"):
        if not ARG_NAME_PATTERN.match(key):
            doc.note(f"build arg name {key!r} is not valid (letters, digits, '_')", key_node)
        pairs.append((key, value))
    return tuple(sorted(pairs))


def _labels(
    doc: _Document, node: yaml.Node, *, kind: RecipeKind | None
) -> tuple[tuple[str, str], ...]:
    pairs = []
    for key_node, key, value in doc.text_map(node, what="labels"):
        if kind == "commit" and ("\n" in value or "\r" in value):
            # A commit applies labels as changes: `docker commit -c` reads Dockerfile lines.
            doc.note(f"label {key!r}: a commit recipe's label value must be one line", key_node)
        if key.startswith(RESERVED_LABEL_PREFIX):
            doc.note(
                f"label {key!r}: labels starting with {RESERVED_LABEL_PREFIX!r} are lowbuild's own",
                key_node,
            )
        elif any(char.isspace() for char in key) or "=" in key:
            doc.note(f"label key {key!r} must not contain spaces or '='", key_node)
        pairs.append((key, value))
    return tuple(sorted(pairs))


def _artifacts(
    doc: _Document, node: yaml.Node, *, allow_missing_digests: bool
) -> tuple[Artifact, ...]:
    return tuple(
        doc.each(
            node,
            what="artifacts",
            read=lambda index, item: _artifact(
                doc, item, index=index, allow_missing_digests=allow_missing_digests
            ),
        )
    )


def _artifact(
    doc: _Document, node: yaml.Node, *, index: int, allow_missing_digests: bool
) -> Artifact:
    what = f"artifacts[{index}]"
    fields = doc.fields(node, what=what, keys=ARTIFACT_KEYS, required=("file",))
    file = doc.value(fields, "file", lambda n: doc.context_path(n, what=f"{what}.file"), "")
    called = f"artifact {file!r}" if file else what
    urls = doc.value(fields, "urls", lambda n: _urls(doc, n, called=called), _NO_TEXTS)
    sha256 = ""
    if "sha256" in fields:
        sha256 = doc.value(
            fields,
            "sha256",
            lambda n: _digest(doc, n, what=f"{called} sha256", pattern=SHA256_PATTERN, digits=64),
            "",
        )
    elif not allow_missing_digests:
        doc.note(
            f"{called} has no sha256: every artifact must be pinned by digest; "
            "`lowbuild fetch --print-digests` downloads it and prints the sha256 to paste here",
            node,
        )
    return Artifact(
        file=file,
        urls=urls,
        sha256=sha256,
        sha512=doc.value(
            fields,
            "sha512",
            lambda n: _digest(doc, n, what=f"{called} sha512", pattern=SHA512_PATTERN, digits=128),
            None,
        ),
        size=doc.value(fields, "size", lambda n: _byte_size(doc, n, what=f"{called} size"), None),
        location=doc.at(node),
        sha256_url=doc.value(
            fields, "sha256-url", lambda n: _url(doc, n, what=f"{called} sha256-url"), None
        ),
        releases=doc.value(fields, "releases", lambda n: _releases(doc, n, called=called), None),
    )


def _url(doc: _Document, node: yaml.Node, *, what: str) -> str:
    text = doc.text(node, what=what)
    if urlsplit(text).scheme not in _URL_SCHEMES:
        doc.fail(f"{what}: URL {redact(text)!r} must start with http://, https:// or file://", node)
    return text


def _releases(doc: _Document, node: yaml.Node, *, called: str) -> Releases:
    what = f"{called} releases"
    fields = doc.fields(node, what=what, keys=RELEASES_KEYS, required=RELEASES_KEYS)
    index = doc.value(fields, "index", lambda n: _url(doc, n, what=f"{what} index"), "")
    pattern = doc.value(fields, "pattern", lambda n: _version_pattern(doc, n, what=what), "")
    return Releases(index=index, pattern=pattern)


def _version_pattern(doc: _Document, node: yaml.Node, *, what: str) -> str:
    text = doc.text(node, what=f"{what} pattern")
    try:
        groups = re.compile(text).groups
    except re.error as exc:
        doc.fail(f"{what} pattern: not a regular expression: {exc}", node)
    if groups != 1:
        doc.fail(f"{what} pattern: needs exactly one group, the version (it has {groups})", node)
    return text


def _urls(doc: _Document, node: yaml.Node, *, called: str) -> tuple[str, ...]:
    def url(index: int, item: yaml.Node) -> str:
        return _url(doc, item, what=f"{called} urls[{index}]")

    # `urls: []` (or none): cache-only, an input only `cache add` or a bundle brings.
    return tuple(doc.each(node, what="urls", read=url))


def _byte_size(doc: _Document, node: yaml.Node, *, what: str) -> int:
    """A number of bytes: `1048576`, or with a binary unit: `512MiB`, `4GiB`."""
    value = doc.text(node, what=what)
    match = BYTE_SIZE_PATTERN.match(value)
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


def _packs(doc: _Document, node: yaml.Node, *, directory: Path) -> tuple[Pack, ...]:
    return tuple(
        _pack(doc, what, item, fields, directory=directory)
        for what, item, fields in doc.records(
            node, what="packs", keys=PACK_KEYS, required=("into", "from")
        )
    )


def _pack(
    doc: _Document, what: str, item: yaml.Node, fields: dict[str, yaml.Node], *, directory: Path
) -> Pack:
    into = doc.value(fields, "into", lambda n: doc.context_path(n, what=f"{what}.into"), "")
    default: PackFormat = "tar" if into.endswith(".tar") else "tar.gz"
    return Pack(
        into=into,
        source=doc.value(
            fields,
            "from",
            lambda n: _pack_source(doc, n, what=what, into=into, directory=directory),
            "",
        ),
        format=doc.value(
            fields,
            "format",
            lambda n: doc.choice(n, what=f"{what}.format", choices=PACK_FORMATS, default=default),
            default,
        ),
        location=doc.at(item),
    )


def _pack_source(doc: _Document, node: yaml.Node, *, what: str, into: str, directory: Path) -> str:
    source = doc.context_path(node, what=f"{what}.from")
    if not (directory / source).is_dir():
        called = f"pack {into!r}" if into else what
        doc.fail(f"{called}: directory {directory / source} does not exist", node)
    return source


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


def _test(doc: _Document, node: yaml.Node) -> HttpTest | CommandTest | None:
    fields = doc.fields(node, what="test", keys=TEST_KEYS, required=())
    if ("http" in fields) == ("command" in fields):
        doc.fail("test needs exactly one of http: or command:", node)
    if "http" in fields:
        for key in ("expect", "timeout"):
            if key in fields:
                doc.note(f"test.{key} belongs inside test.http for an http test", fields[key])
        return _http_test(doc, fields["http"])
    return CommandTest(
        command=doc.value(fields, "command", lambda n: _command(doc, n), ()),
        expect=doc.value(fields, "expect", lambda n: doc.text(n, what="test.expect"), None),
        timeout=doc.value(
            fields, "timeout", lambda n: doc.seconds(n, what="test.timeout"), COMMAND_TEST_TIMEOUT_S
        ),
    )


def _http_test(doc: _Document, node: yaml.Node) -> HttpTest:
    fields = doc.fields(node, what="test.http", keys=HTTP_TEST_KEYS, required=("port",))
    return HttpTest(
        port=doc.value(
            fields, "port", lambda n: doc.integer(n, what="test.http.port", low=1, high=65535), 0
        ),
        path=doc.value(fields, "path", lambda n: _http_path(doc, n), "/"),
        status=doc.value(
            fields,
            "status",
            lambda n: doc.integer(n, what="test.http.status", low=100, high=599),
            200,
        ),
        expect=doc.value(fields, "expect", lambda n: doc.text(n, what="test.http.expect"), None),
        timeout=doc.value(
            fields,
            "timeout",
            lambda n: doc.seconds(n, what="test.http.timeout"),
            HTTP_TEST_TIMEOUT_S,
        ),
    )


def _http_path(doc: _Document, node: yaml.Node) -> str:
    path = doc.text(node, what="test.http.path")
    if not path.startswith("/"):
        doc.fail(f"test.http.path must start with '/', not {path!r}", node)
    return path


def _command(doc: _Document, node: yaml.Node) -> tuple[str, ...]:
    """A list is run as is; a string is run by `sh -c`, so pipes and `&&` work."""
    if isinstance(node, yaml.SequenceNode):
        if not node.value:
            doc.fail("test.command must not be empty", node)
        return doc.texts(node, what="test.command")
    return ("sh", "-c", doc.text(node, what="test.command"))


def _commit(
    doc: _Document,
    root: yaml.Node,
    fields: dict[str, yaml.Node],
    *,
    kind: RecipeKind,
    directory: Path,
    produced: set[str] | None,
) -> CommitRecipe | None:
    """The commit recipe. `produced` (the artifacts' and packs' files) is None when those
    have a mistake: a step's copy: is then not checked against them."""
    node = fields.get("commit")
    if kind != "commit":
        if node is not None:
            doc.fail("commit: is only for kind: commit (add `kind: commit` or remove it)", node)
        return None
    if node is None:
        doc.fail(
            "kind: commit needs a commit: block (base, steps, changes)", fields.get("kind", root)
        )
    recipe = doc.fields(node, what="commit", keys=COMMIT_KEYS, required=("base",))
    return CommitRecipe(
        base=doc.value(recipe, "base", lambda n: doc.text(n, what="commit.base"), ""),
        steps=doc.value(
            recipe,
            "steps",
            lambda n: tuple(
                doc.each(
                    n,
                    what="commit.steps",
                    read=lambda index, step: _commit_step(
                        doc, step, index=index, directory=directory, produced=produced
                    ),
                )
            ),
            (),
        ),
        author=doc.value(recipe, "author", lambda n: doc.text(n, what="commit.author"), ""),
        message=doc.value(recipe, "message", lambda n: doc.text(n, what="commit.message"), ""),
        changes=doc.value(recipe, "changes", lambda n: _commit_changes(doc, n), ()),
        location=doc.at(recipe.get("base", node)),
    )


def _commit_changes(doc: _Document, node: yaml.Node) -> tuple[str, ...]:
    """The changes, each checked now: a bad one is a spec error at its line, not an engine
    failure after the recipe's steps ran."""

    def change(index: int, item: yaml.Node) -> str:
        text = doc.text(item, what=f"commit.changes[{index}]")
        try:
            parse_change(text)
        except SpecError as exc:
            doc.fail(str(exc), item)
        return text

    return tuple(doc.each(node, what="commit.changes", read=change))


def _commit_step(
    doc: _Document, node: yaml.Node, *, index: int, directory: Path, produced: set[str] | None
) -> CommitStep:
    what = f"commit.steps[{index}]"
    fields = doc.fields(node, what=what, keys=COMMIT_STEP_KEYS, required=())
    if ("run" in fields) == ("copy" in fields):
        doc.fail(f"{what} needs exactly one of run: or copy:", node)
    if "run" in fields:
        if "dest" in fields:
            doc.note(f"{what}: dest: goes with copy:, not run:", fields["dest"])
        return CommitStep(run=doc.text(fields["run"], what=f"{what}.run"))
    copy = doc.value(
        fields,
        "copy",
        lambda n: _copy_source(doc, n, what=what, directory=directory, produced=produced),
        "",
    )
    if "dest" not in fields:
        doc.fail(f"{what}: copy: needs a dest: (an absolute path in the container)", node)
    dest = doc.text(fields["dest"], what=f"{what}.dest")
    if not dest.startswith("/"):
        doc.fail(
            f"{what}.dest must be an absolute path in the container, not {dest!r}", fields["dest"]
        )
    return CommitStep(copy=copy, dest=dest)


def _copy_source(
    doc: _Document, node: yaml.Node, *, what: str, directory: Path, produced: set[str] | None
) -> str:
    copy = doc.context_path(node, what=f"{what}.copy")
    if produced is not None and copy not in produced and not (directory / copy).exists():
        doc.fail(f"{what}: {copy!r} is neither in {directory} nor an artifact or pack", node)
    return copy
