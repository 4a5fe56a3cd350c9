"""
Hostile configuration files, shared by the start and reload attacks: each
is written by a function so that a 50 MB file costs nothing until used.

Each entry is C{name -> (write(path), the words the located error must
contain)}.
"""

from __future__ import annotations

__all__ = ["HOSTILE", "BILLION_LAUGHS", "RELOADABLE", "rejections"]

#: The configuration a reload attack replaces (a C{startOrchestrator}
#: template): the demo backend, restarted at once however often it dies.
RELOADABLE = """
admin: {{listen: "tcp:{{admin_port}}:interface=127.0.0.1"}}
processes:
  backend:
    command: ["{{python}}", "{{demo}}", "--port", "{{backend_port}}"]
    url: "http://127.0.0.1:{{backend_port}}"
    restart: {{policy: always, interval: 0, max_attempts: 1000}}
    health: {{interval: 1, start_interval: 0.1}}
""".format()


def rejections(orchestrator, words: str) -> int:
    """
    How many reloads the orchestrator's log shows rejected for C{words}.
    """
    return sum(1 for line in orchestrator.log().splitlines()
               if "reload rejected" in line and words in line)

#: The classic "billion laughs": 9 levels of 9 aliases, 9^9 strings from
#: about 400 bytes (the 575-byte original pads it with whitespace).
BILLION_LAUGHS = "".join(
    [f'a: &a [{", ".join(chr(34) + "lol" + chr(34) for _ in range(9))}]\n']
    + [f"{b}: &{b} [{', '.join('*' + a for _ in range(9))}]\n"
       for a, b in zip("abcdefgh", "bcdefghi")]
)


def _text(content: str):
    def write(path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(content)
    return write


def _bytes(content: bytes):
    def write(path: str) -> None:
        with open(path, "wb") as f:
            f.write(content)
    return write


def _fifty(path: str) -> None:
    line = "# " + "x" * 77 + "\n"
    block = line * 12800  # 1 MiB
    with open(path, "w", encoding="utf-8") as f:
        f.write("processes: {}\n")
        for _ in range(50):
            f.write(block)


HOSTILE = {
    "billion-laughs": (_text(BILLION_LAUGHS), "aliases expand past 100000 nodes"),
    "50MB": (_fifty, "larger than the limit of 1048576 bytes"),
    "deep-nesting": (_text("processes: " + "[" * 50_000 + "]" * 50_000 + "\n"),
                     "nesting"),  # ours (64 levels) or libyaml's (1000) in flow style
    "deep-block": (_text("processes:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 200))),
                   "nesting deeper than 64 levels"),
    "empty": (_text(""), "configuration file is empty"),
    "whitespace": (_text(" \n\t\n"), "configuration file is empty"),
    "truncated": (_text('processes:\n  backend: {command: ["/bin/true"], url: "http://127.0.0.1:1",'),
                  "YAML syntax error"),
    "nul-byte": (_bytes(b"processes:\n  backend: {command: [\"/bin/true\x00\"]}\n"), "NUL byte"),
    "not-utf8": (_bytes(b"processes:\n  backend: {command: [\"/bin/\xff\"]}\n"), "not UTF-8 text"),
}
