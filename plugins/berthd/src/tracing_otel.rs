//! OpenTelemetry trace export, off unless configured, with containerd 1.6's plugins and keys:
//!
//! ```toml
//! [plugins."io.containerd.tracing.processor.v1.otlp"]
//!   endpoint = "http://collector:4318"   # empty (the default): no exporter
//!   protocol = "http/protobuf"           # or "grpc" (endpoint host:port)
//!   insecure = false                     # grpc only: plain HTTP/2 instead of TLS
//! [plugins."io.containerd.internal.v1.tracing"]
//!   sampling_ratio = 1.0
//!   service_name = "containerd"
//! ```
//!
//! The exporter must be in the tracing subscriber, which is installed before the plugins load,
//! so [`Exporter::from_config`] reads these sections itself when berthd starts. The two plugins
//! ([`register`]) report the outcome as containerd lists it: the processor is skipped with "no
//! OpenTelemetry endpoint" when none is configured, fails with the reason when the section is
//! wrong (berthd then runs without export, as containerd does), and the tracing plugin is ok.
//!
//! Export runs off the daemon's runtime: the SDK's batch processor has its own thread; the
//! http/protobuf exporter posts with a blocking client from it, and the grpc exporter's tonic
//! channel lives on a one-thread runtime of its own. Spans are those of [`berth_services::rpc_span`]
//! and everything below them; their names are the RPCs' (`package.Service/Method`).

use std::sync::Arc;
use std::time::Duration;

use berth_registry::{types, Config, PluginError, Registration, Registry, RegistryError};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use serde::{Deserialize, Serialize};

/// containerd's plugin type of span processors.
pub const PROCESSOR_TYPE: &str = "io.containerd.tracing.processor.v1";
/// The OTLP processor's id.
const OTLP_ID: &str = "otlp";
/// The tracing plugin's id (type `io.containerd.internal.v1`).
const TRACING_ID: &str = "tracing";
/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// `[plugins."io.containerd.tracing.processor.v1.otlp"]`: containerd's `OTLPConfig`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// The collector: a URL for http/protobuf, `host:port` for grpc; empty: no export.
    pub endpoint: String,
    /// `http/protobuf` (also when empty) or `grpc`.
    pub protocol: String,
    /// grpc only: plain HTTP/2, no TLS.
    pub insecure: bool,
}

/// `[plugins."io.containerd.internal.v1.tracing"]`: containerd's `TraceConfig`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceConfig {
    /// The `service.name` resource attribute of every span.
    pub service_name: String,
    /// The share of traces kept, by trace id (containerd's `TraceIDRatioBased`).
    pub sampling_ratio: f64,
}

impl Default for TraceConfig {
    fn default() -> Self {
        // containerd's defaults, so that dashboards made for it find berthd's spans.
        TraceConfig {
            service_name: "containerd".into(),
            sampling_ratio: 1.0,
        }
    }
}

/// Why the exporter cannot run with the configuration given.
#[derive(Debug, thiserror::Error)]
pub enum OtelConfigError {
    /// A section did not decode.
    #[error("[plugins.\"{uri}\"]: {message}")]
    Section {
        /// The plugin URI of the section.
        uri: String,
        /// The decoder's message, naming the key.
        message: String,
    },
    /// `protocol` is neither `http/protobuf` nor `grpc`.
    #[error("OpenTelemetry protocol {0:?} is not supported (\"http/protobuf\" or \"grpc\")")]
    Protocol(String),
    /// The endpoint is not a URL berthd can post to.
    #[error("OpenTelemetry endpoint {endpoint:?} is invalid: {reason}")]
    Endpoint {
        /// The configured endpoint.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// grpc with TLS, which this build's exporter cannot do.
    #[error(
        "OpenTelemetry endpoint {0:?}: grpc export without `insecure = true` needs TLS, which \
         berthd's grpc exporter does not have; set insecure = true, or use protocol = \
         \"http/protobuf\" with an https:// endpoint"
    )]
    GrpcTls(String),
    /// The exporter or its runtime could not be built.
    #[error("OpenTelemetry exporter: {0}")]
    Build(String),
}

