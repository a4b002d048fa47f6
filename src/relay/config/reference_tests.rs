//! The reference (`reference.rs`) against the parser, with no broker:
//!
//! * every key it lists is accepted, with a value of its documented type,
//!   and a value of another type is refused;
//! * every key the parser accepts is listed (serde's `unknown field`
//!   message names them all, table by table);
//! * every documented default is what the relay uses when the key is left
//!   out;
//! * `docs/config-reference.md` is the rendered reference
//!   (`TRACEBRIDGE_WRITE_REFERENCE=1` rewrites it).
//!
//! Each configuration is built from the reference itself: every required
//! key at its example, and the key under test.

use std::collections::BTreeSet;
use std::path::Path;

use super::reference::{Default, Effect, Key, Only, TABLES, Table, Type, markdown};
use super::{DEFAULT_REDIS_URL, RelayConfig};

const ORIGIN: &str = "reference.toml";

/// `${VAR}` in examples: every variable is set (16+ bytes, so that it
/// passes as a hash key too).
fn env(name: &str) -> Option<String> {
    Some(format!("{name}-from-the-environment"))
}

/// Other keys a key's values need to be valid: `derive`, journey sampling
/// and `hashed` need a key; the store timeout shows only on a Redis store.
const CONTEXT: &[(&str, &[(&str, &str)])] = &[
    (
        "route.correlation.journey_sampling",
        &[("route.correlation.key", r#""${CORRELATION_KEY}""#)],
    ),
    (
        "route.correlation.policy",
        &[("route.correlation.key", r#""${CORRELATION_KEY}""#)],
    ),
    (
        "route.correlation.fallback",
        &[("route.correlation.key", r#""${CORRELATION_KEY}""#)],
    ),
    (
        "route.correlation.store_timeout",
        &[("route.correlation.store", r#""redis""#)],
    ),
    (
        "telemetry.record_message_keys",
        &[("telemetry.attribute_hash_key", r#""${HASH_KEY}""#)],
    ),
    (
        "telemetry.record_request_ids",
        &[("telemetry.attribute_hash_key", r#""${HASH_KEY}""#)],
    ),
    (
        "telemetry.record_captured_headers",
        &[("telemetry.attribute_hash_key", r#""${HASH_KEY}""#)],
    ),
];

/// Every documented key: its full path, table and key.
fn keys() -> Vec<(String, &'static Table, &'static Key)> {
    TABLES
        .iter()
        .flat_map(|t| {
            t.keys
                .iter()
                .map(move |k| (format!("{}.{}", t.path, k.name), t, k))
        })
        .collect()
}

fn table(path: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.path == path)
}

fn key(path: &str) -> Option<&'static Key> {
    let (table_path, name) = split(path);
    table(table_path)?.keys.iter().find(|k| k.name == name)
}

/// `route.from.topic` → (`route.from`, `topic`); a top-level key has the
/// table `""`.
fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('.').unwrap_or(("", path))
}

/// A configuration: every required key at its example (for the kind of
/// broker of each `from`, `to` and `dead_letter`), plus `set`, minus
/// `omit`. Tables not required appear when a key in them is set.
#[derive(Clone, Default)]
struct Doc {
    set: Vec<(String, String)>,
    omit: Vec<String>,
    kinds: Vec<(String, Only)>,
    /// Tables written even when no key in them is set.
    include: Vec<String>,
}

impl Doc {
    /// The configuration to try `path` in: its table on the broker kind
    /// the key belongs to, with the keys its values need.
    fn for_key(path: &str) -> Self {
        let mut doc = Doc::default();
        let table = split(path).0;
        if let Some(key) = key(path).filter(|k| k.only != Only::Any) {
            doc = doc.kind(table, key.only);
        }
        doc.include.push(table.to_owned());
        for (p, context) in CONTEXT {
            if *p == path {
                for (p, v) in *context {
                    doc = doc.set(p, v);
                }
            }
        }
        doc
    }

    fn set(mut self, path: &str, value: &str) -> Self {
        self.set.retain(|(p, _)| p != path);
        self.set.push((path.to_owned(), value.to_owned()));
        self
    }

    fn omit(mut self, path: &str) -> Self {
        self.omit.push(path.to_owned());
        self
    }

    fn kind(mut self, table: &str, kind: Only) -> Self {
        self.kinds.push((table.to_owned(), kind));
        self
    }

    fn kind_of(&self, table: &str) -> Only {
        if let Some((_, kind)) = self.kinds.iter().rev().find(|(t, _)| t == table) {
            return *kind;
        }
        let set = self
            .set
            .iter()
            .filter(|(p, _)| split(p).0 == table)
            .filter_map(|(p, _)| key(p).map(|k| k.only))
            .find(|only| *only != Only::Any);
        match (set, table) {
            (Some(kind), _) => kind,
            (None, "route.from") => Only::Kafka,
            (None, "route.to" | "route.dead_letter") => Only::Amqp,
            (None, _) => Only::Any,
        }
    }

    fn value(&self, path: &str) -> Option<&str> {
        self.set
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, v)| v.as_str())
    }

    fn needs(&self, table: &str) -> bool {
        let prefix = format!("{table}.");
        self.set.iter().any(|(p, _)| p.starts_with(&prefix))
            || self.kinds.iter().any(|(t, _)| t == table)
            || self.include.iter().any(|t| t == table)
    }

    /// `name = value` for each key of `table` in the file.
    fn lines(&self, table_path: &str) -> Vec<String> {
        let kind = self.kind_of(table_path);
        let mut lines = Vec::new();
        let keys = table(table_path).map_or(&[][..], |t| t.keys);
        for key in keys {
            let path = format!("{table_path}.{}", key.name);
            if self.omit.contains(&path) {
                continue;
            }
            if let Some(value) = self.value(&path) {
                lines.push(format!("{} = {value}", key.name));
            } else if table(&path).is_some() {
                if matches!(key.default, Default::Required) || self.needs(&path) {
                    let inner = self.lines(&path).join(", ");
                    lines.push(format!("{} = {{ {inner} }}", key.name));
                }
            } else if matches!(key.default, Default::Required)
                && (key.only == Only::Any || key.only == kind)
            {
                lines.push(format!("{} = {}", key.name, key.example));
            }
        }
        // Keys the reference does not list (unknown, unused).
        for (path, value) in &self.set {
            let (t, name) = split(path);
            if t == table_path && !keys.iter().any(|k| k.name == name) {
                lines.push(format!("{name} = {value}"));
            }
        }
        lines
    }

    fn text(&self) -> String {
        let mut out = self.lines("").join("\n");
        for t in TABLES {
            if table(split(t.path).0).is_some() {
                continue; // written inline in its parent
            }
            let header = match t.path {
                "route" => "[[route]]".to_owned(),
                path => format!(
                    "[{}]",
                    path.replace("kafka.<name>", "kafka.main")
                        .replace("amqp.<name>", "amqp.rabbit")
                ),
            };
            out.push_str(&format!("\n\n{header}\n{}", self.lines(t.path).join("\n")));
        }
        out.push('\n');
        out
    }

    fn parse(&self) -> Result<RelayConfig, Vec<String>> {
        RelayConfig::parse(&self.text(), ORIGIN, env).map_err(|e| e.problems)
    }

    /// The parsed configuration, printed in full; fails the test when the
    /// relay rejects it.
    fn parsed(&self, why: &str) -> String {
        match self.parse() {
            Ok(config) => format!("{config:#?}"),
            Err(problems) => panic!("{why}: the relay rejects\n{}\n{problems:#?}", self.text()),
        }
    }

    /// Fails the test unless the relay rejects the file, naming `name` or
    /// the line that sets it to `value`.
    fn refused(&self, name: &str, value: &str, why: &str) {
        let text = self.text();
        let problems = match self.parse() {
            Ok(_) => panic!("{why}: the relay accepts\n{text}"),
            Err(problems) => problems,
        };
        let line = text
            .lines()
            .position(|l| l.contains(&format!("{name} = {value}")))
            .map(|i| format!("{ORIGIN}:{}:", i + 1));
        assert!(
            problems
                .iter()
                .any(|p| p.contains(name) || line.as_ref().is_some_and(|l| p.starts_with(l))),
            "{why}: rejected, but not for `{name}`:\n{text}\n{problems:#?}"
        );
    }
}

/// `v = <value>` read by TOML.
fn toml_value(text: &str) -> toml::Value {
    let mut table: toml::Table = toml::from_str(&format!("v = {text}"))
        .unwrap_or_else(|e| panic!("`{text}` is not a TOML value: {e}"));
    table.remove("v").expect("v")
}

/// Where the first placeholder (`NAME`, `HOST`) of a choice starts.
fn placeholder(choice: &str) -> Option<usize> {
    choice.find(|c: char| c.is_ascii_uppercase())
}

fn is_choice(value: &str, choices: &[&str]) -> bool {
    choices.iter().any(|c| match placeholder(c) {
        None => value == *c,
        Some(at) => value.starts_with(&c[..at]) && value.len() > at,
    })
}

/// A value a choice stands for.
fn instance(choice: &str) -> String {
    choice
        .replace("NAME", "x-name")
        .replace("POINTER", "id")
        .replace("HOST", "127.0.0.1")
        .replace("PORT", "6379")
}

/// Whether a TOML value has the documented type.
fn conforms(ty: Type, text: &str) -> Result<(), String> {
    let value = toml_value(text);
    let string = value.as_str();
    let strings = || -> Option<Vec<&str>> {
        value
            .as_array()?
            .iter()
            .map(toml::Value::as_str)
            .collect::<Option<Vec<_>>>()
    };
    let ok = match ty {
        Type::String => string.is_some(),
        Type::Integer => value.as_integer().is_some_and(|i| i >= 0),
        Type::Bool => value.as_bool().is_some(),
        Type::Duration => string.is_some_and(|s| humantime::parse_duration(s).is_ok()),
        Type::Address => string.is_some_and(|s| s.parse::<std::net::SocketAddr>().is_ok()),
        Type::OneOf(choices) => string.is_some_and(|s| is_choice(s, choices)),
        Type::Strings => strings().is_some(),
        Type::ListOf(choices) => strings().is_some_and(|v| v.iter().all(|s| is_choice(s, choices))),
        Type::StringTable => value
            .as_table()
            .is_some_and(|t| t.values().all(toml::Value::is_str)),
        Type::InlineTable | Type::Table => value.is_table(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("`{text}` is not a {}", ty_name(ty)))
    }
}

fn ty_name(ty: Type) -> &'static str {
    match ty {
        Type::String => "string",
        Type::Integer => "integer",
        Type::Bool => "boolean",
        Type::Duration => "duration",
        Type::Address => "address",
        Type::OneOf(_) => "choice",
        Type::Strings => "array of strings",
        Type::ListOf(_) => "array of choices",
        Type::StringTable => "table of strings",
        Type::InlineTable | Type::Table => "table",
    }
}

/// A value of another type (or no valid choice).
fn wrong_value(ty: Type) -> &'static str {
    match ty {
        Type::String => "1",
        Type::Integer => r#""1""#,
        Type::Bool => r#""yes""#,
        Type::Duration => r#""soon""#,
        Type::Address => r#""relay.example:9464""#,
        Type::OneOf(_) => r#""zz-no-such-choice""#,
        Type::Strings => r#""x""#,
        Type::ListOf(_) => r#"["zz-no-such-choice"]"#,
        Type::StringTable => r#"{ "linger.ms" = 5 }"#,
        Type::InlineTable | Type::Table => r#""x""#,
    }
}

/// The names in backquotes after "expected" in a serde message:
/// "unknown field `x`, expected one of `a`, `b`" → [a, b].
fn expected_names(problem: &str) -> BTreeSet<String> {
    let Some((_, expected)) = problem.split_once("expected") else {
        return BTreeSet::new();
    };
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_key_is_accepted_with_a_value_of_its_type_and_refuses_another() {
    let keys = keys();
    assert!(!keys.is_empty());
    for (path, _, key) in &keys {
        let doc = Doc::for_key(path);
        conforms(key.ty, key.example).unwrap_or_else(|e| panic!("{path}: example: {e}"));
        let default = match key.default {
            Default::Value(v) | Default::Env(_, Some(v)) => Some(v),
            _ => None,
        };
        if let Some(default) = default {
            conforms(key.ty, default).unwrap_or_else(|e| panic!("{path}: default: {e}"));
        }

        doc.clone()
            .set(path, key.example)
            .parsed(&format!("{path} = {} (its example)", key.example));

        let wrong = wrong_value(key.ty);
        doc.clone().set(path, wrong).refused(
            key.name,
            wrong,
            &format!("{path} = {wrong} (not a {})", ty_name(key.ty)),
        );

        let (Type::OneOf(choices) | Type::ListOf(choices)) = key.ty else {
            continue;
        };
        let list = matches!(key.ty, Type::ListOf(_));
        let written = |v: &str| {
            if list {
                format!("[\"{v}\"]")
            } else {
                format!("\"{v}\"")
            }
        };
        for choice in choices {
            let value = written(&instance(choice));
            doc.clone()
                .set(path, &value)
                .parsed(&format!("{path} = {value} (a documented choice)"));
        }
        // An enum's variants are all in serde's message: those not
        // documented must be refused.
        let problems = doc
            .clone()
            .set(path, wrong)
            .parse()
            .expect_err("refused above");
        let variants = problems
            .iter()
            .find(|p| p.contains("unknown variant"))
            .map(|p| expected_names(p))
            .unwrap_or_default();
        for variant in variants.iter().filter(|v| !is_choice(v, choices)) {
            let value = written(variant);
            doc.clone().set(path, &value).refused(
                key.name,
                &value,
                &format!("{path} = {value} (parsed, but not in the reference's choices)"),
            );
        }
    }
}

#[test]
fn every_key_the_parser_accepts_is_in_the_reference() {
    let accepted = |table: &str| -> BTreeSet<String> {
        let path = match table {
            "" => "zz_unknown".to_owned(),
            table => format!("{table}.zz_unknown"),
        };
        let doc = Doc::default().set(&path, "1");
        let problems = doc.parse().expect_err("an unknown key is refused");
        let problem = problems
            .iter()
            .find(|p| p.contains("unknown field `zz_unknown`"))
            .unwrap_or_else(|| panic!("no unknown-field problem for {path}:\n{problems:#?}"));
        expected_names(problem)
    };
    let compare = |what: &str, parser: BTreeSet<String>, reference: BTreeSet<String>| {
        let undocumented: Vec<_> = parser.difference(&reference).collect();
        let unknown: Vec<_> = reference.difference(&parser).collect();
        assert!(
            undocumented.is_empty() && unknown.is_empty(),
            "{what}: the parser accepts {undocumented:?}, which the reference does not list; \
             the reference lists {unknown:?}, which the parser does not accept"
        );
    };

    let roots: BTreeSet<String> = TABLES
        .iter()
        .map(|t| t.path.split('.').next().expect("a path").to_owned())
        .collect();
    compare("the top level", accepted(""), roots);
    for t in TABLES {
        let reference: BTreeSet<String> = t
            .keys
            .iter()
            .map(|k| k.name)
            .chain(t.unused.iter().map(|u| u.name))
            .map(str::to_owned)
            .collect();
        assert_eq!(
            reference.len(),
            t.keys.len() + t.unused.len(),
            "{}: a key is listed twice",
            t.path
        );
        compare(&format!("[{}]", t.path), accepted(t.path), reference);
    }

    // The tables nest as the keys say.
    for (path, t, key) in keys() {
        let nested = matches!(key.ty, Type::InlineTable | Type::Table);
        assert_eq!(
            nested,
            table(&path).is_some(),
            "{path}: a table-typed key has its own table in the reference, and only it"
        );
        if key.only != Only::Any {
            assert!(
                t.path.starts_with("route."),
                "{path}: only the keys of from, to and dead_letter belong to one kind of broker"
            );
        }
    }
}

#[test]
fn every_documented_default_is_the_relays() {
    for (path, _, key) in keys() {
        let doc = Doc::for_key(&path);
        match key.default {
            Default::Required => {
                doc.clone().omit(&path).refused(
                    key.name,
                    "",
                    &format!("{path} is documented as required"),
                );
            }
            Default::Value(value) => same(&doc, &path, value),
            Default::Env(var, Some(value)) => {
                if std::env::var_os(var).is_some() {
                    eprintln!("{var} is set: the default of {path} is not checked");
                } else {
                    same(&doc, &path, value);
                }
            }
            Default::Env(_, None) | Default::Unset(_) => {
                doc.parsed(&format!("{path} left out (documented as optional)"));
            }
            Default::Derived(_) => derived(&doc, &path),
        }
    }

    // The variables are the ones the relay reads, each named after its key.
    let documented: BTreeSet<&str> = keys()
        .into_iter()
        .filter_map(|(path, _, key)| match key.default {
            Default::Env(var, _) => {
                assert_eq!(
                    var,
                    format!("TRACEBRIDGE_{}", key.name.to_ascii_uppercase()),
                    "{path}"
                );
                Some(var)
            }
            _ => None,
        })
        .collect();
    use crate::semconv::{SEMCONV_VERSION_ENV, policy_env};
    let read: BTreeSet<&str> = [
        SEMCONV_VERSION_ENV,
        policy_env::MESSAGE_KEYS,
        policy_env::REQUEST_IDS,
        policy_env::CAPTURED_HEADERS,
        policy_env::CAPTURE_HEADERS,
        policy_env::HASH_KEY,
    ]
    .into();
    assert_eq!(documented, read);

    let store = key("route.correlation.store").expect("documented");
    assert!(
        store.about.contains(DEFAULT_REDIS_URL),
        "route.correlation.store: `redis` is {DEFAULT_REDIS_URL}"
    );
}

/// Leaving `path` out is the same as writing `value`.
fn same(doc: &Doc, path: &str, value: &str) {
    let left_out = doc.parsed(&format!("{path} left out"));
    let written = doc
        .clone()
        .set(path, value)
        .parsed(&format!("{path} = {value} (its documented default)"));
    if left_out != written {
        let differ: Vec<String> = left_out
            .lines()
            .zip(written.lines())
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("  left out: {}\n  written:  {}", a.trim(), b.trim()))
            .collect();
        panic!(
            "{path}: the reference says its default is {value}, but leaving it out differs from writing that:\n{}",
            differ.join("\n")
        );
    }
}

/// The defaults that follow from other keys, one check each.
fn derived(doc: &Doc, path: &str) {
    match path {
        "route.from.group" => {
            let Some(Default::Derived(text)) = key(path).map(|k| k.default) else {
                unreachable!()
            };
            let route = key("route.name").expect("documented").example;
            let group = text
                .trim_matches('`')
                .replace("<route name>", route.trim_matches('"'));
            same(doc, path, &group);
        }
        "route.correlation.fallback" => {
            // The context sets a key; without one, `root`.
            same(doc, path, r#""derive""#);
            let mut without_key = doc.clone();
            without_key
                .set
                .retain(|(p, _)| p != "route.correlation.key");
            same(&without_key, path, r#""root""#);
        }
        other => panic!("{other}: a derived default without a check here"),
    }
}

#[test]
fn a_key_of_one_kind_of_broker_is_refused_with_the_other_and_unused_keys_do_as_documented() {
    for t in TABLES {
        for key in t.keys.iter().filter(|k| k.only != Only::Any) {
            let other = match key.only {
                Only::Kafka => Only::Amqp,
                _ => Only::Kafka,
            };
            let path = format!("{}.{}", t.path, key.name);
            Doc::default()
                .kind(t.path, other)
                .set(&path, key.example)
                .refused(
                    key.name,
                    key.example,
                    &format!("{path} (documented {:?} only) with {other:?}", key.only),
                );
        }
        for unused in t.unused {
            let path = format!("{}.{}", t.path, unused.name);
            for (kind, effect) in [(Only::Kafka, unused.kafka), (Only::Amqp, unused.amqp)] {
                let without = Doc::default().kind(t.path, kind);
                let with = without.clone().set(&path, r#""x""#);
                let why = format!("{path} with {kind:?} (documented {effect:?})");
                match effect {
                    Effect::Refused => with.refused(unused.name, r#""x""#, &why),
                    Effect::Ignored => assert_eq!(
                        without.parsed(&why),
                        with.parsed(&why),
                        "{why}: it changes the configuration"
                    ),
                }
            }
        }
    }
}

const START: &str = "<!-- reference:start -->";
const END: &str = "<!-- reference:end -->";

#[test]
fn the_reference_document_is_the_rendered_reference() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/config-reference.md");
    let rendered = format!("{START}\n{}{END}", markdown());
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let current = text
        .split_once(START)
        .and_then(|(before, rest)| Some((before, rest.split_once(END)?)))
        .map(|(before, (_, after))| (before, after));
    let write =
        std::env::var("TRACEBRIDGE_WRITE_REFERENCE").is_ok_and(|v| !v.is_empty() && v != "0");
    if write {
        let new = match current {
            Some((before, after)) => format!("{before}{rendered}{after}"),
            None => format!("{text}{rendered}\n"),
        };
        std::fs::write(&file, new).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        return;
    }
    let regenerate = "edit src/relay/config/reference.rs, not the file, and rewrite it with \
         `TRACEBRIDGE_WRITE_REFERENCE=1 cargo test --lib relay::config::reference`";
    let Some((before, after)) = current else {
        panic!(
            "{} has no {START} … {END} block: {regenerate}",
            file.display()
        );
    };
    let expected = format!("{before}{rendered}{after}");
    if text != expected {
        let line = text
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| text.lines().count().min(expected.lines().count()));
        panic!(
            "{} differs from the reference from line {}:\n  file:     {:?}\n  rendered: {:?}\n{regenerate}",
            file.display(),
            line + 1,
            text.lines().nth(line).unwrap_or(""),
            expected.lines().nth(line).unwrap_or(""),
        );
    }
}

/// `bridge-config/relay.toml` marks defaults with `# default`: each is the
/// reference's.
#[test]
fn the_shipped_example_marks_the_reference_defaults() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("bridge-config/relay.toml");
    let text = std::fs::read_to_string(&file).expect("bridge-config/relay.toml");
    let mut table = String::new();
    let mut checked = 0;
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_matches(['[', ']']);
            table = match header.split_once('.') {
                Some((root @ ("kafka" | "amqp"), _)) => format!("{root}.<name>"),
                _ => header.to_owned(),
            };
            continue;
        }
        let Some((setting, comment)) = line.split_once('#') else {
            continue;
        };
        if line.starts_with('#') || !comment.trim_start().starts_with("default") {
            continue;
        }
        let (name, value) = setting.split_once('=').expect("key = value");
        let path = format!("{table}.{}", name.trim());
        let at = format!("{}:{}: {path}", file.display(), index + 1);
        let key = key(&path).unwrap_or_else(|| panic!("{at}: not in the reference"));
        let documented = match key.default {
            Default::Value(v) | Default::Env(_, Some(v)) => v,
            _ => panic!("{at}: marked default, but the reference gives it no value"),
        };
        assert_eq!(
            toml_value(value.trim()),
            toml_value(documented),
            "{at}: marked default, the reference's default is {documented}"
        );
        checked += 1;
    }
    assert!(checked > 0, "no `# default` marks in {}", file.display());
}
