"""The program doctor's probe image runs: a static Linux executable made here, byte by byte,
so that the probe builds `FROM scratch` and needs no base image, no shell and no network.

It prints PROBE_MARKER and a newline on standard output and exits 0; nothing else. One
ELF64 file: the file header, one loadable segment (read + execute) mapping the whole file,
then the machine code and the message. Made for the host's architecture (x86_64 or
aarch64); another one gets None, and doctor says it cannot probe there.
"""

from __future__ import annotations

import platform
import struct

PROBE_MARKER = "lowbuild-doctor-ok"

_LOAD_ADDRESS = 0x400000
_HEADER_SIZE = 64  # ELF64 file header
_SEGMENT_HEADER_SIZE = 56  # one ELF64 program header
_CODE_OFFSET = _HEADER_SIZE + _SEGMENT_HEADER_SIZE

_EM_X86_64 = 0x3E
_EM_AARCH64 = 0xB7
# platform.machine() spellings → the ELF machine number and the code maker for it
_MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def _x86_64_code(message: bytes) -> tuple[int, bytes]:
    """write(1, message, len); exit(0), with the message right after the code."""
    code = b"".join(
        (
            b"\xb8\x01\x00\x00\x00",  # mov eax, 1 (write)
            b"\xbf\x01\x00\x00\x00",  # mov edi, 1 (stdout)
            b"\x48\x8d\x35\x00\x00\x00\x00",  # lea rsi, [rip + disp32] (patched below)
            b"\xba" + struct.pack("<I", len(message)),  # mov edx, len
            b"\x0f\x05",  # syscall
            b"\xb8\x3c\x00\x00\x00",  # mov eax, 60 (exit)
            b"\x31\xff",  # xor edi, edi
            b"\x0f\x05",  # syscall
        )
    )
    lea_end = 5 + 5 + 7  # the displacement counts from the end of the lea
    displacement = len(code) - lea_end
    code = code[: lea_end - 4] + struct.pack("<i", displacement) + code[lea_end:]
    return _EM_X86_64, code + message


def _aarch64_code(message: bytes) -> tuple[int, bytes]:
    """The same two system calls on aarch64 (write = 64, exit = 93)."""

    def movz(register: int, value: int) -> int:  # movz xN, #value
        return 0xD2800000 | (value << 5) | register

    instructions = [movz(0, 1), 0, movz(2, len(message)), movz(8, 64), 0xD4000001]
    instructions += [movz(0, 0), movz(8, 93), 0xD4000001]  # svc #0
    offset = 4 * len(instructions) - 4  # from the adr (second instruction) to the message
    instructions[1] = 0x10000000 | ((offset & 3) << 29) | ((offset >> 2) << 5) | 1  # adr x1
    return _EM_AARCH64, struct.pack(f"<{len(instructions)}I", *instructions) + message


def probe_executable(machine: str | None = None) -> bytes | None:
    """The probe program for `machine` (default: this host's), or None for an architecture
    it is not made for."""
    arch = _MACHINES.get((machine or platform.machine()).lower())
    if arch is None:
        return None
    message = (PROBE_MARKER + "\n").encode()
    elf_machine, body = _x86_64_code(message) if arch == "x86_64" else _aarch64_code(message)
    size = _CODE_OFFSET + len(body)
    header = struct.pack(
        "<4sBBBBB7sHHIQQQIHHHHHH",
        b"\x7fELF",
        2,  # 64-bit
        1,  # little endian
        1,  # ELF version
        0,  # System V ABI
        0,  # ABI version
        b"\0" * 7,
        2,  # an executable
        elf_machine,
        1,  # ELF version
        _LOAD_ADDRESS + _CODE_OFFSET,  # entry point
        _HEADER_SIZE,  # program headers right after this header
        0,  # no section headers
        0,  # flags
        _HEADER_SIZE,
        _SEGMENT_HEADER_SIZE,
        1,  # one program header
        0,
        0,
        0,
    )
    segment = struct.pack(
        "<IIQQQQQQ",
        1,  # PT_LOAD
        5,  # read + execute
        0,  # the whole file, from its first byte
        _LOAD_ADDRESS,
        _LOAD_ADDRESS,
        size,
        size,
        0x1000,
    )
    return header + segment + body
