from __future__ import annotations

from lowbuild.entry import main

main()
