"""Every independent mistake of a spec in one run, through the real command line: each
as FILE:LINE, a file's in line order, up to the cap, with exit 2; a mistake that only
follows from another is not reported a second time; a spec that is all mistakes is not
read to its end."""

from __future__ import annotations

import json
from pathlib import Path

from test_graph_cli import run_lowbuild, write_family

from lowbuild.spec.load import MAX_MISTAKES_READ, MAX_REPORTED_ERRORS


def mistakes(project: Path, *args: str) -> tuple[list[str], dict[str, object]]:
    """`lowbuild graph --json` in `project`, which must fail as bad input: the lines of
    the message on stderr (without `error: `) and the JSON error record on stdout."""
    result = run_lowbuild("graph", "--json", *args, cwd=project)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.removeprefix("error: ").rstrip("\n").split("\n")
    record = json.loads(result.stdout)["error"]
    assert record["message"].split("\n") == lines  # the same message on both
    return lines, record


def test_three_mistakes_in_one_image_yaml_are_named_in_one_run(tmp_path: Path) -> None:
    write_family(tmp_path)
    web = tmp_path / "contexts" / "web" / "image.yaml"
    web.write_text(
        "name: web\n"
        "parent: base\n"
        "tags: ['1.0', 'not a tag']\n"  # 3
        "artifacts:\n"
        "  - file: a.tgz\n"
        "    urls: [https://example.org/a.tgz]\n"
        "    sha256: ABC\n"  # 7
        "networks: none\n"  # 8: an unknown key
        "test:\n"
        "  http: {port: 0}\n"  # 10
    )

    lines, record = mistakes(tmp_path)

    assert lines == [
        f"{web}:3: tag 'not a tag' is not a valid image tag (letters, digits, '_', '.', '-')",
        f"{web}:7: artifact 'a.tgz' sha256 must be 64 lowercase hex digits, not 'ABC'",
        f"{web}:8: unknown key 'networks' in image.yaml (did you mean 'network'?); "
        "valid keys: name, parent, kind, dockerfile, tags, refs, args, labels, network, "
        "artifacts, packs, test, commit, platforms",
        f"{web}:10: test.http.port must be between 1 and 65535, not 0",
        "4 mistakes in 1 file",
    ]
    # The record points at the first mistake, for an editor or a CI annotation.
    assert (record["file"], record["line"], record["exit_code"]) == (str(web), 3, 2)
    assert record["kind"] == "spec"


def test_two_mistakes_in_lowbuild_yaml_and_one_in_an_image_yaml(tmp_path: Path) -> None:
    write_family(tmp_path)
    project = tmp_path / "lowbuild.yaml"
    project.write_text(
        "name: seed\n"
        "engine: rkt\n"  # 2
        "registries:\n"
        "  - {name: hub, prefix: 'https://registry.example.org'}\n"  # 4
    )
    web = tmp_path / "contexts" / "web" / "image.yaml"
    web.write_text("name: web\nparent: base\nlabels: {lowbuild.mine: x}\n")

    lines, record = mistakes(tmp_path)

    assert len(lines) == 4, lines
    assert lines[0].startswith(f"{project}:2: engine must be one of podman, docker")
    assert lines[1].startswith(f"{project}:4: registries[0].prefix 'https://registry")
    assert "has a scheme" in lines[1]
    assert lines[2].startswith(f"{web}:3: label 'lowbuild.mine': labels starting with")
    assert lines[3] == "3 mistakes in 2 files"
    assert (record["file"], record["line"]) == (str(project), 2)


def test_a_syntax_error_in_one_file_and_a_mistake_in_another_are_both_named(
    tmp_path: Path,
) -> None:
    write_family(tmp_path)
    base = tmp_path / "contexts" / "base" / "image.yaml"
    base.write_text("name: base\ntags: ['1', '2'\n")  # unclosed: nothing after it is read
    web = tmp_path / "contexts" / "web" / "image.yaml"
    web.write_text("name: web\nparent: base\nnetwork: bridge\n")

    lines, _record = mistakes(tmp_path)

    assert lines[0].startswith(f"{base}:2:7: YAML syntax error: this `[` is not closed")
    assert lines[1:3] == ["    tags: ['1', '2'", "          ^"]  # the line, a caret under `[`
    assert lines[3] == f"{web}:3: network must be one of default, none, host, not 'bridge'"
    assert lines[4] == "2 mistakes in 2 files"


