//! The console's files, embedded in the binary: `/` is `index.html`, `/console/{file}`
//! the rest. No file is generated; editing `assets/` and rebuilding is the whole
//! workflow.

use crate::http::Reply;

/// Every file: name under `/console/`, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("assets/style.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("assets/favicon.svg"),
    ),
    js("app.js", include_str!("assets/app.js")),
    js("api.js", include_str!("assets/api.js")),
    js("dom.js", include_str!("assets/dom.js")),
    js("charts.js", include_str!("assets/charts.js")),
    js("overview.js", include_str!("assets/overview.js")),
    js("topics.js", include_str!("assets/topics.js")),
    js("messages.js", include_str!("assets/messages.js")),
    js("groups.js", include_str!("assets/groups.js")),
    js("queues.js", include_str!("assets/queues.js")),
];

const fn js(name: &'static str, body: &'static str) -> (&'static str, &'static str, &'static str) {
    (name, "text/javascript; charset=utf-8", body)
}

fn file(name: &str) -> Option<&'static (&'static str, &'static str, &'static str)> {
    FILES.iter().find(|(n, _, _)| *n == name)
}

/// Whether a path (its segments) names one of the console's files.
pub(crate) fn is_asset(segments: &[&str]) -> bool {
    match segments {
        [""] => true,
        ["console", name] => file(name).is_some(),
        _ => false,
    }
}

/// The file a path names.
pub(super) fn serve(segments: &[&str]) -> Option<Reply> {
    let name = match segments {
        [""] => "index.html",
        ["console", name] => name,
        _ => return None,
    };
    let (_, content_type, body) = file(name)?;
    Some(Reply {
        status: 200,
        content_type,
        body: (*body).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_served_with_its_type() {
        assert!(is_asset(&[""]));
        assert!(is_asset(&["console", "app.js"]));
        assert!(!is_asset(&["console", "../http.rs"]));
        assert!(!is_asset(&["console", "nope.js"]));
        assert!(!is_asset(&["v1", "topics"]));
        let index = serve(&[""]).unwrap();
        assert!(index.content_type.starts_with("text/html"));
        for (name, content_type, _) in FILES {
            let reply = serve(&["console", name]).unwrap();
            assert_eq!(reply.content_type, *content_type);
        }
    }

    #[test]
    fn every_module_the_pages_import_is_embedded() {
        for (name, _, body) in FILES {
            for line in body.lines() {
                let Some(rest) = line.split(" from './").nth(1) else {
                    continue;
                };
                let imported = rest.split('\'').next().unwrap_or("");
                assert!(file(imported).is_some(), "{name} imports {imported}");
            }
        }
    }

    #[test]
    fn no_inline_script_or_style_and_no_inner_html() {
        let index = file("index.html").unwrap().2;
        assert!(!index.contains("<style"), "inline style");
        assert!(!index.contains(" style="), "inline style attribute");
        for chunk in index.split("<script").skip(1) {
            let tag = chunk.split('>').next().unwrap_or("");
            assert!(tag.contains("src="), "inline script: <script{tag}>");
        }
        for (name, _, body) in FILES.iter().filter(|(n, _, _)| n.ends_with(".js")) {
            for bad in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!body.contains(bad), "{name} uses {bad}");
            }
        }
    }
}
