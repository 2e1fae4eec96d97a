"""Admin operations behind `exchange federation ...` and `exchange node ...`.

The CLI and the simulation harness both call these, so the harness sets up a
federation exactly as an admin does.
"""
