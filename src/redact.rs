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

/// The user name and password of `scheme://user:pass@host…`, those it has:
/// both are secrets (a token often travels as the user name).
pub fn url_credentials(url: &str) -> Vec<String> {
    let Some(scheme) = url.find("://") else {
        return Vec::new();
    };
    match url.rfind('@') {
        Some(at) if at > scheme => url[scheme + 3..at]
            .split(':')
            .filter(|part| !part.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
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

/// `scheme://user:pass@host` → `scheme://***@host`: the user name goes
/// too, as a token often travels there.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_shows_neither_user_nor_password() {
        assert_eq!(
            redact_url("amqp://eyJhbGciOi:s3cret@rabbit:5672/%2f"),
            "amqp://***@rabbit:5672/%2f"
        );
        assert_eq!(redact_url("redis://token@h:6379"), "redis://***@h:6379");
        assert_eq!(redact_url("amqp://rabbit:5672"), "amqp://rabbit:5672");
        assert_eq!(
            url_credentials("amqp://eyJhbGciOi:s3cret@rabbit"),
            vec!["eyJhbGciOi".to_owned(), "s3cret".to_owned()]
        );
        let text = "connecting as eyJhbGciOi with s3cret failed";
        assert_eq!(
            redact_secrets(text, &url_credentials("amqp://eyJhbGciOi:s3cret@rabbit")),
            "connecting as *** with *** failed"
        );
    }
}
