"""
Load YAML safely, with bounds, while remembering where every key and value
came from.

Configuration errors must name the file, line and column of the offending
value, but PyYAML's constructors throw the node marks away.  We compose the
node tree ourselves and build plain Python values from it, recording each
node's position under its JSON path.

Composing and building are both bounded, because a 575-byte file of nested
aliases ("billion laughs") names a billion values: the node tree may hold
at most L{MAX_NODES} nodes and L{MAX_DEPTH} levels of nesting, and
building (where each alias is expanded at every path that uses it, since
the merged document is later changed in place) stops once it has made
L{MAX_NODES} values.  Merge keys (C{<<: *base}) are applied here too, under
the same budget, rather than by PyYAML's C{flatten_mapping}, which copies
merged entries into every mapping without bound.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from orchestrator.config._read import lineColumn

__all__ = ["Located", "YAMLLoadError", "loadWithMarks", "MAX_NODES", "MAX_DEPTH"]

#: The most YAML nodes composed, and the most values built from them
#: (aliases expanded at each use), per document.
MAX_NODES = 100_000

#: The deepest nesting of mappings and sequences.
MAX_DEPTH = 64

_MERGE_TAG = "tag:yaml.org,2002:merge"

#: Nodes composed or built between two offers of the GIL to other threads.
_YIELD_EVERY = 64


def _yieldGIL() -> None:
    """
    Let other threads run.  A reload parses in the reactor's thread pool;
    a CPU-bound thread keeps the GIL for the interpreter's whole switch
    interval (5 ms) each time the reactor thread gives it up for a system
    call, so without this an HTTP answer needing a few dozen system calls
    waits a few hundred milliseconds.  C{sched_yield} releases the GIL.
    """
    os.sched_yield()

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
    The YAML text is not well formed, or exceeds a bound.

    @ivar location: where the parser gave up.
    @ivar problem: the parser's explanation.
    @ivar syntax: C{False} when the text is well formed but exceeds a
        bound (too many nodes, too deep).
    """

    def __init__(self, location: Located, problem: str, syntax: bool = True) -> None:
        super().__init__(problem)
        self.location = location
        self.problem = problem
        self.syntax = syntax


class _OverBound(yaml.MarkedYAMLError):
    """
    Well-formed YAML past one of this module's bounds.
    """

    def __init__(self, problem: str, mark) -> None:
        super().__init__(problem=problem, problem_mark=mark)


def _located(mark) -> Located:
    return Located(mark.line + 1, mark.column + 1) if mark is not None else Located(1, 1)


def _mark(node: yaml.Node) -> Located:
    return _located(node.start_mark)


class _Alias:
    """
    One use of an anchor: the anchored node, and where the alias stands
    (so a budget overrun is reported where the expansion was asked for).
    """

    def __init__(self, node: yaml.Node, mark) -> None:
        self.node = node
        self.mark = mark