def test_the_report_stops_at_the_cap_and_says_how_many_more(tmp_path: Path) -> None:
    write_family(tmp_path)
    web = tmp_path / "contexts" / "web" / "image.yaml"
    web.write_text(
        "name: web\nparent: base\ntags:\n" + "".join(f"  - 'bad tag {i}'\n" for i in range(50))
    )

    lines, _record = mistakes(tmp_path)

    shown = [line for line in lines if line.startswith(f"{web}:")]
    assert len(shown) == MAX_REPORTED_ERRORS == 20
    # In line order: the tags from line 4 on, the first twenty of them.
    assert [int(line.split(":")[1]) for line in shown] == list(range(4, 24))
    assert lines[-2:] == [
        f"... and {50 - 20} more (fix these and run again)",
        "50 mistakes in 1 file",
    ]


def test_a_spec_that_is_all_mistakes_is_not_read_to_its_end(tmp_path: Path) -> None:
    """Reading stops at MAX_MISTAKES_READ mistakes (a file of 50 000 would cost time and
    memory for nothing shown), and the report says there may be more."""
    write_family(tmp_path)
    web = tmp_path / "contexts" / "web" / "image.yaml"
    web.write_text("name: web\nparent: base\ntags:\n" + "  - 'x x'\n" * 50_000)

    lines, _record = mistakes(tmp_path)

    assert len([line for line in lines if line.startswith(f"{web}:")]) == MAX_REPORTED_ERRORS
    assert lines[-2:] == [
        f"... and {MAX_MISTAKES_READ - MAX_REPORTED_ERRORS} more (fix these and run again)",
        f"at least {MAX_MISTAKES_READ} mistakes in 1 file (too many: the reading stopped there)",
    ]


def test_after_enough_mistakes_no_further_image_yaml_is_read(tmp_path: Path) -> None:
    write_family(tmp_path)
    for name in ("a", "b", "c"):
        context = tmp_path / "contexts" / name
        context.mkdir()
        (context / "Dockerfile").write_text("FROM lowbuild/base\n")
        (context / "image.yaml").write_text(
            f"name: {name}\nparent: base\ntags:\n" + "  - 'x x'\n" * (MAX_MISTAKES_READ - 1)
        )

    lines, _record = mistakes(tmp_path)

    # a and b are read (each just under the ceiling), c is not.
    assert lines[-1] == (
        f"at least {2 * (MAX_MISTAKES_READ - 1)} mistakes in 2 files "
        "(too many: the reading stopped there)"
    )


def test_a_mistake_that_follows_from_another_is_not_reported_again(tmp_path: Path) -> None:
    write_family(tmp_path)
    web = tmp_path / "contexts" / "web" / "image.yaml"
    web.write_text(
        "name: web\n"
        "parent: base\n"
        "kind: comit\n"  # 3: with no kind to go by, the commit: block is not judged
        "commit:\n"
        "  base: base\n"
        "  steps: [{copy: a.tgz, dest: /a.tgz}]\n"
        "artifacts: {file: a.tgz}\n"  # 7: not a list, so nothing inside it is judged
        "test:\n"
        "  - command: [true]\n"  # 9: not a mapping; its list item is not judged
    )

    lines, _record = mistakes(tmp_path)

    assert [line.split(": ", 1)[0] for line in lines[:-1]] == [
        f"{web}:3",
        f"{web}:7",
        f"{web}:9",
    ], lines
    assert "kind must be one of dockerfile, commit, not 'comit'" in lines[0]
    assert "artifacts must be a list, not a mapping" in lines[1]
    assert "test must be a mapping (key: value lines), not a list" in lines[2]
    assert lines[-1] == "3 mistakes in 1 file"


def test_a_spec_without_mistakes_still_loads(tmp_path: Path) -> None:
    """The same command on the family as written: no error, so the tests above fail for
    the mistakes they make and nothing else."""
    write_family(tmp_path)
    result = run_lowbuild("graph", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "error" not in json.loads(result.stdout)
