#!/usr/bin/env python3
"""The layout's rule, checked: a module of src/ imports only from the layers below it
(lib.rs lists them), and the files of a folder module import each other without a circle.
Exit 1 naming every offending import. Run by .ci/run; no dependencies beyond Python 3."""
import glob
import re
import sys

# Bottom to top; a module may import from its own layer's base and any lower layer.
LAYERS = [
    {"error", "retry", "schema"},
    {"scalar"},
    {"ddbjson"},
    {"convert"},
    {"config"},
    {"source"},
    {"decode", "encode"},
    {"sink"},
    {"load"},
    {"verify", "admin", "sync", "check", "init", "snapshot"},
    {"fixtures", "chart"},
    {"bench", "rehearse"},
]
LEVEL = {m: i for i, layer in enumerate(LAYERS) for m in layer}


def code(path):
    """The file without its tests and comments."""
    text = open(path, encoding="utf-8").read()
    cut = text.find("#[cfg(test)]")
    if cut != -1:
        text = text[:cut]
    return "\n".join(l for l in text.split("\n") if not l.strip().startswith("//"))


problems = []
for path in sorted(glob.glob("src/**/*.rs", recursive=True)):
    if path in ("src/lib.rs", "src/main.rs"):
        continue
    top = path.split("/")[1].removesuffix(".rs")
    for dep in sorted(set(re.findall(r"crate::([a-z_]+)", code(path)))):
        if dep in LEVEL and dep != top and LEVEL[dep] >= LEVEL[top]:
            problems.append(f"{path}: imports crate::{dep}, which is not below {top}")

for folder in sorted({p.split("/")[1] for p in glob.glob("src/*/mod.rs")}):
    files = glob.glob(f"src/{folder}/*.rs")
    mods = {f.split("/")[-1][:-3] for f in files}
    edges = {}
    for f in files:
        m = f.split("/")[-1][:-3]
        text = code(f)
        if m == "mod":
            deps = set(re.findall(r"\b([a-z_]+)::", text)) & mods
        else:
            deps = set(re.findall(r"super::([a-z_]+)", text)) & mods
            if re.search(r"super::(\{|[A-Z])", text):
                deps.add("mod")
        deps.discard(m)
        edges[m] = deps
    state, stack = {}, []

    def visit(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(edges.get(u, ())):
            if state.get(v) == 1:
                loop = stack[stack.index(v):] + [v]
                problems.append(f"src/{folder}/: import circle " + " -> ".join(loop))
            elif not state.get(v):
                visit(v)
        state[u] = 2
        stack.pop()

    for u in sorted(edges):
        if not state.get(u):
            visit(u)

for p in problems:
    print(p, file=sys.stderr)
sys.exit(1 if problems else 0)
