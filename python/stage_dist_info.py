"""Writes a minimal dist-info for the package staged in the build tree.

  stage_dist_info.py PYPROJECT OUT_DIR

METADATA (name, version) and entry_points.txt come from pyproject.toml, the
one place they are declared, so the build tree's eplb is found by
importlib.metadata (vLLM's plugin loader) exactly as an installed one is.
"""
import os
import sys
import tomllib


def main() -> int:
    pyproject, out = sys.argv[1], sys.argv[2]
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    os.makedirs(out, exist_ok=True)
    groups = project.get("entry-points", {})
    lines = []
    for group, entries in groups.items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in entries.items()]
        lines.append("")
    # Written whole, then renamed: a reader never sees half a file.
    for name, text in (
        ("METADATA", f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"),
        ("entry_points.txt", "\n".join(lines)),
    ):
        tmp = os.path.join(out, name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(out, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
