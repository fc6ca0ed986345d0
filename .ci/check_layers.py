#!/usr/bin/env python3
"""Checks the crate's layering: no import circles between modules, dependencies pointing one
way (sync, net::sys < mailbox, net < actor < runtime), and the std/loom switch respected.

Reads every `use crate::…`, `use super::…` and `crate::…` path in src/ and maps it to the
file of the module it names. Prints the graph with --graph. Exits 1 on a violation."""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

# Which top-level modules each layer may name (beside itself).
ALLOWED = {
    "sync": set(),
    "error": set(),
    "mailbox": {"sync", "error"},
    "net": {"sync", "error"},
    "actor": {"sync", "error", "mailbox"},
    "runtime": {"sync", "error", "mailbox", "net", "actor"},
    "testkit": {"sync", "error", "mailbox", "net", "actor", "runtime"},
    "lib": None,  # the crate root re-exports everything
}
# Only the switch may name these (in code that loom should see).
SWITCH_ONLY = [
    (re.compile(r"\bstd::sync\b"), "std::sync"),
    (re.compile(r"\bstd::thread\b"), "std::thread"),
    (re.compile(r"\bcrossbeam_deque\b"), "crossbeam_deque"),
    (re.compile(r"\bdashmap\b"), "dashmap"),
    (re.compile(r"\bloom::"), "loom::"),
]
SWITCH_FILES_PREFIX = ("sync/",)


def module_files():
    out = {}
    for root, _, files in os.walk(SRC):
        for f in files:
            if f.endswith(".rs"):
                full = os.path.join(root, f)
                rel = os.path.relpath(full, SRC).replace(os.sep, "/")
                parts = rel[:-3].split("/")
                if parts[-1] == "mod":
                    parts = parts[:-1]
                if parts == ["lib"]:
                    parts = []
                out[tuple(parts)] = rel
    return out


def strip_comments_and_tests(text):
    # Drop `#[cfg(test)] mod tests { … }` (unit tests may use std freely) and comments.
    text = re.sub(r"#\[cfg\(test\)\]\s*mod\s+tests\s*\{.*\Z", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    return text


def resolve(path, here, mods):
    """Maps a path (list of segments) used in module `here` to the longest module prefix."""
    if path[0] == "crate":
        segs = path[1:]
    elif path[0] == "super":
        base = list(here)
        i = 0
        while i < len(path) and path[i] == "super":
            base = base[:-1]
            i += 1
        segs = base + path[i:]
    elif path[0] == "self":
        segs = list(here) + path[1:]
    else:
        return None
    for n in range(len(segs), 0, -1):
        if tuple(segs[:n]) in mods:
            return tuple(segs[:n])
    return None


def uses(text):
    """Yields paths named by use-trees and inline `crate::`/`super::` paths."""
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        tree = re.sub(r"\s+", "", m.group(1))
        yield from expand(tree)
    for m in re.finditer(r"(?<![\w:])((?:crate|super)(?:::\w+)+)", text):
        yield m.group(1).split("::")


def expand(tree):
    if "{" not in tree:
        yield tree.split("::")
        return
    i = tree.index("{")
    prefix = tree[:i].rstrip(":")
    inner = tree[i + 1 : tree.rindex("}")]
    depth, start = 0, 0
    for j, ch in enumerate(inner + ","):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            item = inner[start:j]
            start = j + 1
            if item:
                for sub in expand(item):
                    yield (prefix.split("::") if prefix else []) + sub


def main():
    mods = module_files()
    graph = {m: set() for m in mods}
    problems = []
    for mod, rel in mods.items():
        text = strip_comments_and_tests(open(os.path.join(SRC, rel)).read())
        for path in uses(text):
            target = resolve([p for p in path if p not in ("", "*")], mod, mods)
            if target is None or target == mod:
                continue
            # A parent module naming its own children (declaring them) is not a dependency back.
            if target[: len(mod)] == mod and len(target) > len(mod):
                if mod == ():
                    continue
            graph[mod].add(target)
        if not rel.startswith(SWITCH_FILES_PREFIX):
            for rx, name in SWITCH_ONLY:
                if rx.search(text):
                    problems.append(f"{rel}: names {name} outside src/sync/ (use crate::sync)")
    for mod, deps in graph.items():
        top = mod[0] if mod else "lib"
        allowed = ALLOWED.get(top)
        if allowed is None:
            continue
        for d in deps:
            dtop = d[0] if d else "lib"
            if dtop != top and dtop not in allowed:
                problems.append(f"{mods[mod]}: layer '{top}' must not name '{dtop}' ({mods[d]})")
    # Circles: strongly connected components of more than one module.
    index, low, stack, on, sccs = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            strong(v)
    for comp in sccs:
        # A module and its own submodules naming each other is one module's business
        # (`mod.rs` declaring and re-exporting its children).
        names = sorted(mods[m] for m in comp)
        problems.append("import circle: " + " <-> ".join(names))
    if "--graph" in sys.argv:
        for mod in sorted(graph):
            print(f"{mods[mod]:32} -> {', '.join(sorted(mods[d] for d in graph[mod])) or '-'}")
    for p in problems:
        print("layering:", p)
    if problems:
        sys.exit(1)
    print(f"layering: {len(mods)} modules, no circles, dependencies point one way")


if __name__ == "__main__":
    main()
