//! Every workspace crate's modules form layers: no import cycle between them (bridge-models'
//! layers are printed and drawn in docs/architecture.md).
//!
//! A module (a source file under `src/`) depends on another when it declares it (`mod x;`) or
//! names anything inside it through a `crate::`, `super::` or `self::` path, in a `use` (groups
//! `{…}` included) or inline in the code. Comments, string and character literals and
//! `#[cfg(test)]` modules are ignored; a path resolves to the longest module prefix it names.
//! Two consequences keep the graph honest: a child that reaches its parent's items
//! (`super::Item`) depends on the parent, which declares it (a cycle), and so does any module
//! that goes through a `lib.rs` re-export (`crate::DecoderConfig` names the root, which declares
//! every module): inside the crate, items are named by the module that defines them.
//!
//! `cargo test -p bridge-models --test module_graph -- --nocapture` prints the graph by layer
//! (a module's layer is one more than the highest layer it depends on); docs/architecture.md
//! draws it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`crate::io::hf`) → the modules it depends on.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The crate's modules: `crate` for `lib.rs`, `crate::a::b` for `a/b.rs` or `a/b/mod.rs`, with
/// their source.
fn read_modules(src: &Path) -> Vec<(String, String)> {
    fn walk(dir: &Path, src: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, src, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src).unwrap().with_extension("");
                let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
                if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
                    parts.pop();
                }
                let name = std::iter::once("crate".to_owned()).chain(parts).collect::<Vec<_>>().join("::");
                out.push((name, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(src, src, &mut out);
    out
}

/// `source` with comments, string and character literals blanked out (lifetimes are kept).
fn strip_comments_and_literals(source: &str) -> String {
    let c: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c[i] == 'r' && (next == Some('"') || next == Some('#')) && !ident_char(i.checked_sub(1).map(|p| c[p]))
        {
            // raw string r"…" / r#"…"#
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= c.len() {
                    break;
                }
                if c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c[i] == '\'' {
            // a character literal ('x', '\n', '\u{..}') or a lifetime ('a)
            let end = if next == Some('\\') {
                (i + 3..c.len()).find(|&j| c[j] == '\'')
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(e) => {
                    out.push_str("' '");
                    i = e + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn ident_char(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// The index of the `}` that closes the `{` at `open`.
fn matching_brace(code: &[char], open: usize) -> usize {
    let mut depth = 0;
    for (i, &ch) in code.iter().enumerate().skip(open) {
        match ch {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced braces");
}

/// `code` (already stripped) without its `#[cfg(test)]` items (`mod tests { … }`, a test-only
/// `fn … { … }` or `use …;`): from the attribute to the item's closing brace or semicolon.
fn strip_test_modules(code: &str) -> String {
    let mut out = code.to_owned();
    while let Some(at) = out.find("#[cfg(test)]") {
        let chars: Vec<char> = out.chars().collect();
        let start = out[..at].chars().count();
        let open = (start..chars.len()).find(|&i| chars[i] == '{' || chars[i] == ';').unwrap();
        let end = if chars[open] == ';' { open } else { matching_brace(&chars, open) };
        out = chars[..start].iter().chain(&chars[end + 1..]).collect();
    }
    out
}

/// Every path that starts with `crate`, `super` or `self` in `code`, with `use` groups
/// (`a::{b, c::{d}}`) expanded, as lists of segments.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if ident_char(Some(c[i])) && !ident_char(i.checked_sub(1).map(|p| c[p])) {
            let start = i;
            while i < c.len() && ident_char(Some(c[i])) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            if matches!(word.as_str(), "crate" | "super" | "self") && c.get(i) == Some(&':') {
                let mut j = start;
                parse_tree(&c, &mut j, Vec::new(), &mut out);
                i = j;
            }
        } else {
            i += 1;
        }
    }
    out
}

fn skip_ws(c: &[char], i: &mut usize) {
    while *i < c.len() && c[*i].is_whitespace() {
        *i += 1;
    }
}

/// Parses a use tree at `c[*i..]` (`seg::seg::…`, then optionally `::{tree, …}` or `::*`),
/// pushing every full path (`prefix` + its segments) to `out`.
fn parse_tree(c: &[char], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    loop {
        skip_ws(c, i);
        if c.get(*i) == Some(&'{') {
            let close = matching_brace(c, *i);
            *i += 1;
            loop {
                skip_ws(c, i);
                if *i >= close {
                    break;
                }
                parse_tree(c, i, path.clone(), out);
                // past what follows the item (`as Name`) to the next item
                while *i < close && c[*i] != ',' {
                    *i += 1;
                }
                *i += 1;
            }
            *i = close + 1;
            return;
        }
        if c.get(*i) == Some(&'*') {
            *i += 1;
            out.push(path);
            return;
        }
        let start = *i;
        while *i < c.len() && ident_char(Some(c[*i])) {
            *i += 1;
        }
        if *i == start {
            out.push(path);
            return;
        }
        path.push(c[start..*i].iter().collect());
        skip_ws(c, i);
        if c.get(*i) == Some(&':') && c.get(*i + 1) == Some(&':') {
            *i += 2;
        } else {
            out.push(path);
            return;
        }
    }
}

/// The dependency graph of `modules` (see the module docs).
fn graph(modules: &[(String, String)]) -> Graph {
    let known: BTreeSet<String> = modules.iter().map(|(m, _)| m.clone()).collect();
    let mut g = Graph::new();
    for (module, source) in modules {
        let code = strip_test_modules(&strip_comments_and_literals(source));
        let deps = g.entry(module.clone()).or_default();
        // declarations: `mod x;` (an inline `mod x { … }` outside tests would make `super` mean
        // something else: there is none)
        for line in code.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let Some(pos) = words.iter().position(|w| *w == "mod") {
                let name = words.get(pos + 1).copied().unwrap_or("");
                assert!(name.ends_with(';'), "{module}: inline module `{line}` (only test modules may be inline)");
                let child = format!("{module}::{}", name.trim_end_matches(';'));
                assert!(known.contains(&child), "{module}: `mod {name}` has no file");
                deps.insert(child);
            }
        }
        for path in crate_paths(&code) {
            let mut abs: Vec<String> = module.split("::").map(str::to_owned).collect();
            let mut segs = path.as_slice();
            match segs.first().map(String::as_str) {
                Some("crate") => {
                    abs.truncate(1);
                    segs = &segs[1..];
                }
                Some("self") => segs = &segs[1..],
                _ => {
                    while segs.first().is_some_and(|s| s == "super") {
                        assert!(abs.len() > 1, "{module}: `super` above the crate root");
                        abs.pop();
                        segs = &segs[1..];
                    }
                }
            }
            abs.extend(segs.iter().filter(|s| s.as_str() != "self").cloned());
            let target = (1..=abs.len()).rev().map(|n| abs[..n].join("::")).find(|m| known.contains(m)).unwrap();
            if &target != module {
                deps.insert(target);
            }
        }
    }
    g
}

/// The strongly connected components of more than one module (Tarjan).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                scc.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                s.out.push(scc);
            }
        }
    }
    let mut s = State {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// Each module's layer in an acyclic graph: 0 for a module that depends on none, else one more
/// than its highest dependency.
fn layers(g: &Graph) -> BTreeMap<String, usize> {
    fn layer(g: &Graph, m: &str, memo: &mut BTreeMap<String, usize>) -> usize {
        if let Some(&l) = memo.get(m) {
            return l;
        }
        let l = g.get(m).into_iter().flatten().map(|d| layer(g, d, memo) + 1).max().unwrap_or(0);
        memo.insert(m.to_owned(), l);
        l
    }
    let mut memo = BTreeMap::new();
    for m in g.keys() {
        layer(g, m, &mut memo);
    }
    memo
}

/// The crates checked, relative to the workspace root: every member and the facade (`.`).
const CRATES: [&str; 9] = [
    "bridge-core",
    "bridge-models",
    "bridge-sft",
    "bridge-rl",
    "bridge-bilevel",
    "bridge-eval",
    "bridge-tasks",
    "bridge-report",
    ".",
];

#[test]
fn the_modules_of_every_workspace_crate_have_no_import_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut failures = Vec::new();
    for krate in CRATES {
        let src = root.join(krate).join("src");
        let modules = read_modules(&src);
        assert!(modules.len() >= 3, "found only {} modules under {}", modules.len(), src.display());
        let g = graph(&modules);
        let found = cycles(&g);
        if !found.is_empty() {
            failures.push(format!("{krate}: {found:?}"));
        }
        if krate != "bridge-models" {
            continue;
        }
        assert!(modules.len() >= 20, "found only {} modules under {}", modules.len(), src.display());
        let by_layer = layers(&g);
        let top = by_layer.values().copied().max().unwrap_or(0);
        for l in 0..=top {
            println!("layer {l}:");
            for (m, _) in by_layer.iter().filter(|&(_, &ml)| ml == l) {
                let deps: Vec<&str> = g[m].iter().map(|d| d.trim_start_matches("crate::")).collect();
                println!("  {:<24} → {}", m.trim_start_matches("crate::"), deps.join(", "));
            }
        }
    }
    assert!(failures.is_empty(), "import cycles between modules:\n{}", failures.join("\n"));
}

/// The check itself on small made-up crates: it finds a sibling cycle, a child reaching into its
/// parent, a detour through a `lib.rs` re-export and a cycle hidden in a `use` group, and
/// ignores comments, strings and test modules.
#[test]
fn the_check_finds_cycles_and_ignores_comments_strings_and_tests() {
    let crate_of = |files: &[(&str, &str)]| -> Vec<(String, String)> {
        files.iter().map(|(m, s)| (m.to_string(), s.to_string())).collect()
    };
    let root = ("crate", "mod a;\nmod b;\npub use a::Thing;\n");
    // acyclic: b uses a; a mentions b only in a comment, a string and its tests
    let clean = crate_of(&[
        root,
        (
            "crate::a",
            "// uses crate::b::X in prose\npub struct Thing;\nfn f() -> &'static str { \"crate::b::X\" }\n\
             fn g<'a>(x: &'a str) -> char { 'b' }\n#[cfg(test)]\nmod tests {\n    use crate::b::X;\n    use super::*;\n}\n",
        ),
        ("crate::b", "use crate::a::Thing;\npub struct X(Thing);\n"),
    ]);
    let g = graph(&clean);
    assert!(cycles(&g).is_empty(), "{g:?}");
    assert_eq!(g["crate::b"], BTreeSet::from(["crate::a".to_owned()]));
    assert_eq!(layers(&g)["crate"], 2);

    let sibling =
        crate_of(&[root, ("crate::a", "pub struct Thing(crate::b::X);\n"), ("crate::b", "use super::a::Thing;\n")]);
    assert_eq!(cycles(&graph(&sibling)), vec![vec!["crate::a".to_owned(), "crate::b".to_owned()]]);

    let parent = crate_of(&[
        ("crate", "mod f;\n"),
        ("crate::f", "mod op;\npub struct Call;\n"),
        ("crate::f::op", "use super::Call;\n"),
    ]);
    assert_eq!(cycles(&graph(&parent)), vec![vec!["crate::f".to_owned(), "crate::f::op".to_owned()]]);

    let reexport = crate_of(&[root, ("crate::a", "pub struct Thing;\n"), ("crate::b", "use crate::Thing;\n")]);
    assert_eq!(cycles(&graph(&reexport)), vec![vec!["crate".to_owned(), "crate::b".to_owned()]]);

    let group = crate_of(&[
        ("crate", "mod a;\nmod b;\nmod c;\n"),
        ("crate::a", "use crate::{c::Z, b::{Y, self}};\n"),
        ("crate::b", "pub struct Y;\n"),
        ("crate::c", "pub fn z() { let _ = crate::a::f(); }\n"),
    ]);
    assert_eq!(cycles(&graph(&group)), vec![vec!["crate::a".to_owned(), "crate::c".to_owned()]]);
}