class _Bounded(Composer):
    """
    A composer that counts nodes and nesting, and keeps each alias use as
    an L{_Alias}.  Mixed with a parser (libyaml's when installed: it scans
    seven times faster than PyYAML's own) and the safe constructor.
    """

    def _bound(self, maxNodes: int, maxDepth: int) -> None:
        self._maxNodes = maxNodes
        self._maxDepth = maxDepth
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            return _Alias(super().compose_node(parent, index), mark)
        mark = self.peek_event().start_mark
        self._nodes += 1
        if self._nodes % _YIELD_EVERY == 0:
            _yieldGIL()
        if self._nodes > self._maxNodes:
            raise _OverBound(f"more than {self._maxNodes} nodes", mark)
        self._depth += 1
        try:
            if self._depth > self._maxDepth:
                raise _OverBound(f"nesting deeper than {self._maxDepth} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class _BoundedLoader(_Bounded, CParser, SafeConstructor, Resolver):
        def __init__(self, text: str, maxNodes: int, maxDepth: int) -> None:
            CParser.__init__(self, text)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            self._bound(maxNodes, maxDepth)

else:  # pragma: no cover - PyYAML built without libyaml

    class _BoundedLoader(_Bounded, yaml.SafeLoader):  # type: ignore[no-redef]
        def __init__(self, text: str, maxNodes: int, maxDepth: int) -> None:
            yaml.SafeLoader.__init__(self, text)
            self._bound(maxNodes, maxDepth)


def loadWithMarks(text: str, maxNodes: int = MAX_NODES, maxDepth: int = MAX_DEPTH
                  ) -> tuple[Any, dict[Path, Located], dict[Path, Located]]:
    """
    Parse one YAML document.

    @param text: the document.
    @param maxNodes: the node and value budget (see the module docstring).
    @param maxDepth: the deepest nesting accepted.
    @return: C{(data, valueMarks, keyMarks)}; the marks map a JSON path to
        the position of the value, or of the mapping key, at that path.
    @raise YAMLLoadError: on any syntax error, duplicate key, a tag the
        safe loader refuses, or a bound exceeded.
    """
    result, error = _parse(text, maxNodes, maxDepth)
    if error is not None:
        # Raised here, with the parse's frames gone: the node tree and the
        # parser's exception are freed now, in this thread (a reload reads
        # in a worker thread), not later by whoever drops this error.
        raise error
    return result


def _parse(text: str, maxNodes: int, maxDepth: int):
    loader = _BoundedLoader(text, maxNodes, maxDepth)
    try:
        node = Composer.get_single_node(loader)
        if node is None:
            return (None, {}, {}), None
        builder = _Builder(loader, maxNodes, maxDepth)
        data = builder.build(node, ())
        return (data, builder.valueMarks, builder.keyMarks), None
    except yaml.MarkedYAMLError as e:
        return None, YAMLLoadError(_located(e.problem_mark or e.context_mark), e.problem or str(e),
                                   syntax=not isinstance(e, _OverBound))
    except yaml.reader.ReaderError as e:
        line, column = lineColumn(text, e.position) if isinstance(e.position, int) else (1, 1)
        return None, YAMLLoadError(Located(line, column), f"unacceptable character {e.character!r}: "
                                   f"{e.reason}" if isinstance(e.character, str) else str(e))
    except yaml.YAMLError as e:
        return None, YAMLLoadError(Located(1, 1), str(e))
    except RecursionError:  # pragma: no cover - the depth bound comes first
        return None, YAMLLoadError(Located(1, 1), f"nesting deeper than {maxDepth} levels",
                                   syntax=False)
    finally:
        loader.dispose()


class _Builder:
    """
    Build plain values from composed nodes, counting every value made.
    """

    def __init__(self, loader: _BoundedLoader, maxNodes: int, maxDepth: int) -> None:
        self.loader = loader
        self.budget = maxNodes
        self.maxNodes = maxNodes
        self.maxDepth = maxDepth
        self.valueMarks: dict[Path, Located] = {}
        self.keyMarks: dict[Path, Located] = {}
        self._aliasMark = None  # the outermost alias being expanded

    def build(self, node, path: Path) -> Any:
        if isinstance(node, _Alias):
            outer = self._aliasMark is None
            if outer:
                self._aliasMark = node.mark
            try:
                return self.build(node.node, path)
            finally:
                if outer:
                    self._aliasMark = None
        self.budget -= 1
        if self.budget % _YIELD_EVERY == 0:
            _yieldGIL()
        if self.budget < 0:
            raise _OverBound(f"aliases expand past {self.maxNodes} nodes",
                             self._aliasMark or node.start_mark)
        if len(path) > self.maxDepth:
            raise _OverBound(f"nesting deeper than {self.maxDepth} levels (a recursive alias?)",
                             self._aliasMark or node.start_mark)
        self.valueMarks[path] = _mark(node)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        return self.loader.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict:
        result: dict = {}
        merged: dict = {}
        for keyNode, valueNode in node.value:
            target = keyNode.node if isinstance(keyNode, _Alias) else keyNode
            if not isinstance(target, yaml.ScalarNode):
                raise yaml.MarkedYAMLError(problem="mapping keys must be plain scalars",
                                           problem_mark=target.start_mark)
            if target.tag == _MERGE_TAG:
                self._merge(valueNode, path, merged)
                continue
            key = self.loader.construct_object(target, deep=True)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise yaml.MarkedYAMLError(problem="mapping keys must be plain scalars",
                                           problem_mark=target.start_mark)
            key = key if isinstance(key, str) else str(key)
            if key in result:
                raise yaml.MarkedYAMLError(problem=f"duplicate key {key!r}",
                                           problem_mark=target.start_mark)
            self.keyMarks[path + (key,)] = _mark(target)
            result[key] = self.build(valueNode, path + (key,))
        self.valueMarks[path] = _mark(node)  # a merged source marked it last
        # Keys written out beat merged ones (YAML's merge key rules).
        return {**merged, **result} if merged else result

    def _merge(self, valueNode, path: Path, merged: dict) -> None:
        source = valueNode.node if isinstance(valueNode, _Alias) else valueNode
        items = source.value if isinstance(source, yaml.SequenceNode) else [valueNode]
        for item in items:
            target = item.node if isinstance(item, _Alias) else item
            if not isinstance(target, yaml.MappingNode):
                raise yaml.MarkedYAMLError(problem="a merge key (<<) takes a mapping or a list of mappings",
                                           problem_mark=target.start_mark)
            for key, value in self.build(item, path).items():
                merged.setdefault(key, value)  # earlier sources win
