//! Storage isolation, checked statically: a module's tables, indexes and
//! other objects are named `<module>_…`, and a module's code does not name
//! another module's tables. Modules share facts through events, never
//! through each other's rows, so each can change its storage alone.
//!
//! The check reads SQL text, not a parsed plan: comments and string
//! literals are dropped, then every name after `CREATE … TABLE/INDEX/…`,
//! `ALTER`/`DROP`, `ON`, `INSERT INTO`, `UPDATE`, `DELETE FROM` and
//! `REFERENCES` is compared with the module's prefix. hearth's own tables
//! (`hearth_…`, such as `hearth_user`) may be referenced by a foreign key:
//! they belong to the framework every module builds on.

use std::collections::{BTreeMap, BTreeSet};

/// Object kinds `CREATE`, `ALTER` and `DROP` name.
const KINDS: &[&str] = &[
    "table", "index", "view", "trigger", "sequence", "type", "function", "schema",
];

/// `sql` without comments and string literals, lowercased, split into
/// words (names keep their dots; quoted names lose their quotes).
fn words(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = sql.chars().peekable();
    let flush = |cur: &mut String, out: &mut Vec<String>| {
        if !cur.is_empty() {
            out.push(std::mem::take(cur).to_ascii_lowercase());
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '-' if chars.peek() == Some(&'-') => {
                flush(&mut cur, &mut out);
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                flush(&mut cur, &mut out);
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
            }
            '\'' => {
                flush(&mut cur, &mut out);
                // '' inside a literal is an escaped quote: the loop just
                // leaves and re-enters the literal.
                for n in chars.by_ref() {
                    if n == '\'' {
                        break;
                    }
                }
            }
            '"' | '`' => {}
            c if c.is_ascii_alphanumeric() || c == '_' || c == '.' => cur.push(c),
            '(' | ')' | ',' | ';' => {
                flush(&mut cur, &mut out);
                out.push(c.to_string());
            }
            _ => flush(&mut cur, &mut out),
        }
    }
    flush(&mut cur, &mut out);
    out
}

/// What the SQL does to which object: `(kind, name)`, where kind is
/// `create`, `alter`, `drop`, `on`, `write` or `references`.
pub fn objects(sql: &str) -> Vec<(&'static str, String)> {
    let w = words(sql);
    let mut out = Vec::new();
    let skip = ["if", "not", "exists", "only", "concurrently"];
    let name_after = |mut i: usize| -> Option<String> {
        while i < w.len() && skip.contains(&w[i].as_str()) {
            i += 1;
        }
        w.get(i)
            .filter(|n| {
                n.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            })
            .cloned()
    };
    for i in 0..w.len() {
        let here = w[i].as_str();
        match here {
            "create" | "alter" | "drop" => {
                let mut j = i + 1;
                while j < w.len()
                    && [
                        "or",
                        "replace",
                        "temp",
                        "temporary",
                        "unique",
                        "materialized",
                    ]
                    .contains(&w[j].as_str())
                {
                    j += 1;
                }
                if let Some(kind) = w.get(j)
                    && KINDS.contains(&kind.as_str())
                {
                    // `ALTER TABLE x ADD CONSTRAINT …`, `DROP INDEX x`: the
                    // name follows the kind.
                    if let Some(name) = name_after(j + 1) {
                        let verb = match here {
                            "create" => "create",
                            "alter" => "alter",
                            _ => "drop",
                        };
                        out.push((verb, name));
                    }
                }
            }
            "on" => {
                // An index or trigger's table. `ON CONFLICT` and `ON DELETE`
                // are not names.
                let is_index = w[..i]
                    .iter()
                    .rev()
                    .take_while(|x| *x != ";")
                    .any(|x| x == "index" || x == "trigger");
                if is_index
                    && let Some(name) = name_after(i + 1)
                    && !["conflict", "delete", "update"].contains(&name.as_str())
                {
                    out.push(("on", name));
                }
            }
            "into" if i > 0 && w[i - 1] == "insert" => {
                if let Some(name) = name_after(i + 1) {
                    out.push(("write", name));
                }
            }
            "update" if i == 0 || w[i - 1] == ";" || w[i - 1] == "(" => {
                if let Some(name) = name_after(i + 1) {
                    out.push(("write", name));
                }
            }
            "from" if i > 0 && w[i - 1] == "delete" => {
                if let Some(name) = name_after(i + 1) {
                    out.push(("write", name));
                }
            }
            "references" => {
                if let Some(name) = name_after(i + 1) {
                    out.push(("references", name));
                }
            }
            _ => {}
        }
    }
    out
}

/// Whether `name` (possibly qualified) is one of `module`'s own objects.
pub fn owns(module: &str, name: &str) -> bool {
    let bare = name.rsplit('.').next().unwrap_or(name);
    bare.strip_prefix(module)
        .is_some_and(|rest| rest.starts_with('_'))
}

