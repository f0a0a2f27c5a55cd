//! Attach (containerd `pkg/cri/server/container_attach.go`, `pkg/cri/io/container_io.go`
//! `Attach`): a client joins a running container's stdio as the shim keeps it. The log writer
//! reads the container's stdout and stderr FIFOs and hands every chunk to the
//! [`OutputFanout`] too, so each attacher gets the output from the moment it attached. stdin
//! goes into the container's stdin FIFO (there when the config has `stdin`), shared by the
//! attachers; with `stdin_once` (and no terminal) the first attacher whose stdin ends closes
//! the container's stdin for good. Resizes go to the task's pty.
//!
//! An attach ends when the container's output ends (it exited), when a write to the client
//! fails (it went away), or, without `stdin_once`, when the client's stdin ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use crate::error::{CriError, Result};
use crate::logs::Stream;
use crate::service::Cri;
use crate::streaming::{ClientReader, ClientWriter, StdioStreams, TermSize};

/// Chunks an attacher may have queued before the container's output waits for it.
const QUEUE: usize = 64;

/// How long the container's output waits for one attacher to take a chunk; one slower than
/// that is dropped (its attach ends), so a stuck client cannot hold the container's log.
const SEND_WAIT: Duration = if cfg!(test) {
    Duration::from_millis(200)
} else {
    Duration::from_secs(10)
};

/// How long an attach waits for the output to end once the container stopped.
const OUTPUT_DRAIN: Duration = Duration::from_secs(6);

/// One chunk of a container's output, shared by every attacher.
pub type Chunk = Arc<[u8]>;

#[derive(Debug, Default)]
struct Listeners {
    senders: Vec<mpsc::Sender<Chunk>>,
    /// The stream ended: later subscribers get an ended receiver.
    closed: bool,
}

/// The attachers of one task's output (containerd's `WriterGroup`s) and the state of the
/// container's stdin shared by them.
#[derive(Debug, Default)]
pub struct OutputFanout {
    stdout: Mutex<Listeners>,
    stderr: Mutex<Listeners>,
    stdin_closed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl OutputFanout {
    fn listeners(&self, stream: Stream) -> &Mutex<Listeners> {
        match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        }
    }

    /// A receiver of `stream`'s output from now on; it ends with the stream (or at once when
    /// the stream already ended).
    pub fn subscribe(&self, stream: Stream) -> mpsc::Receiver<Chunk> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut l = lock(self.listeners(stream));
        if !l.closed {
            l.senders.retain(|s| !s.is_closed());
            l.senders.push(tx);
        }
        rx
    }

    /// Whether anyone listens to `stream`.
    pub fn has_listeners(&self, stream: Stream) -> bool {
        lock(self.listeners(stream))
            .senders
            .iter()
            .any(|s| !s.is_closed())
    }

    /// Hands `data` to every attacher of `stream`, waiting (up to [`SEND_WAIT`] each) for
    /// room in their queues; gone or stuck attachers are dropped.
    pub async fn send(&self, stream: Stream, data: &[u8]) {
        let senders = {
            let l = lock(self.listeners(stream));
            if l.senders.is_empty() {
                return;
            }
            l.senders.clone()
        };
        let chunk: Chunk = Arc::from(data);
        let mut dropped = Vec::new();
        for s in &senders {
            match tokio::time::timeout(SEND_WAIT, s.send(chunk.clone())).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => dropped.push(s.clone()),
                Err(_) => {
                    tracing::warn!(
                        stream = stream.as_str(),
                        "attacher did not take the container's output in time; detached"
                    );
                    dropped.push(s.clone());
                }
            }
        }
        if !dropped.is_empty() {
            lock(self.listeners(stream))
                .senders
                .retain(|s| !dropped.iter().any(|d| d.same_channel(s)));
        }
    }

    /// Ends `stream` for every attacher (the container's output reached its end).
    pub fn close(&self, stream: Stream) {
        let mut l = lock(self.listeners(stream));
        l.closed = true;
        l.senders.clear();
    }

    /// Marks the container's stdin closed for good (`stdin_once`); true the first time.
    fn close_stdin(&self) -> bool {
        !self.stdin_closed.swap(true, Ordering::SeqCst)
    }

    /// Whether the container's stdin was closed by an attacher.
    pub fn stdin_closed(&self) -> bool {
        self.stdin_closed.load(Ordering::SeqCst)
    }
}

