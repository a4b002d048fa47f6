//! `tracebridge traces` on a fixture span file holding a broker hop, a span
//! whose parent is missing, an error, the collector's enum spellings, and
//! malformed lines; and on one holding links (a batch poll with its
//! producers, a link-mode hop with its origin, a correlation link, a link
//! to a span not in the file), drawn trace by trace and as journeys. The
//! whole output is asserted.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tracebridge");
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/traces.jsonl");
const LINKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/links.jsonl");

fn traces(args: &[&str]) -> (bool, String, String) {
    traces_of(FIXTURE, args)
}

fn traces_of(file: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("traces")
        .arg(file)
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const ALL: &str = "\
trace 4bf92f3577b34da6a3ce929d0e0e4736  checkout → tracebridge → fulfillment  5 span(s), 260.0 ms, 192.0 ms waiting in brokers (73 %), 1 error(s)
  checkout  send orders  PRODUCER                     2.0 ms  |█                             |  
    ⋯ waited 180.0 ms in orders
    tracebridge  process orders  CONSUMER             8.0 ms  |                     █        |  
      tracebridge  publish fulfillment  PRODUCER      3.0 ms  |                     █        |  
        ⋯ waited 12.0 ms in fulfillment
        fulfillment  process fulfillment  CONSUMER   60.0 ms  |                       ███████|  ERROR payment declined
          fulfillment  reserve stock  INTERNAL       25.0 ms  |                       ███    |  

trace 0af7651916cd43dd8448eb211c80319c  tracebridge  1 span(s), 4.0 ms
  tracebridge  process billing  CONSUMER  (parent not in file)    4.0 ms  |██████████████████████████████|  

2 trace(s), 6 span(s); 2 bad line(s) skipped (first: line 2: not JSON: expected ident at line 1 column 2)
";

#[test]
fn draws_every_trace_with_hops_orphans_errors_and_counts_bad_lines() {
    let (ok, stdout, stderr) = traces(&[]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, ALL, "\n--- got ---\n{stdout}");
    assert!(
        !stdout.contains('\x1b'),
        "no colours when stdout is not a terminal"
    );
}

#[test]
fn filters_select_traces() {
    let (_, errors, _) = traces(&["--errors"]);
    assert!(
        errors.contains("trace 4bf92f35") && !errors.contains("trace 0af76519"),
        "{errors}"
    );
    let (_, billing, _) = traces(&["--trace-id", "0AF7651916CD43DD8448EB211C80319C"]);
    assert!(
        billing.starts_with("trace 0af7651916cd43dd8448eb211c80319c"),
        "{billing}"
    );
    assert!(billing.contains("1 trace(s), 1 span(s)"), "{billing}");
    let (_, by_service, _) = traces(&["--service", "checkout"]);
    assert!(by_service.contains("1 trace(s), 5 span(s)"), "{by_service}");
    let (_, limited, _) = traces(&["--limit", "1"]);
    assert!(
        limited.contains("trace 4bf92f35") && limited.contains("1 trace(s)"),
        "{limited}"
    );
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let out = Command::new(BIN)
        .args(["traces", "/nonexistent/spans.jsonl"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot open span file /nonexistent/spans.jsonl"),
        "{stderr}"
    );
}

/// Both ends of every link: where it points (with the target's service,
/// name and kind, or "not in file"), and who links to a span; the wait in
/// the broker measured across a link.
const LINKED: &str = "\
trace aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa  checkout  1 span(s), 2.0 ms
  checkout  send orders  PRODUCER                   2.0 ms  |██████████████████████████████|  
    ↙ linked from trace cccccccccccccccccccccccccccccccc span 3333333333333333: fulfillment  poll orders  CLIENT

trace bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb  checkout  1 span(s), 2.0 ms
  checkout  send orders  PRODUCER                   2.0 ms  |██████████████████████████████|  
    ↙ linked from trace cccccccccccccccccccccccccccccccc span 3333333333333333: fulfillment  poll orders  CLIENT

trace cccccccccccccccccccccccccccccccc  fulfillment  2 span(s), 20.0 ms
  fulfillment  poll orders  CLIENT                  5.0 ms  |███████                       |  
    ↗ links to trace aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa span 1111111111111111: checkout  send orders  PRODUCER; waited 38.0 ms in orders
    ↗ links to trace bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb span 2222222222222222: checkout  send orders  PRODUCER; waited 28.0 ms in orders
    fulfillment  process orders  CONSUMER          14.0 ms  |         █████████████████████|  

trace dddddddddddddddddddddddddddddddd  checkout  1 span(s), 3.0 ms
  checkout  send payments  PRODUCER                 3.0 ms  |██████████████████████████████|  
    ↙ linked from trace eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee span 6666666666666666: tracebridge  process payments  CONSUMER

trace eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee  tracebridge  2 span(s), 8.0 ms
  tracebridge  process payments  CONSUMER           8.0 ms  |██████████████████████████████|  
    ↗ links to trace dddddddddddddddddddddddddddddddd span 5555555555555555: checkout  send payments  PRODUCER; waited 47.0 ms in payments
    tracebridge  publish ledger  PRODUCER           3.0 ms  |       ███████████            |  

trace ffffffffffffffffffffffffffffffff  checkout  1 span(s), 30.0 ms
  checkout  POST /orders  SERVER                   30.0 ms  |██████████████████████████████|  
    ↙ linked from trace 00000000000000000000000000000000 span 9999999999999999: tracebridge  process billing  CONSUMER

trace 00000000000000000000000000000000  tracebridge  1 span(s), 2.0 ms, 1 error(s)
  tracebridge  process billing  CONSUMER            2.0 ms  |██████████████████████████████|  ERROR no invoice
    ↗ links to trace ffffffffffffffffffffffffffffffff span 8888888888888888: checkout  POST /orders  SERVER
    ↗ links to trace 11111111111111111111111111111111 span 9999999999999999: not in file

7 trace(s), 9 span(s)
";

#[test]
fn draws_both_ends_of_every_link() {
    let (ok, stdout, stderr) = traces_of(LINKS, &[]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, LINKED, "\n--- got ---\n{stdout}");
}

/// The traces links join, drawn together: a batch poll with the two sends
/// it read, a link-mode hop with its origin, a correlated message with its
/// request; each journey's broker time counts waits across links.
const JOURNEYS: &str = "\
journey  3 traces joined by 2 link(s)  checkout → fulfillment  4 span(s), 60.0 ms, 38.0 ms waiting in brokers (63 %)
│ trace aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa  checkout  1 span(s), 2.0 ms
│   checkout  send orders  PRODUCER                   2.0 ms  |██████████████████████████████|  
│     ↙ linked from trace cccccccccccccccccccccccccccccccc span 3333333333333333: fulfillment  poll orders  CLIENT
│
│ trace bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb  checkout  1 span(s), 2.0 ms
│   checkout  send orders  PRODUCER                   2.0 ms  |██████████████████████████████|  
│     ↙ linked from trace cccccccccccccccccccccccccccccccc span 3333333333333333: fulfillment  poll orders  CLIENT
│
│ trace cccccccccccccccccccccccccccccccc  fulfillment  2 span(s), 20.0 ms
│   fulfillment  poll orders  CLIENT                  5.0 ms  |███████                       |  
│     ↗ links to trace aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa span 1111111111111111: checkout  send orders  PRODUCER; waited 38.0 ms in orders
│     ↗ links to trace bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb span 2222222222222222: checkout  send orders  PRODUCER; waited 28.0 ms in orders
│     fulfillment  process orders  CONSUMER          14.0 ms  |         █████████████████████|  
│

journey  2 traces joined by 1 link(s)  checkout → tracebridge  3 span(s), 58.0 ms, 47.0 ms waiting in brokers (81 %)
│ trace dddddddddddddddddddddddddddddddd  checkout  1 span(s), 3.0 ms
│   checkout  send payments  PRODUCER                 3.0 ms  |██████████████████████████████|  
│     ↙ linked from trace eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee span 6666666666666666: tracebridge  process payments  CONSUMER
│
│ trace eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee  tracebridge  2 span(s), 8.0 ms
│   tracebridge  process payments  CONSUMER           8.0 ms  |██████████████████████████████|  
│     ↗ links to trace dddddddddddddddddddddddddddddddd span 5555555555555555: checkout  send payments  PRODUCER; waited 47.0 ms in payments
│     tracebridge  publish ledger  PRODUCER           3.0 ms  |       ███████████            |  
│

journey  2 traces joined by 1 link(s)  checkout → tracebridge  2 span(s), 62.0 ms, 1 error(s)
│ trace ffffffffffffffffffffffffffffffff  checkout  1 span(s), 30.0 ms
│   checkout  POST /orders  SERVER                   30.0 ms  |██████████████████████████████|  
│     ↙ linked from trace 00000000000000000000000000000000 span 9999999999999999: tracebridge  process billing  CONSUMER
│
│ trace 00000000000000000000000000000000  tracebridge  1 span(s), 2.0 ms, 1 error(s)
│   tracebridge  process billing  CONSUMER            2.0 ms  |██████████████████████████████|  ERROR no invoice
│     ↗ links to trace ffffffffffffffffffffffffffffffff span 8888888888888888: checkout  POST /orders  SERVER
│     ↗ links to trace 11111111111111111111111111111111 span 9999999999999999: not in file
│

7 trace(s), 9 span(s) in 3 journey(s)
";

#[test]
fn draws_linked_traces_as_journeys() {
    let (ok, stdout, stderr) = traces_of(LINKS, &["--journeys"]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, JOURNEYS, "\n--- got ---\n{stdout}");
}

#[test]
fn a_selected_trace_brings_its_journey_from_either_end() {
    for end in [
        "dddddddddddddddddddddddddddddddd",
        "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
    ] {
        let (ok, stdout, stderr) = traces_of(LINKS, &["--journeys", "--trace-id", end]);
        assert!(ok, "{stderr}");
        assert!(
            stdout.starts_with("journey  2 traces joined by 1 link(s)  checkout → tracebridge")
                && stdout.contains("│ trace dddddddddddddddddddddddddddddddd")
                && stdout.contains("│ trace eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee")
                && stdout.ends_with("2 trace(s), 3 span(s) in 1 journey(s)\n"),
            "{stdout}"
        );
    }
    // Without --journeys, the selection is the one trace alone.
    let (_, alone, _) = traces_of(LINKS, &["--trace-id", "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"]);
    assert!(alone.ends_with("1 trace(s), 2 span(s)\n"), "{alone}");
    assert!(
        alone.contains(
            "↗ links to trace dddddddddddddddddddddddddddddddd span 5555555555555555: \
             not read (--journeys reads linked traces)"
        ),
        "{alone}"
    );
}

/// A joined hop links the context it is the child of (the span model's
/// Join): the tree already shows that, so no link line repeats it; a link
/// to anything else is still drawn.
#[test]
fn a_link_to_the_spans_own_parent_is_not_repeated() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("joined.jsonl");
    let span = |id: &str, parent: &str, name: &str, kind: u8, links: &str| {
        format!(
            r#"{{"traceId":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","spanId":"{id}","parentSpanId":"{parent}","name":"{name}","kind":{kind},"startTimeUnixNano":"1000000","endTimeUnixNano":"2000000","links":[{links}]}}"#
        )
    };
    let link =
        |id: &str| format!(r#"{{"traceId":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","spanId":"{id}"}}"#);
    let spans = [
        span("1111111111111111", "", "send orders", 4, ""),
        span(
            "2222222222222222",
            "1111111111111111",
            "process orders",
            5,
            &link("1111111111111111"),
        ),
        span(
            "3333333333333333",
            "2222222222222222",
            "process more",
            5,
            &link("1111111111111111"),
        ),
    ]
    .join(",");
    std::fs::write(
        &file,
        format!(
            r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"svc"}}}}]}},"scopeSpans":[{{"spans":[{spans}]}}]}}]}}"#
        ) + "\n",
    )
    .expect("fixture");
    let (ok, stdout, stderr) = traces_of(file.to_str().expect("path"), &[]);
    assert!(ok, "{stderr}");
    let link_lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("links to") || l.contains("linked from"))
        .collect();
    assert_eq!(
        link_lines.len(),
        2,
        "only the grandchild's link (and its other end) is drawn:\n{stdout}"
    );
    assert!(
        link_lines
            .iter()
            .all(|l| l.contains("1111111111111111") || l.contains("3333333333333333")),
        "{stdout}"
    );
}

