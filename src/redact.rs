//! Secrets kept out of messages and logs.

/// `text` with every occurrence of each secret replaced by `***` (longest
/// first, so a secret inside another is not half-shown). For error texts of
/// client libraries, which may quote a configuration value verbatim.
pub fn redact_secrets(text: &str, secrets: &[String]) -> String {
    let mut secrets: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_owned();
    for secret in secrets {
        out = out.replace(secret.as_str(), "***");
    }
    out
}

/// The password of `scheme://user:pass@host…`, if it has one.
pub fn url_password(url: &str) -> Option<String> {
    let scheme = url.find("://")?;
    let at = url.rfind('@')?;
    (at > scheme)
        .then(|| {
            url[scheme + 3..at]
                .split_once(':')
                .map(|(_, p)| p.to_owned())
        })
        .flatten()
        .filter(|p| !p.is_empty())
}

/// `scheme://user:pass@host` → `scheme://user:***@host`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
