"""The program doctor's probe image runs is made byte by byte (doctor/probe_binary.py): it
must be a valid static ELF executable that prints the marker and exits 0. Run here for real
on the host's architecture, and for the other one under qemu-user when it is installed."""

from __future__ import annotations

import platform
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from lowbuild.doctor.probe_binary import PROBE_MARKER, probe_executable

ELF_MACHINES = {"x86_64": 0x3E, "aarch64": 0xB7}
QEMU = {"x86_64": "qemu-x86_64-static", "aarch64": "qemu-aarch64-static"}


def write_program(tmp_path: Path, machine: str) -> Path:
    program = probe_executable(machine)
    assert program is not None
    path = tmp_path / f"probe-{machine}"
    path.write_bytes(program)
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("machine", sorted(ELF_MACHINES))
def test_the_program_is_a_static_executable_for_its_machine(machine: str) -> None:
    program = probe_executable(machine)
    assert program is not None
    assert program[:4] == b"\x7fELF" and program[4] == 2  # 64-bit
    e_type, e_machine = struct.unpack_from("<HH", program, 16)
    assert (e_type, e_machine) == (2, ELF_MACHINES[machine])
    (entry,) = struct.unpack_from("<Q", program, 24)
    p_type, p_flags, p_offset, p_vaddr = struct.unpack_from("<IIQQ", program, 64)
    p_filesz, p_memsz = struct.unpack_from("<QQ", program, 64 + 32)
    assert (p_type, p_flags, p_offset, p_filesz, p_memsz) == (1, 5, 0, len(program), len(program))
    assert p_vaddr < entry < p_vaddr + len(program)
    assert (PROBE_MARKER + "\n").encode() in program


def test_an_unknown_architecture_gets_no_program() -> None:
    assert probe_executable("s390x") is None


def test_the_host_runs_its_program_and_it_prints_the_marker(tmp_path: Path) -> None:
    machine = platform.machine()
    if machine not in ELF_MACHINES:
        pytest.skip(f"no probe program is made for {machine}")
    done = subprocess.run([write_program(tmp_path, machine)], capture_output=True, timeout=10)
    assert (done.returncode, done.stdout, done.stderr) == (0, (PROBE_MARKER + "\n").encode(), b"")


@pytest.mark.parametrize("machine", sorted(ELF_MACHINES))
def test_each_program_runs_under_its_emulator(machine: str, tmp_path: Path) -> None:
    qemu = shutil.which(QEMU[machine])
    if qemu is None:
        pytest.skip(f"{QEMU[machine]} is not installed (apt-get install qemu-user-static)")
    done = subprocess.run([qemu, write_program(tmp_path, machine)], capture_output=True, timeout=30)
    assert (done.returncode, done.stdout) == (0, (PROBE_MARKER + "\n").encode())