/// One OTLP/JSON line holding `spans` ((span id, parent id, name)) of
/// trace `aaaa…`, service `svc`.
fn line_of(spans: &[(String, String, String)]) -> String {
    let spans: Vec<String> = spans
        .iter()
        .enumerate()
        .map(|(i, (id, parent, name))| {
            format!(
                r#"{{"traceId":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","spanId":"{id}","parentSpanId":"{parent}","name":"{name}","kind":1,"startTimeUnixNano":"{}","endTimeUnixNano":"{}"}}"#,
                1_000 + i,
                2_000 + i
            )
        })
        .collect();
    format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"svc"}}}}]}},"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
        spans.join(",")
    )
}

fn id(n: usize) -> String {
    format!("{n:016x}")
}

/// Runs `traces` on `content`, within 60 s, and returns its output.
fn traces_on(content: &[u8]) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("hostile.jsonl");
    std::fs::write(&file, content).expect("write");
    let started = std::time::Instant::now();
    let out = traces_of(file.to_str().expect("a UTF-8 path"), &[]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    out
}

#[test]
fn cycles_and_repeated_span_ids_are_drawn_once_and_reported() {
    // a → b → a (b's parent a, a's parent b, through a repeated id), and c
    // under a: no root at all, every span in or under the cycle.
    let line = line_of(&[
        (id(1), id(2), "a".into()),
        (id(2), id(1), "b".into()),
        (id(3), id(1), "c".into()),
        (id(2), id(3), "b-again".into()),
    ]);
    let (ok, stdout, stderr) = traces_on(line.as_bytes());
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(
            "this trace is malformed: 4 span(s) in a cycle of parents, 1 repeated span id(s)"
        ),
        "{stdout}"
    );
    for name in ["a", "b", "c", "b-again"] {
        assert_eq!(
            stdout.matches(&format!("svc  {name}  INTERNAL")).count(),
            1,
            "{name} drawn once:\n{stdout}"
        );
    }
    assert!(stdout.contains("(in a cycle of parents)"), "{stdout}");
}

