"""Commit changes are checked before an engine runs, and translate to buildah config."""

from __future__ import annotations

import pytest

from lowbuild.engines.changes import buildah_config_args, parse_change, parse_changes
from lowbuild.errors import SpecError


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
        ("ENV 1A=x", "not a variable name"),
        ("ENV A=1 B", "not NAME=value"),
        ("LABEL novalue", "not key=value"),
        ('CMD ["unterminated"', "not a valid JSON array"),
        ("CMD [1, 2]", "array of strings"),
        ("CMD a\nRUN b", "single line"),
        ("LABEL a='unclosed", "quotation"),
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
        "--volume", "/data",
        "--volume", "/cache",
    ]  # fmt: skip
