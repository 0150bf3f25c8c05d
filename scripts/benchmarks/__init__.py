"""Pieces of scripts/bench.py that can be unit tested: statistics and tables, generated
trees and families, the bake-driven baselines."""
