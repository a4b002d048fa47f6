//! `tracebridge traces` on a fixture span file holding a broker hop, a span
//! whose parent is missing, an error, the collector's enum spellings, and
//! malformed lines: the whole output is asserted.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tracebridge");
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/traces.jsonl");

fn traces(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("traces")
        .arg(FIXTURE)
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
trace 4bf92f3577b34da6a3ce929d0e0e4736  checkout → tracebridge → fulfillment  5 span(s), 260.0 ms, 1 error(s)
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
