#!/usr/bin/env python3
"""Checks pipe-core's layering: no import cycle between its files, no layer
importing one above it (DESIGN.md, "Layers of pipe-core"), and no file over
600 lines or non-test function over 80 (STYLE.md, lesson 12).

Reads every `crate::`, `super::` and `use` path in pipe-core/src (test
modules included), maps each to the file it names, and reports cycles
among files and arrows that point up. Exit status 1 on any finding."""
import os, re, sys

ROOT = os.path.join(os.path.dirname(__file__), "..", "pipe-core", "src")
# Lowest first: a layer may use those before it, never those after.
LAYERS = ["wire", "link", "handlers", "node", "front", "ops"]

def module_of(path):
    rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    return rel

files = {}
for root, _, names in os.walk(ROOT):
    for name in names:
        if name.endswith(".rs"):
            path = os.path.join(root, name)
            files[tuple(module_of(path))] = path

def resolve(current, parts):
    """The file (module tuple) a path names, longest known prefix."""
    if parts[0] == "crate":
        base = []
        parts = parts[1:]
    elif parts[0] in ("super", "self"):
        base = list(current)
        # A file's own module is itself; `super` climbs from there.
        is_mod = files.get(tuple(current), "").endswith("mod.rs") or current == ["lib"]
        while parts and parts[0] in ("super", "self"):
            if parts[0] == "super":
                base = base[:-1]
            parts = parts[1:]
    else:
        return None
    best = None
    for n in range(len(parts), -1, -1):
        candidate = tuple(base + parts[:n])
        if candidate in files:
            best = candidate
            break
    return best

edges = {}
for module, path in files.items():
    text = re.sub(r"//[^\n]*", "", open(path).read())
    current = list(module)
    targets = set()
    for match in re.finditer(r"\b((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+)", text):
        parts = match.group(1).split("::")
        target = resolve(current, parts)
        if target and target != module and target != ("lib",):
            targets.add(target)
    # `use super::{a, b}` and `use crate::x::{a::B, c}`: the braces' first names.
    for match in re.finditer(r"\b((?:crate|super)(?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^}]*)\}", text):
        head = match.group(1).split("::")
        for item in match.group(2).split(","):
            name = item.strip().split("::")[0].split(" ")[0]
            if name and name != "self":
                target = resolve(current, head + [name])
                if target and target != module and target != ("lib",):
                    targets.add(target)
    edges[module] = targets

problems = []
for module, targets in edges.items():
    if module[0] not in LAYERS:
        continue
    for target in targets:
        if target and target[0] in LAYERS and LAYERS.index(target[0]) > LAYERS.index(module[0]):
            problems.append(f"up: {'/'.join(module)} uses {'/'.join(target)}")

# Sizes: a file over this many lines, or a function body over that many
# (test modules aside), is a concept that wants its own name.
MAX_FILE_LINES, MAX_FN_LINES = 600, 80
for module, path in files.items():
    lines = open(path).read().split("\n")
    if len(lines) > MAX_FILE_LINES:
        problems.append(f"size: {'/'.join(module)} has {len(lines)} lines")
    if module[-1] == "tests":
        continue
    in_tests = False
    for i, line in enumerate(lines):
        if re.match(r"\s*#\[cfg\(test\)\]", line):
            in_tests = True
        start = re.match(r"^(\s*)(?:pub(?:\([a-z:]+\))? )?(?:async )?fn (\w+)", line)
        if start and not in_tests:
            indent = start.group(1)
            end = next((j for j in range(i + 1, len(lines)) if lines[j] == indent + "}"), i)
            if end - i > MAX_FN_LINES:
                problems.append(f"size: {'/'.join(module)}::{start.group(2)} is {end - i} lines")

# Cycles among files (Tarjan's strongly connected components).
index, low, stack, on_stack, sccs, counter = {}, {}, [], set(), [], [0]
def strongconnect(v):
    index[v] = low[v] = counter[0]; counter[0] += 1
    stack.append(v); on_stack.add(v)
    for w in edges.get(v, ()):
        if w not in index:
            strongconnect(w); low[v] = min(low[v], low[w])
        elif w in on_stack:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        scc = []
        while True:
            w = stack.pop(); on_stack.discard(w); scc.append(w)
            if w == v:
                break
        if len(scc) > 1:
            sccs.append(scc)
sys.setrecursionlimit(10000)
for v in list(edges):
    if v not in index:
        strongconnect(v)
for scc in sccs:
    problems.append("cycle: " + " <-> ".join("/".join(m) for m in sorted(scc)))

for problem in problems:
    print(problem)
print(f"{len(files)} files, {sum(len(t) for t in edges.values())} imports between them, {len(problems)} problems")
sys.exit(1 if problems else 0)
