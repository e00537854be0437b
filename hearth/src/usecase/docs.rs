//! Living documentation: the declared specs and use cases printed as
//! stories, a grep-able summary with what no use case covers, a graph of
//! modules, routes and events (Graphviz or Mermaid), and the route table.
//! None of it needs a database: it reads only what modules declare.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use super::{Body, Given, Then, UseCase};
use crate::ModuleSpec;
use crate::module::RouteSpec;

/// One module as the documentation sees it.
#[derive(Debug, Clone)]
pub struct ModuleDoc {
    /// Its spec.
    pub spec: ModuleSpec,
    /// Its use cases.
    pub use_cases: Vec<UseCase>,
    /// Whether it is hearth's own (its routes are covered by hearth's own
    /// tests, so they are listed but never reported as uncovered).
    pub framework: bool,
}

/// How stories are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoryFormat {
    /// Plain text for a terminal.
    Text,
    /// Markdown, for a docs page.
    Markdown,
}

/// How the graph is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    /// Graphviz (`dot -Tsvg`).
    Dot,
    /// Mermaid, which forge web pages render inside a ```mermaid block.
    Mermaid,
}

/// Routes hearth's pipeline serves itself, besides those modules declare.
pub const BUILTIN_ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "/healthz", "public"),
    ("GET", "/readyz", "public"),
    ("GET", "/metrics", "metrics.allow"),
    ("GET", "/static/{*path}", "public"),
];

pub(crate) fn json_text(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "?".into())
}

fn given_line(g: &Given) -> String {
    match g {
        Given::User {
            name,
            admin,
            groups,
        } => {
            let what = if *admin {
                "an admin".to_owned()
            } else if groups.is_empty() {
                "a user".to_owned()
            } else {
                format!("a user in {}", groups.join(", "))
            };
            format!("{name} is {what}")
        }
        Given::Event(e) => {
            let by = e
                .actor
                .as_deref()
                .map(|a| format!(" by {a}"))
                .unwrap_or_default();
            format!("{}{by} happened: {}", e.name, json_text(&e.payload))
        }
    }
}

fn when_line(uc: &UseCase) -> String {
    let Some(r) = uc.request() else {
        return "(no request)".into();
    };
    let who = r.user.as_deref().unwrap_or("a visitor");
    let body = match &r.body {
        Body::Empty => String::new(),
        Body::Json(v) => format!(" with {}", json_text(v)),
        Body::Form(f) => {
            let fields: Vec<String> = f.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!(" with form {}", fields.join("&"))
        }
    };
    format!("{who} sends {} {}{body}", r.method, r.path)
}

fn then_line(t: &Then) -> String {
    match t {
        Then::Status(s) => format!("the status is {s}"),
        Then::Json(v) => format!("the response holds {}", json_text(v)),
        Then::Contains(s) => format!("the response shows {s:?}"),
        Then::Lacks(s) => format!("the response does not show {s:?}"),
        Then::Header(h, v) => format!("header {h} is {v:?}"),
        Then::Event { name, fields } => format!("{name} is published with {}", json_text(fields)),
        Then::NoOtherEvents => "no other event is published".into(),
    }
}

/// The use cases of every module (or of `module`) as stories.
pub fn story(mods: &[ModuleDoc], module: Option<&str>, format: StoryFormat) -> String {
    let mut out = String::new();
    for m in mods {
        if module.is_some_and(|name| name != m.spec.name()) || m.use_cases.is_empty() {
            continue;
        }
        match format {
            StoryFormat::Markdown => {
                let _ = writeln!(out, "## {}\n", m.spec.name());
            }
            StoryFormat::Text => {
                let _ = writeln!(out, "{}", m.spec.name());
                let _ = writeln!(out, "{}\n", "=".repeat(m.spec.name().len()));
            }
        }
        for uc in &m.use_cases {
            let mut lines: Vec<(&str, String)> = Vec::new();
            for (i, g) in uc.givens().iter().enumerate() {
                lines.push((if i == 0 { "Given" } else { "And" }, given_line(g)));
            }
            lines.push(("When", when_line(uc)));
            for (i, t) in uc.expected().iter().enumerate() {
                lines.push((if i == 0 { "Then" } else { "And" }, then_line(t)));
            }
            match format {
                StoryFormat::Markdown => {
                    let _ = writeln!(out, "### {}\n", uc.name());
                    for (word, line) in lines {
                        let _ = writeln!(out, "- **{word}** {}", line.replace('`', "'"));
                    }
                }
                StoryFormat::Text => {
                    let _ = writeln!(out, "{}", uc.name());
                    for (word, line) in lines {
                        let _ = writeln!(out, "  {word:>5} {line}");
                    }
                }
            }
            out.push('\n');
        }
    }
    out
}

