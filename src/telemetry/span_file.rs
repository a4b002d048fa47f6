//! A span exporter that writes OTLP/JSON lines: one
//! `ExportTraceServiceRequest` per line, the format the OpenTelemetry
//! Collector's `file` exporter writes, so the same tools read both.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// Writes each exported batch as one OTLP/JSON line.
pub struct JsonLinesExporter {
    target: String,
    writer: Mutex<Box<dyn Write + Send>>,
    resource: ResourceAttributesWithSchema,
}

impl JsonLinesExporter {
    /// Appends to the file at `path`, creating it (and its directory).
    pub fn to_file(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self::new(
            path.display().to_string(),
            Box::new(BufWriter::new(file)),
        ))
    }

    /// Writes to standard output (`OTEL_TRACES_EXPORTER=console`).
    pub fn to_stdout() -> Self {
        Self::new("stdout".into(), Box::new(io::stdout()))
    }

    fn new(target: String, writer: Box<dyn Write + Send>) -> Self {
        Self {
            target,
            writer: Mutex::new(writer),
            resource: ResourceAttributesWithSchema::default(),
        }
    }

    /// The path (or `stdout`) spans are written to.
    pub fn target(&self) -> &str {
        &self.target
    }

    fn write_batch(&self, batch: Vec<SpanData>) -> Result<(), String> {
        if batch.is_empty() {
            return Ok(());
        }
        let request = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &self.resource),
        };
        let mut line = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let mut writer = self
            .writer
            .lock()
            .map_err(|_| "span file writer lock poisoned".to_owned())?;
        writer
            .write_all(&line)
            .and_then(|()| writer.flush())
            .map_err(|e| format!("writing spans to {}: {e}", self.target))
    }
}

impl fmt::Debug for JsonLinesExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLinesExporter")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl SpanExporter for JsonLinesExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.write_batch(batch)
            .map_err(OTelSdkError::InternalFailure)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.into();
    }
}

/// The default span file, relative to the working directory.
pub const DEFAULT_SPANS_FILE: &str = "tracebridge-spans.jsonl";

/// `TRACEBRIDGE_SPANS_FILE`, or [`DEFAULT_SPANS_FILE`].
pub(crate) fn spans_file_from(value: Option<String>) -> PathBuf {
    value
        .filter(|v| !v.trim().is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SPANS_FILE))
}
