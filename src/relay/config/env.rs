//! `${VAR}` and `${VAR:-default}` in the configuration text, expanded from
//! the environment before TOML sees it (comments left alone).

use super::ConfigErrors;

/// `${VAR}` and `${VAR:-default}`; `$$` is a literal `$`. Comments (from
/// a `#` outside quotes to the end of the line) are left as they are.
pub(super) fn expand_env(
    text: &str,
    origin: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, ConfigErrors> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let (code, comment) = line.split_at(comment_start(line));
        expand_line(
            code,
            &format!("{origin}:{}", index + 1),
            &env,
            &mut out,
            &mut problems,
        );
        out.push_str(comment);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors { problems })
    }
}

/// Where a TOML comment starts on `line` (its length when there is none).
fn comment_start(line: &str) -> usize {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' => return i,
            None => {}
        }
    }
    line.len()
}

fn expand_line(
    line: &str,
    at: &str,
    env: &impl Fn(&str) -> Option<String>,
    out: &mut String,
    problems: &mut Vec<String>,
) {
    let mut rest = line;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                problems.push(format!("{at}: `${{` is not closed by `}}`"));
                out.push_str(&rest[dollar..]);
                return;
            };
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expr, None),
            };
            match (env(name), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => problems.push(format!(
                    "{at}: environment variable {name} is not set (write ${{{name}:-default}} for a default)"
                )),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
}
