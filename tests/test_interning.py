"""
What keeps a configuration's memory proportional to what differs between
its processes: L{orchestrator._interning.Interner} (one object for equal
values) and L{orchestrator.config.types.PackedMapping} (C{Config.sources}
and C{Config.document} kept compressed until read).
"""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

import pytest

from orchestrator._interning import Interner
from orchestrator.config.types import HealthConfig, PackedMapping, RestartConfig, freeze
from tests.test_config import load

ALIKE = """\
processes:
  one:
    command: ["{python}", "-c", "pass"]
    env: {MODE: fast}
    restart: {backoff: {initial: 0.5}}
  two:
    command: ["{python}", "-c", "pass"]
    env: {MODE: fast}
    restart: {backoff: {initial: 0.5}}
  three:
    command: ["{python}", "-c", "pass"]
    env: {MODE: slow}
    restart: {backoff: {initial: 0.7}}
"""


def test_interner_returns_the_first_of_equal_values():
    """An equal value given later comes back as the first one; a different one as itself."""
    share = Interner()
    first = freeze({"a": [1, 2], "b": {"c": "d"}})
    again = freeze({"a": [1, 2], "b": {"c": "d"}})
    other = freeze({"a": [1, 3], "b": {"c": "d"}})
    assert share(first) is first
    assert share(again) is first
    assert share(other) is other


def test_interner_tells_types_and_hidden_fields_apart():
    """Equal-comparing values of other types, or with other fields left out of ==, are not merged."""
    share = Interner()
    assert share((1,)) == (1,)
    assert share((1.0,)) is not share((1,))
    assert share((True,)) is not share((1,))
    proxy = MappingProxyType({"k": "v"})
    assert share({"k": "v"}) is not proxy and share(proxy) is proxy
    health = HealthConfig(process="a")
    withEnv = replace(health, env=freeze({"SECRET": "x"}))
    assert health == withEnv  # env takes no part in ==
    assert share(health) is health
    assert share(withEnv) is withEnv


def test_interner_passes_unhashable_values_through():
    """A value with something unhashable inside is returned as it is, not shared."""
    share = Interner()
    value = RestartConfig(options=MappingProxyType({"x": [1]}))
    assert share(value) is value
    assert share(RestartConfig(options=MappingProxyType({"x": [1]}))) is not value


def test_processes_configured_alike_share_their_settings():
    """Equal restart, stop, output settings, probe options and environments are one object per load."""
    config = load(ALIKE)
    one, two, three = (config.processes[n] for n in ("one", "two", "three"))
    assert one.restart is two.restart and one.restart is not three.restart
    assert one.stop is two.stop is three.stop
    assert one.output is two.output is three.output
    assert one.env is two.env and one.env is not three.env
    assert one.command is two.command
    assert dict(three.env) == {"MODE": "slow"}
    assert dict(three.restart.options["backoff"])["initial"] == 0.7


def test_packed_mapping_reads_like_the_frozen_mapping():
    """Lookups, iteration, length, equality and repr are those of freeze(value)."""
    value = {"a": {"b": [1, {"c": 2}]}, "d": "e"}
    packed, frozen = PackedMapping(value), freeze(value)
    assert len(packed) == 2
    assert packed == frozen
    assert packed["a"] == frozen["a"] and isinstance(packed["a"], MappingProxyType)
    assert packed["a"]["b"] == (1, frozen["a"]["b"][1])
    assert list(packed) == ["a", "d"] and packed.get("zz", 7) == 7
    assert repr(packed) == repr(frozen)
    with pytest.raises(TypeError):
        packed["d"] = "x"
    with pytest.raises(TypeError):
        packed["a"]["b"] = 1


def test_packed_mapping_peek_keeps_nothing_unpacked():
    """peek answers one key and leaves the mapping packed; the first real read unpacks it once."""
    packed = PackedMapping({"processes": "yaml", "admin.listen": "default"})
    assert packed.peek("processes", "default") == "yaml"
    assert packed.peek("missing", "default") == "default"
    assert packed._value is None
    assert packed["admin.listen"] == "default"
    assert packed._value is not None and packed._packed == b""
    assert packed.peek("processes") == "yaml"


def test_loaded_sources_and_document_are_packed_and_complete():
    """A loaded configuration's sources and document are packed, yet read as before."""
    config = load(ALIKE)
    assert isinstance(config.sources, PackedMapping) and isinstance(config.document, PackedMapping)
    assert config.sources.peek("processes.one.env.MODE") == "yaml"
    assert config.sources["processes.one.stop.timeout"] == "default"
    assert config.document["processes"]["three"]["env"]["MODE"] == "slow"
    assert config.document["processes"]["one"]["command"][1] == "-c"
    assert len(config.sources) == len(list(config.sources)) > 100
