#!/usr/bin/env python3
"""Module-level dependency check for the hearth crate.

Reads the item graph `cargo modules dependencies` prints (DOT, on stdin),
folds every item into the module (file) that defines it, and reports the
import cycles between modules: each strongly connected component of more
than one module.

With `--known FILE`, a cycle listed there (one cycle per line, its modules
separated by spaces) is reported but allowed, and so is a smaller part of
one; any other cycle fails. Without it, any cycle fails. So the file is a
ratchet: the cycles left can shrink, no new one can appear.

Why fold: cargo-modules' own `--acyclic` works on items, and a type and its
methods already form a cycle there (the method names the type, the type
owns the method), so it fails on any crate. Between modules, a cycle is
what the architecture forbids: a capability that imports what imports it.
"""
import pathlib
import re
import sys

# cargo-modules lists a trait impl's methods under the type they are for,
# not where the impl is written: `impl FromRef<AppState> for Db` in state.rs
# shows as `Db::from_ref` using `AppState`, an edge db -> state that the
# code does not have. Those impls are all in state.rs (checked below), so
# their edges are dropped.
STATE = "hearth::state::AppState"
STATE_FILE = "hearth/src/state.rs"

NODE = re.compile(r'^\s*"([^"]+)" \[label="([^|"]*)\|')
EDGE = re.compile(r'^\s*"([^"]+)" -> "([^"]+)" \[label="uses"')


def main() -> int:
    known = []
    args = sys.argv[1:]
    if args[:1] == ["--known"] and len(args) == 2:
        for line in pathlib.Path(args[1]).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                known.append(set(line.split()))
    elif args:
        print("usage: layers.py [--known FILE] < graph.dot", file=sys.stderr)
        return 2
    kinds, edges = {}, []
    for line in sys.stdin:
        m = EDGE.match(line)
        if m:
            edges.append((m.group(1), m.group(2)))
            continue
        m = NODE.match(line)
        if m:
            kinds[m.group(1)] = m.group(2).split()[-1]

    def module_of(path: str) -> str:
        # The nearest ancestor (or the node itself) that is a module or the
        # crate. Private modules (`mod x;`) get no node of their own, so a
        # snake_case ancestor that is not a node is taken for one.
        parts = path.split("::")
        while parts:
            p = "::".join(parts)
            kind = kinds.get(p)
            if kind in ("mod", "crate"):
                return p
            if kind is None and p != path and parts[-1].islower():
                return p
            parts.pop()
        return path

    elsewhere = [
        str(p)
        for p in pathlib.Path("hearth/src").rglob("*.rs")
        if str(p) != STATE_FILE and "impl FromRef<AppState>" in p.read_text()
    ]
    if elsewhere:
        print(f"impl FromRef<AppState> outside {STATE_FILE}: {', '.join(elsewhere)}")
        return 1

    graph = {}
    for a, b in edges:
        if a.endswith("::from_ref") and b == STATE:
            continue
        ma, mb = module_of(a), module_of(b)
        # The crate root only re-exports; every public path goes through it,
        # so counting it would tie every module to every other one.
        if ma != mb and "::" in ma and "::" in mb:
            graph.setdefault(ma, set()).add(mb)
            graph.setdefault(mb, set())

    # Tarjan's strongly connected components, iterative.
    index, low, on, stack, sccs, n = {}, {}, set(), [], [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = n[0]; n[0] += 1
        stack.append(root); on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = n[0]; n[0] += 1
                    stack.append(w); on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop(); on.discard(w); comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    sccs.append(sorted(comp))

    print(f"{len(graph)} modules, {sum(len(s) for s in graph.values())} imports between them")
    if not sccs:
        print("no import cycles")
        return 0
    failed = False
    for comp in sorted(sccs, key=len, reverse=True):
        members = set(comp)
        allowed = any(members <= k for k in known)
        failed |= not allowed
        label = "known" if allowed else "NEW"
        print(f"\n{label} cycle of {len(comp)} modules:")
        for m in comp:
            inner = sorted(x for x in graph[m] if x in members)
            print(f"  {m} -> {', '.join(inner)}")
    if failed:
        print("\nerror: an import cycle that .ci/layers.known does not list")
        return 1
    print(f"\n{len(sccs)} known cycles, no new one")
    return 0


if __name__ == "__main__":
    sys.exit(main())
