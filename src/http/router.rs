//! Request routing with the behaviour of nsqd's router (julienschmidt/httprouter v1.3.0):
//! exact path per method; otherwise a 301 (GET) or 307 redirect to the path with its trailing
//! slash toggled or its case and dot segments fixed; `OPTIONS` answered with `Allow`; a known
//! path with the wrong method is 405 with `Allow`; anything else is 404. Pure: no IO.

/// The endpoints of nsqd's HTTP API, plus `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /ping`.
    Ping,
    /// `GET /info`.
    Info,
    /// `POST /pub`.
    Pub,
    /// `POST /mpub`.
    Mpub,
    /// `GET /stats`.
    Stats,
    /// `GET /metrics` (Prometheus; not in nsqd).
    Metrics,
    /// `POST /topic/create`.
    TopicCreate,
    /// `POST /topic/delete`.
    TopicDelete,
    /// `POST /topic/empty`.
    TopicEmpty,
    /// `POST /topic/pause`.
    TopicPause,
    /// `POST /topic/unpause`.
    TopicUnpause,
    /// `POST /channel/create`.
    ChannelCreate,
    /// `POST /channel/delete`.
    ChannelDelete,
    /// `POST /channel/empty`.
    ChannelEmpty,
    /// `POST /channel/pause`.
    ChannelPause,
    /// `POST /channel/unpause`.
    ChannelUnpause,
    /// `GET /config/:opt`.
    ConfigGet,
    /// `PUT /config/:opt`.
    ConfigPut,
    /// Go's `net/http/pprof` endpoints (no Go runtime to profile here).
    Pprof,
    /// `PUT /debug/setblockrate`.
    SetBlockRate,
    /// `POST /debug/freememory`.
    FreeMemory,
}

/// A route: method, path pattern (a final `:opt` segment matches one non-empty segment).
struct Route {
    method: &'static str,
    pattern: &'static str,
    endpoint: Endpoint,
}

const fn r(method: &'static str, pattern: &'static str, endpoint: Endpoint) -> Route {
    Route {
        method,
        pattern,
        endpoint,
    }
}

/// nsqd's routing table (v1.3.0 `nsqd/http.go`), plus `/metrics`.
const ROUTES: &[Route] = &[
    r("GET", "/ping", Endpoint::Ping),
    r("GET", "/info", Endpoint::Info),
    r("POST", "/pub", Endpoint::Pub),
    r("POST", "/mpub", Endpoint::Mpub),
    r("GET", "/stats", Endpoint::Stats),
    r("GET", "/metrics", Endpoint::Metrics),
    r("POST", "/topic/create", Endpoint::TopicCreate),
    r("POST", "/topic/delete", Endpoint::TopicDelete),
    r("POST", "/topic/empty", Endpoint::TopicEmpty),
    r("POST", "/topic/pause", Endpoint::TopicPause),
    r("POST", "/topic/unpause", Endpoint::TopicUnpause),
    r("POST", "/channel/create", Endpoint::ChannelCreate),
    r("POST", "/channel/delete", Endpoint::ChannelDelete),
    r("POST", "/channel/empty", Endpoint::ChannelEmpty),
    r("POST", "/channel/pause", Endpoint::ChannelPause),
    r("POST", "/channel/unpause", Endpoint::ChannelUnpause),
    r("GET", "/config/:opt", Endpoint::ConfigGet),
    r("PUT", "/config/:opt", Endpoint::ConfigPut),
    r("GET", "/debug/pprof/", Endpoint::Pprof),
    r("GET", "/debug/pprof/cmdline", Endpoint::Pprof),
    r("GET", "/debug/pprof/symbol", Endpoint::Pprof),
    r("POST", "/debug/pprof/symbol", Endpoint::Pprof),
    r("GET", "/debug/pprof/profile", Endpoint::Pprof),
    r("GET", "/debug/pprof/heap", Endpoint::Pprof),
    r("GET", "/debug/pprof/goroutine", Endpoint::Pprof),
    r("GET", "/debug/pprof/block", Endpoint::Pprof),
    r("PUT", "/debug/setblockrate", Endpoint::SetBlockRate),
    r("POST", "/debug/freememory", Endpoint::FreeMemory),
    r("GET", "/debug/pprof/threadcreate", Endpoint::Pprof),
];

