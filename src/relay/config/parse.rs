//! TOML into the schema's structs, reporting every key and value they
//! reject, each at its line.

use super::schema::FileSpec;

/// At most this many key or type problems are reported from one file.
const MAX_PARSE_PROBLEMS: usize = 50;

/// Parses the expanded text into the file's structs, reporting every key
/// and value they reject, not only the first (serde stops at one): each
/// rejected line is blanked out and the text parsed again.
///
/// The structs come back only when they are whole — no table had to be
/// blanked for a missing key — so that validation never reports a problem
/// the blanking made up. A syntax error stops the reading: what follows it
/// cannot be trusted.
pub(super) fn read_spec(origin: &str, expanded: &str) -> (Option<FileSpec>, Vec<String>) {
    let mut text = expanded.to_owned();
    let mut problems = Problems::default();
    // (the table it was in, the key) of each line blanked so far.
    let mut blanked: Vec<(usize, String)> = Vec::new();
    let mut whole = true;
    while problems.len() < MAX_PARSE_PROBLEMS {
        if let Err(err) = toml::from_str::<toml::Table>(&text) {
            // Only the first round's syntax error is the user's own; a
            // later one comes from blanking part of a multi-line value.
            if blanked.is_empty() {
                problems.add(origin, &text, &err);
            }
            return (None, problems.by_line());
        }
        let err = match toml::from_str::<FileSpec>(&text) {
            Ok(spec) => return (whole.then_some(spec), problems.by_line()),
            Err(err) => err,
        };
        let Some(span) = err.span() else {
            problems.add(origin, &text, &err);
            return (None, problems.by_line());
        };
        let missing_key = err
            .message()
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        // A key blanked out for its bad value is missing next round: that
        // is the same problem, already reported.
        let follows_earlier = missing_key.is_some_and(|key| {
            let table = table_start(&text, span.start);
            blanked.iter().any(|(t, k)| *t == table && k == key)
        });
        if !follows_earlier {
            problems.add(origin, &text, &err);
        }
        whole &= missing_key.is_none();
        let table = table_start(&text, span.start);
        // A table without a key it needs goes whole: blanking its header
        // alone would hand its keys to the table above.
        let span = match missing_key {
            Some(_) => table..table_end(&text, table),
            None => span,
        };
        let Some(key) = blank_lines(&mut text, span) else {
            return (None, problems.by_line());
        };
        blanked.push((table, key));
    }
    (None, problems.by_line())
}

/// Problems found while reading, each with its line, to be listed in the
/// file's order (the reading finds them in the structs' order).
#[derive(Default)]
struct Problems(Vec<(usize, String)>);

impl Problems {
    fn add(&mut self, origin: &str, text: &str, err: &toml::de::Error) {
        let line = err.span().map_or(0, |s| line_of(text, s.start));
        self.0.push((line, toml_error(origin, text, err)));
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn by_line(mut self) -> Vec<String> {
        self.0.sort_by_key(|(line, _)| *line);
        self.0.into_iter().map(|(_, problem)| problem).collect()
    }
}

/// Where the table whose header starts at `table` ends: the newline before
/// the next header, or the end of the text.
fn table_end(text: &str, table: usize) -> usize {
    let mut line_start = table;
    for (index, line) in text[table..].split_inclusive('\n').enumerate() {
        if index > 0 && line.trim_start().starts_with('[') {
            return line_start - 1;
        }
        line_start += line.len();
    }
    text.len()
}

/// Where the `[table]` or `[[table]]` header before `offset` starts (0 for
/// the top level).
fn table_start(text: &str, offset: usize) -> usize {
    let mut start = 0;
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        if line_start > offset {
            break;
        }
        if line.trim_start().starts_with('[') {
            start = line_start;
        }
        line_start += line.len();
    }
    start
}

/// Replaces every character on the lines that `span` touches with spaces
/// (newlines kept, one space per byte, so every later line keeps its number
/// and offset). Returns the key the first of them held, `None` when they
/// held nothing to blank.
fn blank_lines(text: &mut String, span: std::ops::Range<usize>) -> Option<String> {
    let end = span.end.min(text.len());
    let start = span.start.min(end);
    // Bytes, not str slices: a span need not fall on a char boundary, a
    // newline always does.
    let bytes = text.as_bytes();
    let first = bytes[..start]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let last = bytes[end..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(text.len(), |i| end + i);
    let lines = &text[first..last];
    if lines.trim().is_empty() {
        return None;
    }
    let key = lines
        .split('=')
        .next()
        .unwrap_or_default()
        .trim()
        .trim_matches(['"', '\''])
        .to_owned();
    let blank: String = lines
        .chars()
        .flat_map(|c| {
            let fill = if c == '\n' { '\n' } else { ' ' };
            std::iter::repeat_n(fill, c.len_utf8())
        })
        .collect();
    text.replace_range(first..last, &blank);
    Some(key)
}

pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let before = &text.as_bytes()[..offset.min(text.len())];
    before.iter().filter(|&&b| b == b'\n').count() + 1
}

fn toml_error(origin: &str, text: &str, err: &toml::de::Error) -> String {
    let line = err.span().map(|s| line_of(text, s.start)).unwrap_or(0);
    let message = err.message().trim().replace('\n', " ");
    format!("{origin}:{line}: {message}")
}
