"""The family in other forms: a `docker buildx bake` file (bake.py) and an air-gap bundle
of everything a build needs (bundle.py)."""