/// Copies `rx` to the client until the stream ends (Ok) or a write fails (Err).
async fn copy_out(mut rx: mpsc::Receiver<Chunk>, mut to: ClientWriter) -> std::io::Result<()> {
    while let Some(chunk) = rx.recv().await {
        to.write_all(&chunk).await?;
        to.flush().await?;
    }
    Ok(())
}

/// Copies the client's stdin into the container's stdin FIFO until it ends (Ok) or a read or
/// write fails (Err).
async fn copy_in(mut from: ClientReader, mut to: pipe::Sender) -> std::io::Result<()> {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
    }
}

/// Aborts tasks when dropped (the call ended or was dropped).
pub(crate) struct AbortOnDrop(pub(crate) Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// Waits for the stdin copy, when there is one.
async fn join_input(
    input: &mut Option<tokio::task::JoinHandle<std::io::Result<()>>>,
) -> Option<std::result::Result<std::io::Result<()>, tokio::task::JoinError>> {
    match input.as_mut() {
        Some(h) => Some(h.await),
        None => std::future::pending().await,
    }
}

/// Sends every resize to process `exec_id`'s pty until the channel ends.
pub(crate) async fn forward_resizes(
    task: Arc<berth_runtime::Task>,
    exec_id: String,
    mut resize: mpsc::Receiver<TermSize>,
) {
    while let Some(size) = resize.recv().await {
        if let Err(e) = task
            .resize_pty(&exec_id, u32::from(size.width), u32::from(size.height))
            .await
        {
            tracing::debug!(exec_id, error = %e, "resize pty");
        }
    }
}

/// Attach.
#[tracing::instrument(skip_all, fields(id = %container_id))]
pub async fn attach(cri: &Cri, container_id: &str, streams: StdioStreams) -> Result<()> {
    let (container, task) = super::running_task(cri, container_id)?;
    let id = container.id().to_owned();
    let logger = container.logger().ok_or_else(|| {
        CriError::FailedPrecondition(format!("container {id} has no output to attach to"))
    })?;
    let fanout = logger.fanout();
    let config = &container.meta.config;
    let StdioStreams {
        stdin,
        stdout,
        stderr,
        tty,
        resize,
    } = streams;

    let resizer = match resize {
        Some(rx) if config.tty => Some(tokio::spawn(forward_resizes(
            task.clone(),
            String::new(),
            rx,
        ))),
        _ => None,
    };

    let mut outputs = futures::stream::FuturesUnordered::new();
    if let Some(w) = stdout {
        outputs.push(tokio::spawn(copy_out(fanout.subscribe(Stream::Stdout), w)));
    }
    if let Some(w) = stderr.filter(|_| !config.tty) {
        outputs.push(tokio::spawn(copy_out(fanout.subscribe(Stream::Stderr), w)));
    }
    let stdin_once = config.stdin_once && !tty;
    let stdin_path = super::io::io_dir(&cri.state, &id).join("stdin");
    let writer = match stdin {
        Some(r) if config.stdin && !fanout.stdin_closed() => {
            // The shim reads the FIFO and berthd holds an end open, so this never waits.
            match pipe::OpenOptions::new().open_sender(&stdin_path) {
                Ok(w) => Some((r, w)),
                Err(e) => {
                    tracing::warn!(path = %stdin_path.display(), error = %e, "open container stdin");
                    None
                }
            }
        }
        _ => None,
    };
    // The copy closes a stdin_once container's stdin itself: it runs to the end of the
    // client's stdin even when this call is dropped.
    let mut input = writer.map(|(r, w)| {
        let (fanout, container, task) = (fanout.clone(), container.clone(), task.clone());
        tokio::spawn(async move {
            let copied = copy_in(r, w).await;
            if stdin_once && fanout.close_stdin() {
                container.close_stdin();
                if let Err(e) = task.close_io("", true).await {
                    tracing::warn!(error = %e, "close container stdin");
                }
            }
            copied
        })
    });
    let _abort = AbortOnDrop(
        outputs
            .iter()
            .map(tokio::task::JoinHandle::abort_handle)
            .chain(resizer.as_ref().map(tokio::task::JoinHandle::abort_handle))
            .collect(),
    );

    let stopped = container.wait_stopped();
    tokio::pin!(stopped);
    let mut stopped_done = false;
    let drain = tokio::time::sleep(Duration::MAX);
    tokio::pin!(drain);
    loop {
        tokio::select! {
            out = futures::StreamExt::next(&mut outputs), if !outputs.is_empty() => {
                match out {
                    // The output ended: the container exited.
                    Some(Ok(Ok(()))) => {}
                    // A write failed: the client went away.
                    _ => break,
                }
                if outputs.is_empty() {
                    break;
                }
            }
            done = join_input(&mut input), if input.is_some() => {
                input = None;
                if let Some(Ok(Err(e))) = &done {
                    tracing::debug!(error = %e, "attach stdin");
                }
                // With stdin_once the output flows until the container stops.
                if !stdin_once || outputs.is_empty() {
                    break;
                }
            }
            () = &mut stopped, if !stopped_done => {
                stopped_done = true;
                if outputs.is_empty() {
                    break;
                }
                // The output drains to its end (the log writer's own limit bounds it).
                drain.as_mut().reset(tokio::time::Instant::now() + OUTPUT_DRAIN);
            }
            () = &mut drain, if stopped_done => break,
            else => break,
        }
    }
    tracing::debug!("attach ended");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn attachers_get_output_from_when_they_attach_until_it_ends() {
        let fan = OutputFanout::default();
        fan.send(Stream::Stdout, b"before").await;
        let mut a = fan.subscribe(Stream::Stdout);
        fan.send(Stream::Stdout, b"one").await;
        let mut b = fan.subscribe(Stream::Stdout);
        let mut e = fan.subscribe(Stream::Stderr);
        fan.send(Stream::Stdout, b"two").await;
        fan.send(Stream::Stderr, b"err").await;
        fan.close(Stream::Stdout);
        assert_eq!(&*a.recv().await.unwrap(), b"one");
        assert_eq!(&*a.recv().await.unwrap(), b"two");
        assert!(a.recv().await.is_none());
        assert_eq!(&*b.recv().await.unwrap(), b"two");
        assert!(b.recv().await.is_none());
        assert_eq!(&*e.recv().await.unwrap(), b"err");
        // Late subscribers of an ended stream end at once.
        assert!(fan.subscribe(Stream::Stdout).recv().await.is_none());
        assert!(fan.has_listeners(Stream::Stderr));
    }

    #[tokio::test]
    async fn a_gone_attacher_is_dropped_and_others_keep_getting_output() {
        let fan = OutputFanout::default();
        let gone = fan.subscribe(Stream::Stdout);
        let mut kept = fan.subscribe(Stream::Stdout);
        drop(gone);
        fan.send(Stream::Stdout, b"x").await;
        assert_eq!(&*kept.recv().await.unwrap(), b"x");
        assert_eq!(lock(&fan.stdout).senders.len(), 1);
        drop(kept);
        assert!(!fan.has_listeners(Stream::Stdout));
    }

    #[tokio::test]
    async fn a_stuck_attacher_is_detached_after_the_send_wait() {
        let fan = OutputFanout::default();
        let mut stuck = fan.subscribe(Stream::Stdout);
        for _ in 0..QUEUE {
            fan.send(Stream::Stdout, b"x").await;
        }
        // The queue is full: the next send waits SEND_WAIT and detaches it.
        fan.send(Stream::Stdout, b"y").await;
        assert!(!fan.has_listeners(Stream::Stdout));
        let mut n = 0;
        while stuck.recv().await.is_some() {
            n += 1;
        }
        assert_eq!(n, QUEUE);
    }

    #[test]
    fn stdin_closes_once() {
        let fan = OutputFanout::default();
        assert!(!fan.stdin_closed());
        assert!(fan.close_stdin());
        assert!(!fan.close_stdin());
        assert!(fan.stdin_closed());
    }
}
