"""Generated inputs for the benchmarks: a source-like tree to pack, a large family to plan,
and artifacts to fetch. Same arguments → same bytes, so runs and machines compare."""

from __future__ import annotations

import hashlib
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

_WORDS = (
    "int",
    "return",
    "static",
    "void",
    "const",
    "struct",
    "include",
    "define",
    "if",
    "else",
    "for",
    "while",
    "break",
    "case",
    "switch",
    "default",
    "continue",
    "goto",
    "sizeof",
    "typedef",
    "union",
    "enum",
    "extern",
    "register",
    "volatile",
    "char",
    "short",
    "long",
    "float",
    "double",
    "signed",
    "unsigned",
    "buffer",
    "length",
    "index",
    "value",
    "result",
    "error",
    "status",
    "config",
    "server",
    "client",
    "request",
    "response",
    "handler",
    "module",
    "context",
)


@dataclass(frozen=True)
class TreeShape:
    """How big a generated tree is: about `total_bytes` in `files` files, in directories
    of about `per_dir` files; one file in `binary_every` is random bytes (incompressible,
    like images and archives in a real tree), the rest source-like text."""

    total_bytes: int = 200 * 1024 * 1024
    files: int = 20_000
    per_dir: int = 50
    binary_every: int = 10
    seed: int = 7


def tree_plan(shape: TreeShape) -> list[tuple[str, int, bool]]:
    """Every file of the tree: (relative path, size, binary?), deterministic in `shape`.
    Sizes vary (0.25x to 1.75x the mean) but add up to `total_bytes` exactly."""
    rng = random.Random(shape.seed)
    weights = [rng.uniform(0.25, 1.75) for _ in range(shape.files)]
    scale = shape.total_bytes / sum(weights)
    sizes = [int(weight * scale) for weight in weights]  # rounded down: the sum falls short
    sizes[-1] += shape.total_bytes - sum(sizes)  # by less than one byte per file
    plan = []
    for index, size in enumerate(sizes):
        directory = index // shape.per_dir
        top, sub = divmod(directory, 20)
        binary = index % shape.binary_every == 0
        path = f"d{top:03d}/s{sub:02d}/f{index:05d}.{'bin' if binary else 'c'}"
        plan.append((path, size, binary))
    return plan


def file_content(rng: random.Random, size: int, *, binary: bool) -> bytes:
    """`size` bytes: random (binary) or lines of words (compresses roughly like source)."""
    if binary:
        return rng.randbytes(size)
    out = bytearray()
    while len(out) < size:
        words = rng.choices(_WORDS, k=rng.randint(3, 12))
        out += (" " * rng.randint(0, 8) + " ".join(words) + ";\n").encode()
    return bytes(out[:size])


def write_tree(root: Path, shape: TreeShape) -> str:
    """Write the tree under `root` (which must not exist) and return a digest of its
    plan and content, to tell whether an existing tree is the wanted one."""
    digest = hashlib.sha256(repr(shape).encode())
    rng = random.Random(shape.seed + 1)
    for path, size, binary in tree_plan(shape):
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        data = file_content(rng, size, binary=binary)
        target.write_bytes(data)
        digest.update(path.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def family_parents(count: int, *, roots: int = 10, seed: int = 11) -> list[int | None]:
    """For a generated family of `count` images: each image's parent index (None: built
    on the external base). Parents always come earlier, so the family is acyclic; depth
    grows slowly, like a real family (a base, a few runtimes, many leaves)."""
    rng = random.Random(seed)
    parents: list[int | None] = []
    for index in range(count):
        if index < roots:
            parents.append(None)
        else:
            # Favour early images as parents: wide and shallow.
            parents.append(int(index * rng.random() ** 2))
    return parents


def write_family(root: Path, count: int, *, namespace: str, base: str) -> None:
    """A family of `count` images under `root` (lowbuild.yaml + contexts/), each a
    trivial context: a Dockerfile that COPYs one small file onto its parent."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "lowbuild.yaml").write_text(
        f"name: generated-{count}\nnamespace: {namespace}\ntag: latest\ncontexts: ['contexts/*']\n"
    )
    for index, parent in enumerate(family_parents(count)):
        name = f"img{index:05d}"
        context = root / "contexts" / name
        context.mkdir(parents=True, exist_ok=True)
        parent_line = "" if parent is None else f"parent: img{parent:05d}\n"
        (context / "image.yaml").write_text(f"name: {name}\n{parent_line}kind: dockerfile\n")
        source = base if parent is None else f"{namespace}/img{parent:05d}:latest"
        (context / "Dockerfile").write_text(
            f"FROM {source}\nCOPY payload.txt /payload/{name}.txt\n"
        )
        (context / "payload.txt").write_text(f"{name}\n")


def copy_seed_family(source: Path, target: Path, *, namespace: str) -> None:
    """lowbuild.yaml + contexts/ of the project at `source` copied to `target` under
    `namespace`; each `FROM lowbuild/...` of a family image renamed with it (external
    bases such as localhost/lowbuild/bookworm keep their names). Nothing else changes."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    text, count = re.subn(
        r"(?m)^namespace:.*$", f"namespace: {namespace}", (source / "lowbuild.yaml").read_text()
    )
    if count != 1:
        raise ValueError(f"{source / 'lowbuild.yaml'} has {count} `namespace:` lines, not one")
    (target / "lowbuild.yaml").write_text(text)
    shutil.copytree(source / "contexts", target / "contexts", symlinks=True)
    for dockerfile in (target / "contexts").glob("*/Dockerfile"):
        text = dockerfile.read_text()
        dockerfile.write_text(re.sub(r"(?m)^FROM lowbuild/", f"FROM {namespace}/", text))
