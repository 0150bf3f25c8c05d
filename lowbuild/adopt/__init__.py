"""`lowbuild init`: read a tree of hand-made image directories and write the family spec."""
