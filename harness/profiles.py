"""Named YAML files in configs/ (machines, drivers): found by name, parsed, and checked for typos."""

from __future__ import annotations

from pathlib import Path

import yaml


def load_named(folder: Path, name: str, kind: str, keys: set[str], error: type[Exception]) -> dict:
    """configs/<folder>/<name>.yaml (or NAME as a path to a .yaml file of the user's own) as a
    mapping; any mistake is one `error` naming the file."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else folder / f"{name}.yaml"
    if not path.exists() and path.parent != folder:
        raise error(f"{kind} file {path} does not exist")
    if not path.exists():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise error(f"unknown {kind} {name!r}; known: {', '.join(known)}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise error(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping with keys {sorted(keys)}")
    if unknown := set(data) - keys:
        raise error(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(keys)}")
    return data
