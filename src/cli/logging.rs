//! The process log on stderr: LiteFS's `log.format` (`text` or `json`), `log.timestamp` and
//! `log.debug`. `LTXD_LOG` (an `EnvFilter` directive such as `ltxd=debug`) overrides the level.
//! Text has ANSI colour only when stderr is a terminal; JSON is one object per line.

use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use ltxd::config::{LogConfig, LogFormat};

/// Installs the process-wide logger. Call once, before anything logs.
pub fn init(config: &LogConfig) {
    let level = if config.debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_env("LTXD_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    // `ltxd mount` unmounts itself (retrying, then detaching); fuser then finds the mount gone
    // and warns "Unmount failed". Its own mount messages duplicate ltxd's.
    let filter = match "fuser::mnt=error".parse() {
        Ok(quiet) => filter.add_directive(quiet),
        Err(_) => filter,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match (config.format, config.timestamp) {
        (LogFormat::Json, timestamp) => builder.event_format(JsonLines { timestamp }).init(),
        (LogFormat::Text, true) => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        (LogFormat::Text, false) => builder
            .with_ansi(std::io::stderr().is_terminal())
            .without_time()
            .init(),
    }
}

/// The settings of commands other than `ltxd mount`: text with timestamps, as a terminal user
/// expects.
pub fn default_config() -> LogConfig {
    LogConfig {
        timestamp: true,
        ..LogConfig::default()
    }
}

/// One JSON object per event: `time` (RFC 3339, UTC, when `log.timestamp` is on), `level`,
/// `target`, `msg`, each field, and the fields of the enclosing spans (inner spans win).
struct JsonLines {
    timestamp: bool,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut object = serde_json::Map::new();
        if self.timestamp {
            object.insert("time".into(), rfc3339_now().into());
        }
        let meta = event.metadata();
        object.insert("level".into(), meta.level().as_str().into());
        object.insert("target".into(), meta.target().into());
        if let Some(scope) = ctx.event_scope() {
            let mut spans = Vec::new();
            for span in scope.from_root() {
                spans.push(span.name());
                if let Some(fields) = span
                    .extensions()
                    .get::<tracing_subscriber::fmt::FormattedFields<N>>()
                {
                    object.insert(
                        format!("span.{}", span.name()),
                        fields.fields.clone().into(),
                    );
                }
            }
            object.insert("spans".into(), spans.into());
        }
        event.record(&mut JsonVisitor(&mut object));
        let line = serde_json::Value::Object(object).to_string();
        writeln!(writer, "{line}")
    }
}

/// Collects an event's fields into a JSON object; `message` becomes `msg`.
struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl JsonVisitor<'_> {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        let name = match field.name() {
            "message" => "msg",
            name => name,
        };
        self.0.insert(name.to_string(), value);
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
}

/// Now in RFC 3339, UTC.
fn rfc3339_now() -> String {
    let mut out = String::new();
    let _ = tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut out));
    out
}