#[test]
fn a_40_000_deep_chain_of_parents_is_drawn_with_a_capped_indent() {
    const DEPTH: usize = 40_000;
    let chain: Vec<(String, String, String)> = (0..DEPTH)
        .map(|i| {
            let parent = if i == 0 { String::new() } else { id(i) };
            (id(i + 1), parent, format!("s{i}"))
        })
        .collect();
    let (ok, stdout, stderr) = traces_on(line_of(&chain).as_bytes());
    assert!(ok, "{stderr}");
    assert!(
        stdout.ends_with("1 trace(s), 40000 span(s)\n"),
        "{}",
        &stdout[stdout.len().saturating_sub(300)..]
    );
    assert!(stdout.contains("[depth 39999] svc  s39999  INTERNAL"));
    let widest = stdout.lines().map(str::len).max().unwrap_or(0);
    assert!(widest < 400, "the widest line has {widest} bytes");
    assert!(
        stdout.len() < 20 * 1024 * 1024,
        "{} bytes of output",
        stdout.len()
    );
}

#[test]
fn lines_that_are_not_utf8_are_skipped_and_counted() {
    let good = line_of(&[(id(1), String::new(), "root".into())]);
    let mut content = b"\xff\xfe not text\n".to_vec();
    content.extend(good.as_bytes());
    content.extend(b"\n{\"half\n");
    let (ok, stdout, stderr) = traces_on(&content);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("svc  root  INTERNAL"), "{stdout}");
    assert!(
        stdout.ends_with(
            "1 trace(s), 1 span(s); 2 bad line(s) skipped (first: line 1: not UTF-8: invalid utf-8 sequence of 1 bytes from index 0)\n"
        ),
        "{stdout}"
    );
}