/// What the router decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routed {
    /// Serve this endpoint; `param` is the `:opt` segment for `/config/:opt`.
    Endpoint {
        /// Which endpoint.
        endpoint: Endpoint,
        /// The path parameter, if the route has one.
        param: Option<String>,
    },
    /// Redirect (301 for GET, 307 otherwise) to `location` (path and query).
    Redirect {
        /// 301 or 307.
        status: u16,
        /// The fixed path plus the original query.
        location: String,
    },
    /// `OPTIONS` on a known path: 200, empty, with `Allow`.
    Options {
        /// Sorted, comma-space separated, including `OPTIONS`.
        allow: String,
    },
    /// A known path with another method: 405 with `Allow`.
    MethodNotAllowed {
        /// Sorted, comma-space separated, including `OPTIONS`.
        allow: String,
    },
    /// 404.
    NotFound,
}

/// Routes one request. `path` is the percent-decoded path; `query` the raw query string.
pub fn route(method: &str, path: &str, query: Option<&str>) -> Routed {
    let has_tree = ROUTES.iter().any(|r| r.method == method);
    if has_tree {
        if let Some((endpoint, param)) = lookup(method, path) {
            return Routed::Endpoint { endpoint, param };
        }
        if method != "CONNECT" && path != "/" {
            let status = if method == "GET" { 301 } else { 307 };
            let tsr = toggle_trailing_slash(path);
            let fixed = if lookup(method, &tsr).is_some() {
                Some(tsr)
            } else {
                fixed_path(method, &clean_path(path))
            };
            if let Some(fixed) = fixed {
                return Routed::Redirect {
                    status,
                    location: location(&fixed, query),
                };
            }
        }
    }
    if method == "OPTIONS" {
        let allow = allowed(path, method);
        if !allow.is_empty() {
            return Routed::Options { allow };
        }
    } else {
        let allow = allowed(path, method);
        if !allow.is_empty() {
            return Routed::MethodNotAllowed { allow };
        }
    }
    Routed::NotFound
}

/// The exact route of `method` for `path`.
fn lookup(method: &str, path: &str) -> Option<(Endpoint, Option<String>)> {
    ROUTES
        .iter()
        .filter(|r| r.method == method)
        .find_map(|r| match_pattern(r.pattern, path).map(|p| (r.endpoint, p)))
}

/// `Some(param)` when `path` matches `pattern` exactly.
fn match_pattern(pattern: &str, path: &str) -> Option<Option<String>> {
    match pattern.strip_suffix(":opt") {
        Some(prefix) => {
            let rest = path.strip_prefix(prefix)?;
            (!rest.is_empty() && !rest.contains('/')).then(|| Some(rest.to_string()))
        }
        None => (pattern == path).then_some(None),
    }
}

/// httprouter's case-insensitive lookup of a cleaned path, also trying the other trailing
/// slash; the parameter keeps its case.
fn fixed_path(method: &str, clean: &str) -> Option<String> {
    let candidates = [clean.to_string(), toggle_trailing_slash(clean)];
    candidates.iter().find_map(|path| {
        ROUTES
            .iter()
            .filter(|r| r.method == method)
            .find_map(|r| match_pattern_ci(r.pattern, path))
    })
}

fn match_pattern_ci(pattern: &str, path: &str) -> Option<String> {
    match pattern.strip_suffix(":opt") {
        Some(prefix) => {
            let head = path.get(..prefix.len())?;
            let rest = &path[prefix.len()..];
            (head.eq_ignore_ascii_case(prefix) && !rest.is_empty() && !rest.contains('/'))
                .then(|| format!("{prefix}{rest}"))
        }
        None => pattern
            .eq_ignore_ascii_case(path)
            .then(|| pattern.to_string()),
    }
}

fn toggle_trailing_slash(path: &str) -> String {
    match path.strip_suffix('/') {
        Some(stripped) if path.len() > 1 => stripped.to_string(),
        _ => format!("{path}/"),
    }
}

/// The methods `path` is served with (other than `method`), plus `OPTIONS`, sorted and
/// joined as httprouter's `Allow` header; empty when none. `*` means every method.
pub fn allowed(path: &str, method: &str) -> String {
    let mut methods: Vec<&str> = Vec::new();
    for r in ROUTES {
        let wanted = if path == "*" {
            true
        } else {
            r.method != method && match_pattern(r.pattern, path).is_some()
        };
        if wanted && r.method != "OPTIONS" && !methods.contains(&r.method) {
            methods.push(r.method);
        }
    }
    if methods.is_empty() {
        return String::new();
    }
    methods.push("OPTIONS");
    methods.sort_unstable();
    methods.join(", ")
}

