//! The console's files, compiled into the binary with `include_str!`: no build step, no npm, no
//! CDN (a browser next to the broker may be offline). Only these exact paths are served, so a
//! path such as `/../Cargo.toml` or `/assets/%2e%2e/x` is simply not one of them: 404.

/// A file of the console: its body and content type.
pub(crate) struct Asset {
    pub(crate) body: &'static str,
    pub(crate) content_type: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";

/// The asset at `path`, if it is one.
pub(crate) fn asset(path: &str) -> Option<Asset> {
    let (body, content_type) = match path {
        "/" | "/index.html" => (include_str!("../assets/index.html"), HTML),
        "/assets/console.css" => (include_str!("../assets/console.css"), "text/css; charset=utf-8"),
        "/assets/console.js" => (include_str!("../assets/console.js"), "text/javascript; charset=utf-8"),
        "/assets/charts.js" => (include_str!("../assets/charts.js"), "text/javascript; charset=utf-8"),
        _ => return None,
    };
    Some(Asset { body, content_type })
}

#[cfg(test)]
mod tests {
    use super::asset;

    #[test]
    fn only_known_paths_are_assets() {
        assert!(asset("/").is_some());
        assert!(asset("/assets/console.js").is_some());
        for path in ["/../Cargo.toml", "/assets/../lib.rs", "/assets/%2e%2e/lib.rs", "/assets/", "/index.htm"]
        {
            assert!(asset(path).is_none(), "{path}");
        }
    }
}
