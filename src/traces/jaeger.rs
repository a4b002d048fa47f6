//! Traces read back from Jaeger's query API (`GET /api/v3/traces/{id}`,
//! which answers OTLP/JSON), into the same [`Traces`] a span file gives: the
//! demo and the stack tests check Jaeger's copy with the code that checks
//! the file.

use std::time::Duration;

use super::{Options, Traces};

/// Why Jaeger's answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JaegerError {
    /// No answer at all.
    #[error(
        "Jaeger's query API at {url} does not answer ({source}); is Jaeger running (scripts/stack.sh up), and is TRACEBRIDGE_JAEGER_URL right?"
    )]
    Unreachable {
        /// The URL asked.
        url: String,
        /// The client's error.
        source: reqwest::Error,
    },
    /// An answer other than a trace or "not found".
    #[error("Jaeger's query API answered {status} to {url}: {body}")]
    Status {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// A 200 whose body is not `{"result": {"resourceSpans": …}}`.
    #[error("Jaeger's answer to {url} is not an OTLP/JSON trace: {why}")]
    Malformed {
        /// The URL asked.
        url: String,
        /// What is wrong with it.
        why: String,
    },
}

/// A client of one Jaeger query service.
#[derive(Debug, Clone)]
pub struct JaegerQuery {
    base: String,
    client: reqwest::Client,
}

impl JaegerQuery {
    /// The query service at `base_url` (e.g. `http://localhost:16686`).
    pub fn new(base_url: &str) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            base: base_url.trim_end_matches('/').to_owned(),
            client,
        }
    }

    /// One trace as an OTLP/JSON line (an `ExportTraceServiceRequest`), or
    /// `None` when Jaeger holds no span of it.
    pub async fn trace_line(&self, trace_id: &str) -> Result<Option<String>, JaegerError> {
        let url = format!("{}/api/v3/traces/{trace_id}", self.base);
        let unreachable = |source| JaegerError::Unreachable {
            url: url.clone(),
            source,
        };
        let response = self.client.get(&url).send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(unreachable)?;
        match status {
            200 => otlp_line(&body)
                .map(Some)
                .map_err(|why| JaegerError::Malformed { url, why }),
            404 => Ok(None),
            _ => Err(JaegerError::Status {
                url,
                status,
                body: body.chars().take(300).collect(),
            }),
        }
    }

    /// The traces Jaeger holds among `trace_ids`, read as a span file
    /// holding them would be.
    pub async fn traces(&self, trace_ids: &[String]) -> Result<Traces, JaegerError> {
        let mut lines = String::new();
        for trace_id in trace_ids {
            if let Some(line) = self.trace_line(trace_id).await? {
                lines.push_str(&line);
                lines.push('\n');
            }
        }
        // Reading from memory cannot fail.
        Ok(Traces::read(lines.as_bytes(), &Options::default()).unwrap_or_default())
    }
}

/// The `result` of an API v3 answer, as one line.
fn otlp_line(body: &str) -> Result<String, String> {
    let answer: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let result = answer
        .get("result")
        .filter(|r| r.get("resourceSpans").is_some())
        .ok_or("no result.resourceSpans")?;
    Ok(result.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_v3_answer_reads_as_a_span_file_line() {
        let body = r#"{"result":{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},"scopeSpans":[{"spans":[{"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"00f067aa0ba902b7","name":"send orders","kind":4,"startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}}"#;
        let line = otlp_line(body).expect("a trace");
        let traces = Traces::read(line.as_bytes(), &Options::default()).expect("read");
        let spans = traces.selected(&Options::default());
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0][0].name, "send orders");
        assert_eq!(spans[0][0].service, "checkout");
    }

    #[test]
    fn other_answers_are_errors_that_say_what_came() {
        assert_eq!(
            otlp_line(r#"{"error":{"httpCode":500}}"#),
            Err("no result.resourceSpans".into())
        );
        assert!(otlp_line("<html>").unwrap_err().starts_with("not JSON"));
    }
}