/// httprouter's `CleanPath`: one leading slash, no empty, `.` or `..` segments, the trailing
/// slash kept.
pub fn clean_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = format!("/{}", segments.join("/"));
    if path.len() > 1 && path.ends_with('/') && out != "/" {
        out.push('/');
    }
    out
}

/// The `Location` of a redirect: Go's escaped path plus the raw query.
fn location(path: &str, query: Option<&str>) -> String {
    let mut out = String::with_capacity(path.len());
    for &b in clean_path(path).as_bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~$&+,/:;=@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(e: Endpoint) -> Routed {
        Routed::Endpoint {
            endpoint: e,
            param: None,
        }
    }

    fn redirect(status: u16, location: &str) -> Routed {
        Routed::Redirect {
            status,
            location: location.into(),
        }
    }

    #[test]
    fn exact_routes_and_params() {
        assert_eq!(route("GET", "/ping", None), endpoint(Endpoint::Ping));
        assert_eq!(route("POST", "/pub", None), endpoint(Endpoint::Pub));
        assert_eq!(
            route("PUT", "/config/log_level", None),
            Routed::Endpoint {
                endpoint: Endpoint::ConfigPut,
                param: Some("log_level".into())
            }
        );
        assert_eq!(route("GET", "/config", None), Routed::NotFound);
        assert_eq!(route("GET", "/config/", None), Routed::NotFound);
        assert_eq!(route("GET", "/config/a/b", None), Routed::NotFound);
        assert_eq!(route("GET", "/nope", None), Routed::NotFound);
    }

    #[test]
    fn redirects_like_httprouter() {
        assert_eq!(route("GET", "/stats/", None), redirect(301, "/stats"));
        assert_eq!(
            route("GET", "/Stats/", Some("format=json")),
            redirect(301, "/stats?format=json")
        );
        assert_eq!(route("GET", "/PING", None), redirect(301, "/ping"));
        assert_eq!(route("GET", "//ping", None), redirect(301, "/ping"));
        assert_eq!(route("GET", "/ping/", None), redirect(301, "/ping"));
        assert_eq!(
            route("GET", "/debug/pprof", None),
            redirect(301, "/debug/pprof/")
        );
        assert_eq!(
            route("POST", "/Topic/create", Some("topic=x")),
            redirect(307, "/topic/create?topic=x")
        );
        assert_eq!(route("POST", "/pub/", None), redirect(307, "/pub"));
        assert_eq!(
            route("GET", "/CONFIG/Log_Level", None),
            redirect(301, "/config/Log_Level")
        );
        // Redirects look only at the request method's routes.
        assert_eq!(route("GET", "/pub/", None), Routed::NotFound);
    }

    #[test]
    fn options_and_method_not_allowed() {
        let allow = |a: &str| a.to_string();
        assert_eq!(
            route("OPTIONS", "/ping", None),
            Routed::Options {
                allow: allow("GET, OPTIONS")
            }
        );
        assert_eq!(
            route("OPTIONS", "/pub", None),
            Routed::Options {
                allow: allow("OPTIONS, POST")
            }
        );
        assert_eq!(route("OPTIONS", "/nope", None), Routed::NotFound);
        assert_eq!(route("OPTIONS", "/ping/", None), Routed::NotFound);
        assert_eq!(
            route("POST", "/ping", None),
            Routed::MethodNotAllowed {
                allow: allow("GET, OPTIONS")
            }
        );
        assert_eq!(
            route("DELETE", "/config/log_level", None),
            Routed::MethodNotAllowed {
                allow: allow("GET, OPTIONS, PUT")
            }
        );
        assert_eq!(
            route("HEAD", "/ping", None),
            Routed::MethodNotAllowed {
                allow: allow("GET, OPTIONS")
            }
        );
        assert_eq!(
            route("GET", "*", None),
            Routed::MethodNotAllowed {
                allow: allow("GET, OPTIONS, POST, PUT")
            }
        );
        assert_eq!(
            route("GET", "/topic/create", None),
            Routed::MethodNotAllowed {
                allow: allow("OPTIONS, POST")
            }
        );
    }

    #[test]
    fn clean_path_matches_httprouter() {
        for (input, want) in [
            ("", "/"),
            ("/", "/"),
            ("//a//b/", "/a/b/"),
            ("/a/./b/../c", "/a/c"),
            ("/../a", "/a"),
            ("a/b", "/a/b"),
        ] {
            assert_eq!(clean_path(input), want, "{input}");
        }
        assert_eq!(location("/a b", Some("")), "/a%20b");
    }
}