/// Why `sql`, a migration of `module`, reaches outside the module's
/// namespace: one line per offending name.
pub fn check_migration(module: &str, sql: &str) -> Vec<String> {
    let prefix = format!("{module}_");
    let mut problems = Vec::new();
    for (kind, name) in objects(sql) {
        // A qualified name must be qualified by the module's own schema:
        // anything else would put or touch the object in another module's
        // schema (or hearth's) on PostgreSQL.
        let (schema, bare) = match name.rsplit_once('.') {
            Some((schema, bare)) => (Some(schema), bare),
            None => (None, name.as_str()),
        };
        if let Some(schema) = schema
            && schema != module
        {
            problems.push(format!(
                "it names `{name}` in schema `{schema}`; a module's objects live in its own schema (`{module}`), so leave names unqualified"
            ));
            continue;
        }
        let own = bare.starts_with(&prefix);
        let allowed = own || (kind == "references" && bare.starts_with("hearth_"));
        if !allowed {
            let verb = match kind {
                "create" => "creates",
                "alter" => "alters",
                "drop" => "drops",
                "on" => "indexes",
                "write" => "writes to",
                _ => "references",
            };
            problems.push(format!(
                "it {verb} `{name}`, which is outside its namespace (names must start with `{prefix}`)"
            ));
        }
    }
    problems
}

/// The tables each module's migrations create, by module.
pub fn tables(specs: &[crate::ModuleSpec]) -> BTreeMap<&'static str, BTreeSet<String>> {
    let mut out: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    for spec in specs {
        let set = out.entry(spec.name()).or_default();
        for kind in [crate::DbKind::Sqlite, crate::DbKind::Postgres] {
            for m in spec.migrations_for(kind) {
                for (verb, name) in objects(m.sql) {
                    if verb == "create" {
                        set.insert(name.rsplit('.').next().unwrap_or(&name).to_owned());
                    }
                }
            }
        }
    }
    out
}

/// The tables of other app modules (not hearth's) that `text` (a source
/// file of `module`) names, as `(owner, table)`.
pub fn foreign_tables(
    tables: &BTreeMap<&'static str, BTreeSet<String>>,
    module: &str,
    text: &str,
) -> Vec<(&'static str, String)> {
    let mut found = BTreeSet::new();
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        let word = word.to_ascii_lowercase();
        for (owner, set) in tables {
            if *owner != module && *owner != "hearth" && set.contains(&word) {
                found.insert((*owner, word.clone()));
            }
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_found_past_comments_and_literals() {
        let sql = "-- CREATE TABLE other_x\n/* DROP TABLE other_y */\n\
                   CREATE TABLE IF NOT EXISTS likes_like (id BIGINT REFERENCES hearth_user (id) ON DELETE CASCADE, note TEXT DEFAULT 'CREATE TABLE z');\n\
                   CREATE UNIQUE INDEX likes_like_pair ON likes_like (id);\n\
                   INSERT INTO likes_like (id) VALUES (1) ON CONFLICT (id) DO NOTHING;\n\
                   ALTER TABLE \"likes_like\" ADD COLUMN at BIGINT;";
        let got = objects(sql);
        assert_eq!(
            got,
            vec![
                ("create", "likes_like".to_owned()),
                ("references", "hearth_user".to_owned()),
                ("create", "likes_like_pair".to_owned()),
                ("on", "likes_like".to_owned()),
                ("write", "likes_like".to_owned()),
                ("alter", "likes_like".to_owned()),
            ]
        );
        assert!(check_migration("likes", sql).is_empty());
    }

    #[test]
    fn objects_outside_the_namespace_are_named() {
        let p = check_migration("likes", "CREATE TABLE alerts_feed (id BIGINT)");
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("creates `alerts_feed`"), "{p:?}");
        assert_eq!(
            check_migration("likes", "CREATE INDEX likes_i ON members_profile (id)").len(),
            1
        );
        assert_eq!(
            check_migration("likes", "INSERT INTO members_profile (id) VALUES (1)").len(),
            1
        );
        assert_eq!(
            check_migration(
                "likes",
                "CREATE TABLE likes_x (m BIGINT REFERENCES members_profile (id))"
            )
            .len(),
            1
        );
        assert_eq!(check_migration("likes", "DROP TABLE likesx").len(), 1);
        // Qualified names must name the module's own schema.
        let p = check_migration("likes", "CREATE TABLE public.likes_x (id BIGINT)");
        assert!(p[0].contains("in schema `public`"), "{p:?}");
        assert!(check_migration("likes", "CREATE TABLE likes.likes_x (id BIGINT)").is_empty());
        // A module called `like` does not own `likes_…`.
        assert_eq!(
            check_migration("like", "CREATE TABLE likes_x (id BIGINT)").len(),
            1
        );
    }

    #[test]
    fn foreign_table_names_in_code_are_found() {
        let mut t: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
        t.entry("members")
            .or_default()
            .insert("members_profile".into());
        t.entry("likes").or_default().insert("likes_like".into());
        t.entry("hearth").or_default().insert("hearth_user".into());
        let code =
            r#"sqlx::query("SELECT * FROM likes_like JOIN members_profile ON … hearth_user")"#;
        assert_eq!(
            foreign_tables(&t, "likes", code),
            vec![("members", "members_profile".to_owned())]
        );
        assert!(foreign_tables(&t, "members", "FROM members_profile").is_empty());
    }
}
