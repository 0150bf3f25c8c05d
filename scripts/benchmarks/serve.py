"""A loopback HTTP file server whose every connection is limited to a rate, as a remote
mirror's per-connection throughput is: parallel downloads then pay off as they do on
real networks. Run as `python serve.py DIR BYTES_PER_S`; prints the port, serves until
killed."""

from __future__ import annotations

import sys
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO

_SLICE = 256 * 1024


class _ThrottledHandler(SimpleHTTPRequestHandler):
    rate: float = 50e6

    def copyfile(self, source: BinaryIO, outputfile: BinaryIO) -> None:  # type: ignore[override]
        started = time.monotonic()
        sent = 0
        while chunk := source.read(_SLICE):
            outputfile.write(chunk)
            sent += len(chunk)
            ahead = sent / self.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    directory, rate = Path(sys.argv[1]), float(sys.argv[2])
    handler = type("Handler", (_ThrottledHandler,), {"rate": rate})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(directory)))
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
