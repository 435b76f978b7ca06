"""Thin command-line mains: parse, dispatch, exit codes (python -m planar3d.<tool>)."""
