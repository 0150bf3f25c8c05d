"""lowbuild: build whole families of container images from verified inputs."""

from __future__ import annotations

__version__ = "0.1.0"
