//! `berth content edit DIGEST`: Content.Read of the blob into a temporary file, `sh -c "$EDITOR
//! <file>"` on the terminal, then Content.Write of the edited file under the ref
//! `edit-<DIGEST>`; prints the new digest (ctr `content edit`). The original blob is kept.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::client::content::{self, WriteSpec};
use crate::client::Client;
use crate::commands::label_flags;

/// Arguments of `content edit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Validate the result against a format (not supported, as in ctr).
    #[arg(long)]
    pub validate: Option<String>,
    /// The editor command (`vim`, `sed -i s/a/b/`, ...), run as `sh -c "<editor> <file>"`.
    #[arg(long, env = "EDITOR")]
    pub editor: Option<String>,
    /// Labels to commit the new blob with (KEY=VALUE, repeatable); berthd collects unreferenced
    /// content right after commit, so `containerd.io/gc.root=...` keeps the result.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Digest of the blob to edit.
    pub digest: String,
}

/// A temporary file removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    /// Creates `edit-<uuid>` (mode 0600) in `$XDG_RUNTIME_DIR`, else the temporary directory,
    /// as ctr does.
    fn create() -> Result<(Self, File)> {
        let dir = std::env::var_os("XDG_RUNTIME_DIR")
            .filter(|d| !d.is_empty())
            .map_or_else(std::env::temp_dir, PathBuf::from);
        let path = dir.join(format!("edit-{}", uuid::Uuid::new_v4()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok((Self(path), file))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // Best effort: a leftover in the temporary directory is harmless.
        let _ = fs::remove_file(&self.0);
    }
}

/// Runs `sh -c "<editor> <path>"` with the terminal as its stdio.
fn run_editor(editor: &str, path: &std::path::Path) -> Result<()> {
    let mut line = OsString::from(editor);
    line.push(" ");
    line.push(path);
    let status = Command::new("sh")
        .arg("-c")
        .arg(&line)
        .status()
        .with_context(|| format!("cannot run the editor {editor:?}"))?;
    if !status.success() {
        bail!("the editor {editor:?} failed: {status}");
    }
    Ok(())
}

/// Edits the blob and commits the result.
pub async fn run(client: &Client, args: Args) -> Result<()> {
    if args.validate.is_some() {
        bail!("validating the edit result not supported");
    }
    let Some(editor) = args.editor.filter(|e| !e.trim().is_empty()) else {
        bail!("editor is required: set $EDITOR or --editor");
    };
    content::info(client, &args.digest).await?;
    let (temp, file) = TempFile::create()?;
    let mut file = tokio::fs::File::from_std(file);
    content::read_to(client, &args.digest, &mut file).await?;
    drop(file);
    let path = temp.0.clone();
    let edited = tokio::task::spawn_blocking(move || {
        run_editor(&editor, &path)?;
        File::open(&path).with_context(|| format!("cannot reopen {}", path.display()))
    })
    .await??;
    let spec = WriteSpec {
        reference: format!("edit-{}", args.digest),
        labels: label_flags(&args.labels),
        ..WriteSpec::default()
    };
    let written = content::write_blob(client, &spec, tokio::fs::File::from_std(edited)).await?;
    drop(temp);
    println!("{}", written.digest);
    Ok(())
}
