"""Commit changes are checked before an engine runs, read with the Dockerfile's rules, and
written in the syntax each engine parses (docker lines, podman pairs, buildah config flags)."""

from __future__ import annotations

import pytest

from lowbuild.engines.changes import (
    buildah_config_args,
    docker_changes,
    label_change,
    podman_changes,
)
from lowbuild.errors import SpecError
from lowbuild.spec.changes import env_pairs, label_pairs, parse_change, parse_changes


@pytest.mark.parametrize(
    ("text", "instruction", "argument"),
    [
        ('CMD ["busybox", "httpd", "-f"]', "CMD", '["busybox", "httpd", "-f"]'),
        ("CMD httpd -f", "CMD", "httpd -f"),
        ("cmd httpd -f", "CMD", "httpd -f"),  # keywords are case-insensitive, as in Dockerfiles
        ("EXPOSE 80 443/tcp 53/udp", "EXPOSE", "80 443/tcp 53/udp"),
        ('ENV A=1 B="two words"', "ENV", 'A=1 B="two words"'),
        ("ENV JAVA_HOME /opt/jdk", "ENV", "JAVA_HOME /opt/jdk"),
        ("USER 1000:1000", "USER", "1000:1000"),
        ("WORKDIR /srv", "WORKDIR", "/srv"),
        ('LABEL org.example.a=b "with space"=c', "LABEL", 'org.example.a=b "with space"=c'),
        ('ENTRYPOINT ["/entry.sh"]', "ENTRYPOINT", '["/entry.sh"]'),
        ("VOLUME /data", "VOLUME", "/data"),
    ],
)
def test_valid_changes_are_accepted(text: str, instruction: str, argument: str) -> None:
    change = parse_change(text)
    assert (change.instruction, change.argument) == (instruction, argument)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("RUN apt-get update", "not one of"),  # a build step, not a config change
        ("STOPSIGNAL SIGINT", "not one of"),  # podman takes it, docker refuses it
        ("CMD", "needs an argument"),
        ("EXPOSE eighty", "not a port"),
        ("EXPOSE 70000", "not a port"),
        ("EXPOSE 80/icmp", "not a port"),
        ("EXPOSE 132/sctp", "not a port"),  # podman refuses sctp
        ("ENV HOME_COPY=$HOME", "write a literal $ as \\$"),  # engines expand it differently
        ('LABEL a="${X}"', "write a literal $ as \\$"),
        ("WORKDIR srv", "absolute path"),  # docker joins it to the container's, podman not
        ("ENV 1A=x", "not a variable name"),
        ("ENV A=1 B", "not NAME=value"),
        ("LABEL novalue", "not key=value"),
        ('CMD ["unterminated"', "not a valid JSON array"),
        ("CMD [1, 2]", "array of strings"),
        ("CMD a\nRUN b", "single line"),
        ("LABEL a='unclosed", "quotation"),
        ('LABEL "a=b"=c', "quotation"),  # docker and podman both split at the first =
    ],
)
def test_invalid_changes_name_the_string_and_the_problem(text: str, complaint: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_change(text)
    assert complaint in str(raised.value)
    assert repr(text) in str(raised.value)


def test_buildah_config_gets_the_same_effect_as_commit_changes() -> None:
    changes = parse_changes(
        [
            'CMD ["cat", "state.txt"]',
            "ENTRYPOINT /entry.sh",
            "EXPOSE 9090 53/udp",
            'ENV A=1 B="two words"',
            "USER 1000",
            "WORKDIR /srv",
            'LABEL org.example.a=b "c d"=e',
            "VOLUME /data /cache",
        ]
    )
    assert buildah_config_args(changes) == [
        "--cmd", '["cat", "state.txt"]',
        "--entrypoint", '["/bin/sh", "-c", "/entry.sh"]',  # shell form, as a Dockerfile does
        "--port", "9090/tcp",  # a bare port means tcp, buildah must be told
        "--port", "53/udp",
        "--env", "A=1",
        "--env", "B=two words",
        "--user", "1000",
        "--workingdir", "/srv",
        "--label", "org.example.a=b",
        "--label", "c d=e",
        "--volume", '"/data"',  # CSV-quoted: buildah splits --volume at commas
        "--volume", '"/cache"',
    ]  # fmt: skip


def test_values_are_read_with_the_dockerfiles_quoting_rules() -> None:
    change = parse_change(
        """ENV A=1 B="two  words" C='it"s' D="say \\"hi\\"" E=a\\ b F="\\$HOME" G=k=v H="""
    )
    assert env_pairs(change) == [
        ("A", "1"),
        ("B", "two  words"),
        ("C", 'it"s'),
        ("D", 'say "hi"'),
        ("E", "a b"),
        ("F", "$HOME"),
        ("G", "k=v"),
        ("H", ""),
    ]
    assert env_pairs(parse_change("ENV JAVA_HOME /opt/my jdk")) == [("JAVA_HOME", "/opt/my jdk")]
    assert label_pairs(parse_change('LABEL "c d"=e \'x\'="y z"')) == [("c d", "e"), ("x", "y z")]


@pytest.mark.parametrize(
    "value",
    [
        '{"files":{"a b":"sha256:1"},"v":1}',  # lowbuild.inputs is JSON
        'quote " and \\ backslash',
        "  blanks at both ends  ",
        "dollar $HOME and ${X}",
        "k=v=w",
        "it's",
        "",
        "nön-ascii ✓",
    ],
)
def test_a_label_lowbuild_writes_reads_back_exactly(value: str) -> None:
    assert label_pairs(parse_change(label_change("lowbuild.inputs", value))) == [
        ("lowbuild.inputs", value)
    ]


def test_podman_gets_one_quoted_pair_per_change() -> None:
    # podman splits each --change at its first `=` and strips one pair of outer quotes.
    changes = parse_changes(
        [
            'ENV A=1 B="two words"',
            """LABEL a=1 json='{"k": "v w"}'""",
            "EXPOSE 80 53/udp",
            "CMD echo hi",
            "USER 1000",
            "WORKDIR /srv",
            "VOLUME /data /cache",
        ]
    )
    assert podman_changes(changes) == [
        'ENV "A"="1"',
        'ENV "B"="two words"',
        'LABEL "a"="1"',
        'LABEL "json"="{"k": "v w"}"',
        "EXPOSE 80/tcp",
        "EXPOSE 53/udp",
        'CMD ["/bin/sh", "-c", "echo hi"]',
        "USER 1000",
        "WORKDIR /srv",
        'VOLUME ["/data"]',
        'VOLUME ["/cache"]',
    ]


def test_docker_gets_dockerfile_lines_with_every_value_quoted_literally() -> None:
    changes = parse_changes(['ENV A=1 B="two words"', 'LABEL "c d"="say \\"\\$x\\""'])
    assert docker_changes(changes) == [
        'ENV A="1"',
        'ENV B="two words"',
        'LABEL "c d"="say \\"\\$x\\""',
    ]


def test_buildah_env_keeps_a_dollar_literal() -> None:
    # buildah config expands $NAME in --env values; $$ is a literal $ there.
    assert buildah_config_args(parse_changes(['ENV P="\\$PATH:/x"'])) == ["--env", "P=$$PATH:/x"]
