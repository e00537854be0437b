//! Routes as data: each route a module serves is declared in its spec with
//! its method, path and guard, so `routes`, `summary` and `graph` can list
//! them without running the app, and the app refuses to start when what a
//! module registers differs from what it declares.

use std::fmt;

use axum::routing::MethodFilter;

/// An HTTP method a route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// GET (and HEAD, which axum answers from the GET handler).
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

impl Method {
    /// The method as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }

    /// The method named `s` (case-insensitive).
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            _ => return None,
        })
    }

    pub(crate) fn filter(self) -> MethodFilter {
        match self {
            Method::Get => MethodFilter::GET,
            Method::Post => MethodFilter::POST,
            Method::Put => MethodFilter::PUT,
            Method::Patch => MethodFilter::PATCH,
            Method::Delete => MethodFilter::DELETE,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who may call a route. The guards run before the handler; see
/// `http::pipeline` for their order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Guard {
    /// Anyone.
    Public,
    /// A signed-in user (and, with `auth.signup_allow` set, a verified one);
    /// unsafe methods also pass the CSRF check.
    SignedIn,
    /// A signed-in user acting on their own account, verified or not.
    OwnAccount,
    /// A signed-in user whose email is verified.
    Verified,
    /// A signed-in member of the named group.
    Group(&'static str),
    /// An admin.
    Admin,
}

impl fmt::Display for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Guard::Public => f.write_str("public"),
            Guard::SignedIn => f.write_str("signed-in"),
            Guard::OwnAccount => f.write_str("own-account"),
            Guard::Verified => f.write_str("verified"),
            Guard::Group(g) => write!(f, "group:{g}"),
            Guard::Admin => f.write_str("admin"),
        }
    }
}

/// One route: method, path pattern (axum syntax, `{id}` for a segment,
/// `{*rest}` for the rest) and guard.
///
/// ```
/// use hearth::module::{Guard, RouteSpec};
///
/// pub const LIKE: RouteSpec = RouteSpec::post("/members/{id}/like", Guard::SignedIn);
/// assert!(LIKE.matches("POST", "/members/42/like"));
/// assert!(!LIKE.matches("GET", "/members/42/like"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteSpec {
    /// The method.
    pub method: Method,
    /// The path pattern.
    pub path: &'static str,
    /// Who may call it.
    pub guard: Guard,
}

impl RouteSpec {
    /// A route answering `method` at `path` behind `guard`.
    pub const fn new(method: Method, path: &'static str, guard: Guard) -> Self {
        Self {
            method,
            path,
            guard,
        }
    }

    /// A GET route.
    pub const fn get(path: &'static str, guard: Guard) -> Self {
        Self::new(Method::Get, path, guard)
    }

    /// A POST route.
    pub const fn post(path: &'static str, guard: Guard) -> Self {
        Self::new(Method::Post, path, guard)
    }

    /// A PUT route.
    pub const fn put(path: &'static str, guard: Guard) -> Self {
        Self::new(Method::Put, path, guard)
    }

    /// A PATCH route.
    pub const fn patch(path: &'static str, guard: Guard) -> Self {
        Self::new(Method::Patch, path, guard)
    }

    /// A DELETE route.
    pub const fn delete(path: &'static str, guard: Guard) -> Self {
        Self::new(Method::Delete, path, guard)
    }

    /// Whether a request with `method` for `path` (no query string) lands
    /// on this route. A `{name}` segment of the pattern matches any one
    /// non-empty segment, `{*name}` the rest of the path; a segment that is
    /// itself a `{placeholder}` (as use cases write paths) matches a
    /// `{name}` segment.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        if !self.method.as_str().eq_ignore_ascii_case(method) {
            return false;
        }
        path_matches(self.path, path)
    }

    /// Why this route cannot be served, if it cannot.
    pub(crate) fn problem(&self) -> Option<String> {
        let p = self.path;
        if !p.starts_with('/') {
            return Some(format!("route path `{p}` must start with `/`"));
        }
        if p.len() > 1 && p.ends_with('/') {
            return Some(format!("route path `{p}` must not end with `/`"));
        }
        if p.contains("//") || p.chars().any(|c| c.is_whitespace() || c == '?') {
            return Some(format!("route path `{p}` is not a clean path"));
        }
        for seg in p.split('/').skip(1) {
            let open = seg.matches('{').count();
            let close = seg.matches('}').count();
            let whole = seg.starts_with('{') && seg.ends_with('}') && open == 1 && close == 1;
            if (open > 0 || close > 0) && !whole {
                return Some(format!(
                    "route path `{p}`: a parameter must be a whole segment, like `{{id}}`"
                ));
            }
        }
        None
    }
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

fn path_matches(pattern: &str, path: &str) -> bool {
    let mut pat = pattern.split('/');
    let mut got = path.split('/');
    loop {
        match (pat.next(), got.next()) {
            (None, None) => return true,
            (Some(p), Some(g)) => {
                if p.starts_with("{*") {
                    return !g.is_empty();
                }
                let param = p.starts_with('{') && p.ends_with('}');
                if param {
                    if g.is_empty() {
                        return false;
                    }
                } else if p != g {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_segments() {
        let r = RouteSpec::get("/members/{id}", Guard::Public);
        assert!(r.matches("GET", "/members/7"));
        assert!(r.matches("get", "/members/{bob}"));
        assert!(!r.matches("GET", "/members"));
        assert!(!r.matches("GET", "/members/"));
        assert!(!r.matches("GET", "/members/7/like"));
        assert!(!r.matches("POST", "/members/7"));
        let root = RouteSpec::get("/", Guard::Public);
        assert!(root.matches("GET", "/"));
        assert!(!root.matches("GET", "/x"));
        let rest = RouteSpec::get("/files/{*path}", Guard::Public);
        assert!(rest.matches("GET", "/files/a/b.png"));
        assert!(!rest.matches("GET", "/files"));
    }

    #[test]
    fn bad_paths_are_named() {
        assert!(RouteSpec::get("x", Guard::Public).problem().is_some());
        assert!(RouteSpec::get("/x/", Guard::Public).problem().is_some());
        assert!(RouteSpec::get("/x//y", Guard::Public).problem().is_some());
        assert!(
            RouteSpec::get("/x/a{id}", Guard::Public)
                .problem()
                .is_some()
        );
        assert!(RouteSpec::get("/x?a=1", Guard::Public).problem().is_some());
        assert!(RouteSpec::get("/x/{id}", Guard::Public).problem().is_none());
        assert!(RouteSpec::get("/", Guard::Public).problem().is_none());
    }
}