/// How spans leave berthd.
#[derive(Debug, Clone, PartialEq)]
enum Transport {
    /// POST to this full URL (`.../v1/traces`).
    Http(String),
    /// OTLP/gRPC to this URI.
    Grpc(String),
}

/// The plugin sections as decoded, and where the spans go (`None`: no endpoint).
fn settings(config: &Config) -> Result<(Option<Transport>, TraceConfig), OtelConfigError> {
    let otlp: OtlpConfig = section(config, PROCESSOR_TYPE, OTLP_ID)?;
    let tracing: TraceConfig = section(config, types::INTERNAL, TRACING_ID)?;
    Ok((transport(&otlp)?, tracing))
}

fn section<C: serde::de::DeserializeOwned + Default>(
    config: &Config,
    plugin_type: &str,
    id: &str,
) -> Result<C, OtelConfigError> {
    let uri = format!("{plugin_type}.{id}");
    match config.plugins.get(&uri) {
        None => Ok(C::default()),
        Some(value) => {
            value
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| OtelConfigError::Section {
                    uri,
                    message: e.message().trim().to_owned(),
                })
        }
    }
}

/// Where an [`OtlpConfig`] sends spans, as containerd's `newExporter` reads it.
fn transport(otlp: &OtlpConfig) -> Result<Option<Transport>, OtelConfigError> {
    let endpoint = otlp.endpoint.trim();
    if endpoint.is_empty() {
        return Ok(None);
    }
    let invalid = |reason: &str| OtelConfigError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    match otlp.protocol.as_str() {
        "" | "http/protobuf" => {
            // containerd keeps the scheme and host of the URL and posts to /v1/traces.
            let uri: http::Uri = endpoint
                .parse()
                .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
            let scheme = match uri.scheme_str() {
                Some(s @ ("http" | "https")) => s,
                _ => return Err(invalid("want http://host:port or https://host:port")),
            };
            let host = uri.authority().ok_or_else(|| invalid("no host"))?.as_str();
            Ok(Some(Transport::Http(format!(
                "{scheme}://{host}/v1/traces"
            ))))
        }
        "grpc" => {
            if !otlp.insecure {
                return Err(OtelConfigError::GrpcTls(endpoint.to_owned()));
            }
            // containerd takes host:port; a URL with http:// is accepted too.
            let target = if endpoint.contains("://") {
                endpoint.to_owned()
            } else {
                format!("http://{endpoint}")
            };
            let uri: http::Uri = target
                .parse()
                .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
            if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                return Err(invalid("want host:port"));
            }
            Ok(Some(Transport::Grpc(target)))
        }
        other => Err(OtelConfigError::Protocol(other.to_owned())),
    }
}

/// A running exporter: the tracer provider (its batch processor thread) and, for grpc, the
/// runtime its channel lives on. [`Exporter::shutdown`] sends what is still queued.
#[derive(Debug)]
pub struct Exporter {
    provider: SdkTracerProvider,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Exporter {
    /// The exporter `config` asks for; `Ok(None)` without an endpoint.
    pub fn from_config(config: &Config) -> Result<Option<Exporter>, OtelConfigError> {
        let (Some(transport), trace) = settings(config)? else {
            return Ok(None);
        };
        let build =
            |e: opentelemetry_otlp::ExporterBuildError| OtelConfigError::Build(e.to_string());
        let (exporter, runtime) = match transport {
            Transport::Http(url) => (
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(url)
                    .with_timeout(EXPORT_TIMEOUT)
                    .build()
                    .map_err(build)?,
                None,
            ),
            Transport::Grpc(uri) => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("berthd-otlp")
                    .enable_all()
                    .build()
                    .map_err(|e| OtelConfigError::Build(format!("start its runtime: {e}")))?;
                let exporter = {
                    // The channel's connection tasks are spawned on this runtime.
                    let _entered = runtime.enter();
                    opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .with_endpoint(uri)
                        .with_timeout(EXPORT_TIMEOUT)
                        .build()
                        .map_err(build)?
                };
                (exporter, Some(runtime))
            }
        };
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::TraceIdRatioBased(trace.sampling_ratio))
            .with_resource(
                Resource::builder()
                    .with_service_name(trace.service_name)
                    .build(),
            )
            .with_batch_exporter(exporter)
            .build();
        Ok(Some(Exporter { provider, runtime }))
    }

    /// The tracing layer feeding this exporter.
    pub fn layer<S>(
        &self,
    ) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("berthd"))
            .with_tracked_inactivity(false)
    }

    /// Sends the spans still queued and stops the exporter.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "OpenTelemetry exporter shutdown");
        }
        if let Some(runtime) = self.runtime {
            runtime.shutdown_timeout(Duration::from_millis(100));
        }
    }
}

