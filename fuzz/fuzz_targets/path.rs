//! `normalize_path` on the input, then `RouteTable::lookup` on a fixed
//! table. A normalised path is a fixed point of normalisation and holds no
//! empty, `.` or `..` segment, no encoded slash, NUL or backslash.
#![no_main]

use std::sync::OnceLock;

use http::Method;
use libfuzzer_sys::fuzz_target;
use warden::routes::{Match, RouteKey, RouteTable, normalize_path};

fn table() -> &'static RouteTable<&'static str> {
    static TABLE: OnceLock<RouteTable<&'static str>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let route = |host: Option<&str>, prefix: &str, methods: Option<Vec<Method>>, name| {
            let key = RouteKey {
                host: host.map(str::to_owned),
                path_prefix: prefix.to_owned(),
                methods,
            };
            (key, name)
        };
        RouteTable::new(vec![
            route(None, "/", None, "root"),
            route(None, "/api", Some(vec![Method::GET]), "api-read"),
            route(None, "/api", Some(vec![Method::POST]), "api-write"),
            route(None, "/api/admin", Some(vec![Method::GET]), "admin"),
            route(Some("internal.example"), "/api", None, "internal"),
            route(None, "/public/a%20b", None, "escaped"),
        ])
    })
}

fn check_normal(path: &str) {
    assert!(path.starts_with('/'), "{path:?}");
    assert!(!path.contains("//"), "{path:?}");
    assert!(!path.contains('\\'), "{path:?}");
    let upper = path.to_ascii_uppercase();
    assert!(!upper.contains("%2F") && !upper.contains("%00") && !upper.contains("%5C"));
    for segment in path[1..].split('/') {
        assert!(segment != "." && segment != "..", "{path:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(once) = normalize_path(raw) else {
        return;
    };
    check_normal(&once);
    let twice = normalize_path(&once).expect("a normalised path normalises");
    assert_eq!(twice, once, "not idempotent for {raw:?}");

    let table = table();
    for (host, method) in [
        (None, Method::GET),
        (Some("Internal.Example:8443"), Method::DELETE),
        (Some("other"), Method::POST),
    ] {
        match table.lookup(host, &once, &method) {
            Match::Found(_) | Match::MethodNotAllowed(_) => {}
            Match::NotFound => panic!("the root route takes every path: {once:?}"),
        }
    }
});
