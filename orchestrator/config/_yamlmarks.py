"""
Load YAML safely while remembering where every key and value came from.

Configuration errors must name the file, line and column of the offending
value, but PyYAML's constructors throw the node marks away.  We compose the
node tree ourselves and build plain Python values from it, recording each
node's position under its JSON path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

__all__ = ["Located", "YAMLLoadError", "loadWithMarks"]


Path = tuple  # a JSON path: a tuple of str keys and int indexes


@dataclass(frozen=True)
class Located:
    """
    Where a YAML node starts, 1-based as editors count.

    @ivar line: the line number.
    @ivar column: the column number.
    """

    line: int
    column: int


class YAMLLoadError(Exception):
    """
    The YAML text is not well formed.

    @ivar location: where the parser gave up.
    @ivar problem: the parser's explanation.
    """

    def __init__(self, location: Located, problem: str) -> None:
        super().__init__(problem)
        self.location = location
        self.problem = problem


def _mark(node: yaml.Node) -> Located:
    return Located(node.start_mark.line + 1, node.start_mark.column + 1)


def loadWithMarks(text: str) -> tuple[Any, dict[Path, Located], dict[Path, Located]]:
    """
    Parse one YAML document.

    @param text: the document.
    @return: C{(data, valueMarks, keyMarks)}; the marks map a JSON path to
        the position of the value, or of the mapping key, at that path.
    @raise YAMLLoadError: on any syntax error, duplicate key or a tag the
        safe loader refuses.
    """
    loader = yaml.SafeLoader(text)
    valueMarks: dict[Path, Located] = {}
    keyMarks: dict[Path, Located] = {}
    try:
        node = loader.get_single_node()
        if node is None:
            return None, valueMarks, keyMarks
        data = _build(loader, node, (), valueMarks, keyMarks)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = Located(mark.line + 1, mark.column + 1) if mark else Located(1, 1)
        raise YAMLLoadError(where, e.problem or str(e)) from None
    except yaml.YAMLError as e:
        raise YAMLLoadError(Located(1, 1), str(e)) from None
    finally:
        loader.dispose()
    return data, valueMarks, keyMarks


def _build(loader, node, path, valueMarks, keyMarks):
    valueMarks[path] = _mark(node)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result = {}
        for keyNode, valueNode in node.value:
            key = loader.construct_object(keyNode, deep=True)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise yaml.MarkedYAMLError(
                    problem="mapping keys must be plain scalars",
                    problem_mark=keyNode.start_mark,
                )
            key = str(key) if not isinstance(key, str) else key
            if key in result:
                raise yaml.MarkedYAMLError(
                    problem=f"duplicate key {key!r}", problem_mark=keyNode.start_mark
                )
            keyMarks[path + (key,)] = _mark(keyNode)
            result[key] = _build(loader, valueNode, path + (key,), valueMarks, keyMarks)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(loader, item, path + (i,), valueMarks, keyMarks)
            for i, item in enumerate(node.value)
        ]
    return loader.construct_object(node, deep=True)
