"""
Configuration: one YAML file, merged with C{.env}, the environment and the
command line, validated once against the JSON Schema, frozen into a
L{Config}.

The steps, one module each: L{_yamlmarks} reads YAML keeping every node's
line and column; L{load} merges the layers and drives the rest; L{schema}
holds the base schema (C{schema.json}, package data) and merges each plugin
kind's options into it; L{_checks} validates (schema, then what a schema
cannot say); L{_build} turns the checked tree into the frozen values of
L{types}; L{reference} renders the README's configuration reference.
"""

from orchestrator.config.load import LoadedConfig, loadConfig
from orchestrator.config.types import Config, ProcessConfig

__all__ = ["Config", "LoadedConfig", "ProcessConfig", "loadConfig"]