/// What no use case covers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Uncovered {
    /// Routes no use case requests: (module, route).
    pub routes: Vec<(&'static str, RouteSpec)>,
    /// Published events no use case expects: (module, event).
    pub published: Vec<(&'static str, &'static str)>,
    /// Subscriptions no use case of the subscriber gives the event for.
    pub subscribed: Vec<(&'static str, &'static str)>,
}

impl Uncovered {
    /// Whether everything is covered.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.published.is_empty() && self.subscribed.is_empty()
    }

    /// How many things are uncovered.
    pub fn len(&self) -> usize {
        self.routes.len() + self.published.len() + self.subscribed.len()
    }
}

/// What no use case covers. A route is covered when a use case (of any
/// module) requests it; a published event when a use case expects it; a
/// subscription when a use case of the subscribing module gives that event.
pub fn uncovered(mods: &[ModuleDoc]) -> Uncovered {
    let all: Vec<&UseCase> = mods.iter().flat_map(|m| &m.use_cases).collect();
    let mut out = Uncovered::default();
    for m in mods.iter().filter(|m| !m.framework) {
        let name = m.spec.name();
        for r in m.spec.declared_routes() {
            let hit = all.iter().any(|uc| {
                uc.request()
                    .is_some_and(|req| r.matches(req.method.as_str(), req.route_path()))
            });
            if !hit {
                out.routes.push((name, *r));
            }
        }
        for e in m.spec.published() {
            if !all
                .iter()
                .any(|uc| uc.expected_events().any(|n| n == e.name))
            {
                out.published.push((name, e.name));
            }
        }
        for e in m.spec.subscribed() {
            let hit = m
                .use_cases
                .iter()
                .any(|uc| uc.given_events().any(|g| g.name == e.name));
            if !hit {
                out.subscribed.push((name, e.name));
            }
        }
    }
    out
}

/// The summary: one line per fact, then `uncovered` and what it lists.
pub fn summary(mods: &[ModuleDoc]) -> (String, Uncovered) {
    let mut out = String::new();
    for m in mods.iter().filter(|m| !m.framework) {
        let name = m.spec.name();
        for e in m.spec.published() {
            let _ = writeln!(out, "module {name} publishes {}", e.name);
        }
        for e in m.spec.subscribed() {
            let _ = writeln!(out, "module {name} subscribes {}", e.name);
        }
        for r in m.spec.declared_routes() {
            let _ = writeln!(out, "route {name} {} {} {}", r.method, r.path, r.guard);
        }
        for uc in &m.use_cases {
            let (method, path) = uc
                .request()
                .map(|r| (r.method.as_str(), r.path.as_str()))
                .unwrap_or(("-", "-"));
            let given: Vec<&str> = uc.given_events().map(|e| e.name).collect();
            let then: Vec<&str> = uc.expected_events().collect();
            let list = |v: &[&str]| {
                if v.is_empty() {
                    "-".to_owned()
                } else {
                    v.join(",")
                }
            };
            let _ = writeln!(
                out,
                "usecase {name} {:?} {method} {path} in={} out={}",
                uc.name(),
                list(&given),
                list(&then)
            );
        }
    }
    let gaps = uncovered(mods);
    let _ = writeln!(out, "uncovered ({})", gaps.len());
    for (m, r) in &gaps.routes {
        let _ = writeln!(out, "uncovered route {m} {} {}", r.method, r.path);
    }
    for (m, e) in &gaps.published {
        let _ = writeln!(out, "uncovered publishes {m} {e}");
    }
    for (m, e) in &gaps.subscribed {
        let _ = writeln!(out, "uncovered subscribes {m} {e}");
    }
    (out, gaps)
}

