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
