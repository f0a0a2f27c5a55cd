//! What `images pull` and `images push` share: ctr's registry flags (`--plain-http`, `--user`,
//! `--tlscacert`, `--skip-verify`), the progress display (one indicatif bar per blob, drawn only
//! when stdout is a terminal, as ctr's `content.Display`), and the mapping of transfer errors to
//! the CLI's one-line messages.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context as _, Result};
use berth_transfer::types::ingest_ref;
use berth_transfer::{Descriptor, Platform, Progress, RegistryOptions, TransferError};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Registry connection flags of `images pull` and `images push` (ctr's `RegistryFlags`).
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryFlags {
    /// Use plain HTTP instead of HTTPS to talk to the registry.
    #[arg(long)]
    pub plain_http: bool,
    /// User[:password] for the registry (basic auth or token service).
    #[arg(short = 'u', long, value_name = "USER[:PASSWORD]")]
    pub user: Option<String>,
    /// PEM file of a CA to trust besides the system roots.
    #[arg(long, value_name = "FILE")]
    pub tlscacert: Option<PathBuf>,
    /// Skip verifying the registry's TLS certificate.
    #[arg(short = 'k', long)]
    pub skip_verify: bool,
}

impl RegistryFlags {
    /// The transfer library's options for these flags, with `concurrency` parallel blobs
    /// (0: the library default).
    pub fn options(&self, concurrency: usize) -> Result<RegistryOptions> {
        let ca_pem = match &self.tlscacert {
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("cannot read --tlscacert {}", path.display()))?,
            ),
            None => None,
        };
        let options = RegistryOptions {
            credentials: None,
            plain_http: self.plain_http,
            ca_pem,
            skip_verify: self.skip_verify,
            concurrency,
            ..RegistryOptions::default()
        };
        Ok(match &self.user {
            Some(user) => options.with_user(user),
            None => options,
        })
    }
}

/// `--platform` as the transfer library's platform; `None` when not given.
pub fn platform_flag(arg: Option<&str>) -> Result<Option<Platform>> {
    match arg {
        None | Some("") => Ok(None),
        Some(text) => Platform::parse(text)
            .map(Some)
            .with_context(|| format!("invalid platform {text:?}")),
    }
}

/// A transfer error as one line: the library's messages already name the registry, reference
/// or digest concerned (and say `check --user` for refused credentials), so they are used as
/// they are, without repeating the store error a `Store` variant carries as its source.
pub fn transfer_error(err: TransferError) -> anyhow::Error {
    anyhow::Error::msg(err.to_string())
}

/// Whether progress bars are drawn: only on a terminal, as ctr does.
pub fn interactive() -> bool {
    std::io::stdout().is_terminal()
}

/// Progress bars per blob, keyed by digest (ctr's `content.Display`).
pub struct Bars {
    multi: MultiProgress,
    style: ProgressStyle,
    bars: Mutex<HashMap<String, ProgressBar>>,
    show: bool,
    verb: &'static str,
}

impl std::fmt::Debug for Bars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bars")
            .field("show", &self.show)
            .field("verb", &self.verb)
            .finish_non_exhaustive()
    }
}

/// `layer-sha256:0123456789ab`: the ingest ref with a short digest.
fn label(desc: &Descriptor) -> String {
    let full = ingest_ref(desc);
    match full.find("sha256:") {
        Some(i) if full.len() > i + 7 + 12 => full[..i + 7 + 12].to_owned(),
        _ => full,
    }
}

impl Bars {
    /// Bars drawn on stdout when `show`, else nothing is drawn; `verb` (`downloading`,
    /// `uploading`) is the message of a bar in progress.
    pub fn new(show: bool, verb: &'static str) -> Self {
        let target = if show {
            ProgressDrawTarget::stdout_with_hz(10)
        } else {
            ProgressDrawTarget::hidden()
        };
        let style = ProgressStyle::with_template(
            "{prefix:<27} [{bar:30}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} {elapsed:>4} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        Self {
            multi: MultiProgress::with_draw_target(target),
            style,
            bars: Mutex::new(HashMap::new()),
            show,
            verb,
        }
    }

    fn bar(&self, desc: &Descriptor) -> ProgressBar {
        let mut bars = match self.bars.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        bars.entry(desc.digest.clone())
            .or_insert_with(|| {
                let bar = ProgressBar::new(desc.size)
                    .with_style(self.style.clone())
                    .with_prefix(label(desc))
                    .with_message("waiting");
                let bar = self.multi.add(bar);
                if self.show {
                    bar.enable_steady_tick(Duration::from_millis(250));
                }
                bar
            })
            .clone()
    }

    /// A line above the bars (or nothing when they are hidden).
    pub fn line(&self, text: &str) {
        if self.show {
            let _ = self.multi.println(text);
        }
    }

    /// Stops drawing, leaving the finished bars on screen.
    pub fn finish(&self) {
        let bars = match self.bars.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        for bar in bars.values() {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }
}

impl Progress for Bars {
    fn on_start(&self, desc: &Descriptor) {
        let bar = self.bar(desc);
        bar.set_message(self.verb);
    }

    fn on_bytes(&self, desc: &Descriptor, n: u64) {
        self.bar(desc).inc(n);
    }

    fn on_done(&self, desc: &Descriptor) {
        let bar = self.bar(desc);
        bar.set_position(desc.size);
        bar.finish_with_message("done");
    }

    fn on_exists(&self, desc: &Descriptor) {
        let bar = self.bar(desc);
        bar.set_position(desc.size);
        bar.finish_with_message("exists");
    }

    fn on_unpacked(&self, desc: &Descriptor) {
        self.line(&format!("unpacked {}", label(desc)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_shorten_the_digest() {
        let d = Descriptor::new(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            &format!("sha256:{}", "ab".repeat(32)),
            10,
        );
        assert_eq!(label(&d), "layer-sha256:abababababab");
    }

    #[test]
    fn hidden_bars_count_without_drawing() {
        let bars = Bars::new(false, "downloading");
        let d = Descriptor::new("application/octet-stream", "sha256:00", 10);
        bars.on_start(&d);
        bars.on_bytes(&d, 4);
        assert_eq!(bars.bar(&d).position(), 4);
        bars.on_done(&d);
        assert!(bars.bar(&d).is_finished());
        bars.finish();
    }

    #[test]
    fn registry_flags_build_options() {
        let flags = RegistryFlags {
            plain_http: true,
            user: Some("u:p".into()),
            tlscacert: None,
            skip_verify: true,
        };
        let o = flags.options(2).unwrap();
        assert!(o.plain_http && o.skip_verify);
        assert_eq!(o.credentials, Some(("u".into(), "p".into())));
        assert_eq!(o.concurrency, 2);
        let missing = RegistryFlags {
            tlscacert: Some("/nonexistent/ca.pem".into()),
            ..flags
        };
        assert!(missing.options(0).is_err());
    }
}