/// Every route, hearth's and the modules', with its module and guard.
pub fn routes(mods: &[ModuleDoc]) -> String {
    let mut rows: Vec<(String, String, String, String)> = BUILTIN_ROUTES
        .iter()
        .map(|(m, p, g)| ((*m).into(), (*p).into(), "hearth".into(), (*g).into()))
        .collect();
    for m in mods {
        for r in m.spec.declared_routes() {
            rows.push((
                r.method.to_string(),
                r.path.to_owned(),
                m.spec.name().to_owned(),
                r.guard.to_string(),
            ));
        }
    }
    rows.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
    let w =
        |f: fn(&(String, String, String, String)) -> usize| rows.iter().map(f).max().unwrap_or(0);
    let (wm, wp, wd) = (
        w(|r| r.0.len()).max(6),
        w(|r| r.1.len()).max(4),
        w(|r| r.2.len()).max(6),
    );
    let mut out = format!(
        "{:wm$}  {:wp$}  {:wd$}  GUARD\n",
        "METHOD", "PATH", "MODULE"
    );
    for (method, path, module, guard) in &rows {
        let _ = writeln!(out, "{method:wm$}  {path:wp$}  {module:wd$}  {guard}");
    }
    out
}

/// A node of the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Module,
    Route,
    Event,
}

