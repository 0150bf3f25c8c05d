from __future__ import annotations

from lowbuild.cli import main

main()