/// Registers containerd's two tracing plugins, which report what [`Exporter::from_config`]
/// made of their sections.
pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry.register(
        Registration::new(PROCESSOR_TYPE, OTLP_ID)
            .config::<OtlpConfig>()
            .init(|ctx| {
                let otlp: OtlpConfig = ctx.config()?;
                // The instance is the section: the exporter was built from it at start.
                match transport(&otlp).map_err(PluginError::init)? {
                    None => Err(PluginError::Skip("no OpenTelemetry endpoint".into())),
                    Some(_) => Ok(Arc::new(otlp)),
                }
            }),
    )?;
    registry.register(
        Registration::new(types::INTERNAL, TRACING_ID)
            .requires(&[PROCESSOR_TYPE])
            .config::<TraceConfig>()
            .init(|ctx| {
                let config: TraceConfig = ctx.config()?;
                Ok(Arc::new(config))
            }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn otlp(endpoint: &str, protocol: &str, insecure: bool) -> OtlpConfig {
        OtlpConfig {
            endpoint: endpoint.into(),
            protocol: protocol.into(),
            insecure,
        }
    }

    #[test]
    fn endpoints_follow_containerd() {
        assert_eq!(transport(&otlp("", "grpc", false)).unwrap(), None);
        assert_eq!(
            transport(&otlp("http://collector:4318/ignored", "", false)).unwrap(),
            Some(Transport::Http("http://collector:4318/v1/traces".into()))
        );
        assert_eq!(
            transport(&otlp("127.0.0.1:4317", "grpc", true)).unwrap(),
            Some(Transport::Grpc("http://127.0.0.1:4317".into()))
        );
        let err = transport(&otlp("collector:4318", "http/protobuf", false)).unwrap_err();
        assert!(
            err.to_string().contains("\"collector:4318\" is invalid"),
            "{err}"
        );
        let err = transport(&otlp("x:1", "http/json", false)).unwrap_err();
        assert!(
            err.to_string().contains("\"http/json\" is not supported"),
            "{err}"
        );
        let err = transport(&otlp("x:1", "grpc", false)).unwrap_err();
        assert!(err.to_string().contains("insecure = true"), "{err}");
    }

    #[test]
    fn sections_are_read_with_their_defaults() {
        let config: Config = toml::from_str(
            "[plugins.\"io.containerd.internal.v1.tracing\"]\nsampling_ratio = 0.5\n",
        )
        .unwrap();
        let (transport, trace) = settings(&config).unwrap();
        assert_eq!(transport, None);
        assert_eq!(trace.sampling_ratio, 0.5);
        assert_eq!(trace.service_name, "containerd");
        let config: Config = toml::from_str(
            "[plugins.\"io.containerd.tracing.processor.v1.otlp\"]\nendpont = \"x\"\n",
        )
        .unwrap();
        let err = settings(&config).unwrap_err().to_string();
        assert!(err.contains("endpont"), "{err}");
    }
}