struct Graph {
    nodes: BTreeMap<String, (Kind, String, bool)>,
    edges: Vec<(String, String, &'static str, bool)>,
}

fn build_graph(mods: &[ModuleDoc], module: Option<&str>, with_routes: bool) -> Graph {
    let gaps = uncovered(mods);
    let mut g = Graph {
        nodes: BTreeMap::new(),
        edges: Vec::new(),
    };
    let apps: Vec<&ModuleDoc> = mods.iter().filter(|m| !m.framework).collect();
    // With a module named, keep it and whatever shares an event with it.
    let related = |m: &ModuleDoc| -> bool {
        let Some(focus) = module else { return true };
        if m.spec.name() == focus {
            return true;
        }
        let Some(f) = apps.iter().find(|x| x.spec.name() == focus) else {
            return false;
        };
        let theirs: Vec<&str> = m
            .spec
            .published()
            .iter()
            .chain(m.spec.subscribed())
            .map(|e| e.name)
            .collect();
        f.spec
            .published()
            .iter()
            .chain(f.spec.subscribed())
            .any(|e| theirs.contains(&e.name))
    };
    for m in apps.iter().filter(|m| related(m)) {
        let name = m.spec.name();
        let mid = format!("m:{name}");
        g.nodes
            .insert(mid.clone(), (Kind::Module, name.to_owned(), false));
        let focused = module.is_none_or(|f| f == name);
        if focused && with_routes {
            for r in m.spec.declared_routes() {
                let red = gaps.routes.contains(&(name, *r));
                let rid = format!("r:{name}:{r}");
                g.nodes.insert(
                    rid.clone(),
                    (Kind::Route, format!("{r} ({})", r.guard), red),
                );
                g.edges.push((rid, mid.clone(), "", red));
            }
        }
        for e in m.spec.published() {
            if !focused && module.is_some() && !related_event(&apps, module, e.name) {
                continue;
            }
            let red = gaps.published.contains(&(name, e.name));
            let eid = format!("e:{}", e.name);
            let entry =
                g.nodes
                    .entry(eid.clone())
                    .or_insert((Kind::Event, e.name.to_owned(), false));
            entry.2 |= red;
            g.edges.push((mid.clone(), eid, "publishes", red));
        }
        for e in m.spec.subscribed() {
            if !focused && module.is_some() && !related_event(&apps, module, e.name) {
                continue;
            }
            let red = gaps.subscribed.contains(&(name, e.name));
            let eid = format!("e:{}", e.name);
            g.nodes
                .entry(eid.clone())
                .or_insert((Kind::Event, e.name.to_owned(), false));
            g.edges.push((eid, mid.clone(), "subscribes", red));
        }
    }
    g
}

fn related_event(apps: &[&ModuleDoc], module: Option<&str>, event: &str) -> bool {
    let Some(focus) = module else { return true };
    apps.iter().filter(|m| m.spec.name() == focus).any(|m| {
        m.spec
            .published()
            .iter()
            .chain(m.spec.subscribed())
            .any(|e| e.name == event)
    })
}

/// The graph of modules (boxes), their routes (unless `with_routes` is
/// false) and the events between them (an edge per publication and per
/// subscription); what no use case covers is red.
pub fn graph(
    mods: &[ModuleDoc],
    module: Option<&str>,
    format: GraphFormat,
    with_routes: bool,
) -> String {
    let g = build_graph(mods, module, with_routes);
    let ids: BTreeMap<&str, String> = g
        .nodes
        .keys()
        .enumerate()
        .map(|(i, k)| (k.as_str(), format!("n{i}")))
        .collect();
    let id = |k: &str| ids.get(k).cloned().unwrap_or_else(|| "n_".into());
    let mut out = String::new();
    match format {
        GraphFormat::Dot => {
            out.push_str("digraph modules {\n  rankdir=LR;\n  node [fontname=\"sans-serif\", fontsize=11];\n  edge [fontname=\"sans-serif\", fontsize=9];\n");
            for (k, (kind, label, red)) in &g.nodes {
                let shape = match kind {
                    Kind::Module => "box, style=\"bold,rounded\"",
                    Kind::Route => "note",
                    Kind::Event => "hexagon",
                };
                let color = if *red {
                    ", color=red, fontcolor=red"
                } else {
                    ""
                };
                let label = label.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = writeln!(
                    out,
                    "  {} [label=\"{label}\", shape={shape}{color}];",
                    id(k)
                );
            }
            for (from, to, label, red) in &g.edges {
                let color = if *red {
                    ", color=red, fontcolor=red"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "  {} -> {} [label=\"{label}\"{color}];",
                    id(from),
                    id(to)
                );
            }
            out.push_str("}\n");
        }
        GraphFormat::Mermaid => {
            out.push_str("flowchart LR\n");
            let mut red_nodes = Vec::new();
            for (k, (kind, label, red)) in &g.nodes {
                let label = label.replace('"', "#quot;");
                let node = match kind {
                    Kind::Module => format!("[\"{label}\"]"),
                    Kind::Route => format!("(\"{label}\")"),
                    Kind::Event => format!("{{{{\"{label}\"}}}}"),
                };
                let _ = writeln!(out, "  {}{node}", id(k));
                if *red {
                    red_nodes.push(id(k));
                }
            }
            let mut red_edges = Vec::new();
            for (i, (from, to, label, red)) in g.edges.iter().enumerate() {
                let arrow = if label.is_empty() {
                    "-->".to_owned()
                } else {
                    format!("-->|{label}|")
                };
                let _ = writeln!(out, "  {} {arrow} {}", id(from), id(to));
                if *red {
                    red_edges.push(i.to_string());
                }
            }
            if !red_nodes.is_empty() || !red_edges.is_empty() {
                out.push_str("  classDef uncovered stroke:#d00,color:#d00,stroke-width:2px\n");
            }
            if !red_nodes.is_empty() {
                let _ = writeln!(out, "  class {} uncovered", red_nodes.join(","));
            }
            if !red_edges.is_empty() {
                let _ = writeln!(
                    out,
                    "  linkStyle {} stroke:#d00,color:#d00",
                    red_edges.join(",")
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, EventSpec};
    use crate::module::{Guard, RouteSpec};
    use crate::usecase::Request;
    use serde_json::json;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Liked {
        liker: i64,
    }
    impl Event for Liked {
        const NAME: &'static str = "likes.liked";
    }
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Blocked {
        by: i64,
    }
    impl Event for Blocked {
        const NAME: &'static str = "members.blocked";
    }

    const LIKE: RouteSpec = RouteSpec::post("/members/{id}/like", Guard::SignedIn);
    const PUBLISHED: &[EventSpec] = &[EventSpec::of::<Liked>()];
    const SUBSCRIBED: &[EventSpec] = &[EventSpec::of::<Blocked>()];
    const UNLIKE: RouteSpec = RouteSpec::delete("/members/{id}/like", Guard::SignedIn);

    fn mods(with_unlike_case: bool) -> Vec<ModuleDoc> {
        let spec = ModuleSpec::new("likes")
            .routes(&[LIKE, UNLIKE])
            .publishes(PUBLISHED)
            .subscribes(SUBSCRIBED);
        let mut cases = vec![
            UseCase::new("nancy likes bob")
                .given_user("nancy")
                .given_user("bob")
                .when(Request::post("/members/{bob}/like").by("nancy"))
                .then_status(303)
                .then_event::<Liked>(json!({"liker": "{nancy}"})),
        ];
        if with_unlike_case {
            cases.push(
                UseCase::new("a blocked member's like is gone")
                    .given_user("nancy")
                    .given::<Blocked>(json!({"by": "{nancy}"}))
                    .when(Request::delete("/members/{nancy}/like").by("nancy"))
                    .then_status(204),
            );
        }
        vec![ModuleDoc {
            spec,
            use_cases: cases,
            framework: false,
        }]
    }

    #[test]
    fn summary_lists_what_no_use_case_covers() {
        let (text, gaps) = summary(&mods(false));
        assert!(text.contains("route likes POST /members/{id}/like signed-in"));
        assert!(text.contains(
            "usecase likes \"nancy likes bob\" POST /members/{bob}/like in=- out=likes.liked"
        ));
        assert!(text.contains("uncovered route likes DELETE /members/{id}/like"));
        assert!(text.contains("uncovered subscribes likes members.blocked"));
        assert_eq!(gaps.len(), 2);
        let (_, gaps) = summary(&mods(true));
        assert!(gaps.is_empty(), "{gaps:?}");
    }

    #[test]
    fn graph_marks_uncovered_in_red() {
        let dot = graph(&mods(false), None, GraphFormat::Dot, true);
        assert!(dot.starts_with("digraph"));
        assert!(dot.contains("DELETE /members/{id}/like (signed-in)\", shape=note, color=red"));
        assert!(!dot.contains("POST /members/{id}/like (signed-in)\", shape=note, color=red"));
        let mermaid = graph(&mods(false), None, GraphFormat::Mermaid, true);
        assert!(mermaid.starts_with("flowchart LR"));
        assert!(mermaid.contains("class "));
        assert!(mermaid.contains("-->|publishes|"));
        assert!(mermaid.contains("-->|subscribes|"));
        let all_green = graph(&mods(true), None, GraphFormat::Mermaid, true);
        assert!(!all_green.contains("class "));
    }

    #[test]
    fn stories_read_as_given_when_then() {
        let text = story(&mods(true), None, StoryFormat::Text);
        assert!(text.contains("nancy likes bob\n  Given nancy is a user\n    And bob is a user\n   When nancy sends POST /members/{bob}/like\n   Then the status is 303\n"));
        let md = story(&mods(true), Some("likes"), StoryFormat::Markdown);
        assert!(md.contains("### nancy likes bob"));
        assert!(md.contains("- **When** nancy sends POST /members/{bob}/like"));
        assert!(story(&mods(true), Some("other"), StoryFormat::Text).is_empty());
    }

    #[test]
    fn routes_table_has_builtins_and_modules() {
        let t = routes(&mods(false));
        assert!(
            t.lines()
                .any(|l| l.starts_with("GET") && l.contains("/healthz"))
        );
        assert!(t.lines().any(|l| l.contains("/members/{id}/like")
            && l.contains("likes")
            && l.ends_with("signed-in")));
    }
}
