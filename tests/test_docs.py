"""
The documentation keeps up with the code: every hook is documented under a
heading that is its exact signature, and every configuration key is in the
README's reference.
"""

import os
import re

import pluggy
import pytest

from orchestrator.hooks import specs as hookspecs
from orchestrator.hooks.manager import buildPluginManager, collectKinds
from orchestrator.config.schema import masterSchema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
        return f.read()


def _hookNames():
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    return pm, [name for name in dir(pm.hook) if not name.startswith("_")]


@pytest.mark.parametrize("name", _hookNames()[1])
def test_hook_documented_with_exact_signature(name):
    """Each hookspec has a heading in docs/plugins.md that is its exact signature."""
    pm, _ = _hookNames()
    args = ", ".join(getattr(pm.hook, name).spec.argnames)
    headings = re.findall(r"^### `(.+)`$", _read("docs", "plugins.md"), re.M)
    assert f"{name}({args})" in headings, f"docs/plugins.md lacks a heading `{name}({args})`"


@pytest.mark.parametrize("name", _hookNames()[1])
def test_hookspec_has_docstring(name):
    """Each hookspec documents itself too."""
    assert (getattr(hookspecs, name).__doc__ or "").strip()


def test_docs_document_no_missing_hook():
    """Every hook heading in docs/plugins.md names a real hook (no stale docs)."""
    _, names = _hookNames()
    headings = re.findall(r"^### `(\w+)\(", _read("docs", "plugins.md"), re.M)
    assert sorted(headings) == sorted(names)


def _schemaKeys(schema):
    """Dotted keys of every property in the master schema, process keys under processes.NAME."""
    keys = set()


    def walk(node, prefix):
        while isinstance(node, dict) and "$ref" in node:
            target = schema
            for part in node["$ref"][2:].split("/"):
                target = target[part]
            node = target
        props = dict(node.get("properties", {}))
        for branch in node.get("allOf", []):
            props.update(branch.get("then", {}).get("properties", {}))
        for key, sub in props.items():
            path = f"{prefix}.{key}" if prefix else key
            keys.add(path)
            walk(sub, path)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and extra.get("$ref"):
            walk(extra, f"{prefix}.NAME")
        items = node.get("items")
        if isinstance(items, dict):
            walk(items, f"{prefix}[]")

    walk(schema, "")
    return keys


def test_every_config_key_in_readme():
    """The README's configuration reference names every key of the schema, plugin kinds included."""
    schema = masterSchema(collectKinds(buildPluginManager(entryPoints=False)))
    readme = _read("README.md")
    missing = sorted(k for k in _schemaKeys(schema) if f"`{k}`" not in readme)
    assert not missing, f"README.md lacks: {missing}"


def test_every_schema_property_has_description():
    """Every property in the master schema carries a description (the reference is generated from them)."""
    schema = masterSchema(collectKinds(buildPluginManager(entryPoints=False)))
    missing = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, sub in node.get("properties", {}).items():
                if isinstance(sub, dict) and "$ref" not in sub and "description" not in sub:
                    missing.append(f"{path}.{key}")
            for key, value in node.items():
                if key != "if":  # selector conditions, not keys
                    walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(schema, "")
    assert not missing, missing


def test_readme_reference_is_generated_from_schema():
    """README's configuration reference equals `orchestrator config-reference` output."""
    from orchestrator.config.reference import BEGIN, END, configReference

    schema = masterSchema(collectKinds(buildPluginManager(entryPoints=False)))
    readme = _read("README.md")
    section = readme[readme.index(BEGIN): readme.index(END) + len(END)]
    assert section == configReference(schema), "run: orchestrator config-reference, paste into README.md"


def test_readme_opens_with_the_two_commands():
    """The README's quick start gives make run and make test."""
    readme = _read("README.md")
    quick = readme[readme.index("## Quick start"):]
    assert "make run" in quick[:800] and "make test" in quick[:800]


def test_env_example_lists_every_seed_variable():
    """conf/.env.example documents every seed variable."""
    from orchestrator.config.load import SEED_VARIABLES

    example = _read("conf", ".env.example")
    for name in SEED_VARIABLES:
        assert re.search(rf"^#? ?{name}=", example, re.M), name


def _architectureRows():
    """
    The paths each row of docs/architecture.md's module table names: a
    bare name (C{_params.py} after C{orchestrator/web/_render.py}) is in
    the folder of the path before it in the same cell, or at the top.
    """
    named = []
    for line in _read("docs", "architecture.md").splitlines():
        if not line.startswith("| `"):
            continue
        folder = ""
        for token in re.findall(r"`([^`]+)`", line.split("|")[1]):
            if "/" in token:
                folder = token if token.endswith("/") else os.path.dirname(token) + "/"
                named.append(token)
            elif os.path.exists(os.path.join(ROOT, folder, token)):
                named.append(folder + token)
            else:
                named.append(token)
    return named


def _modules():
    found = []
    for top in ("orchestrator", "plugins"):
        for directory, folders, files in os.walk(os.path.join(ROOT, top)):
            folders[:] = [f for f in folders if f != "__pycache__"]
            for name in files:
                if name.endswith(".py") and name != "__init__.py":
                    found.append(os.path.relpath(os.path.join(directory, name), ROOT))
    return sorted(found)


def test_architecture_table_names_every_module():
    """Every module in orchestrator/ and plugins/ has a row in docs/architecture.md's table."""
    named = set(_architectureRows())
    missing = [m for m in _modules() if m not in named]
    assert not missing, f"docs/architecture.md has no row for {missing}"


def test_architecture_table_names_only_existing_files():
    """No row of docs/architecture.md's table names a file or folder that does not exist."""
    absent = [p for p in _architectureRows() if not os.path.exists(os.path.join(ROOT, p))]
    assert not absent, f"docs/architecture.md names {absent}, which do not exist"


def test_architecture_rooms_list_every_subpackage():
    """The folder listing in docs/architecture.md shows every subpackage of orchestrator/."""
    text = _read("docs", "architecture.md")
    rooms = text[text.index("```"):text.index("```", text.index("```") + 3)]
    packages = sorted(name for name in os.listdir(os.path.join(ROOT, "orchestrator"))
                      if os.path.isfile(os.path.join(ROOT, "orchestrator", name, "__init__.py")))
    missing = [p for p in packages if not re.search(rf"^\s+{re.escape(p)}/", rooms, re.M)]
    assert not missing, f"the rooms in docs/architecture.md lack {missing}"
