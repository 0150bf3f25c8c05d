"""Exports of the family to other tools' formats (e.g. a `docker buildx bake` file)."""
